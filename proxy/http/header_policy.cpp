#include "http/header_policy.hpp"

#include "http/header_rules.hpp"

namespace coalescer::http {
namespace field_names = boost::beast::http;
using field_code = boost::beast::http::field;

namespace {

// A directive in a list (Cache-Control, Connection), arguments (private="x") ignored.
bool lists(std::string_view list, std::string_view token) noexcept {
    bool found = false;
    for_each_list_item(list, [&](std::string_view item) {
        found = found || iequals(trim(item.substr(0, item.find('='))), token);
    });
    return found;
}

}  // namespace

connection_tokens::connection_tokens(std::span<const header_field> fields) noexcept
    : fields_(fields) {
    for (const auto& field : fields) {
        if (field.name == field_code::connection) {
            for_each_list_item(field.value, [&](std::string_view t) {
                others_ = others_ || !(iequals(t, "keep-alive") || iequals(t, "close"));
            });
        }
    }
}

bool connection_tokens::names(std::string_view field_name) const noexcept {
    if (!others_) {
        return false;
    }
    for (const auto& field : fields_) {
        if (field.name == field_code::connection && lists(field.value, field_name)) {
            return true;
        }
    }
    return false;
}

bool forwarded_upstream(const header_field& field, const connection_tokens& connection,
                        std::string_view bypass_header) noexcept {
    switch (field.name) {
        case field_code::host:
        case field_code::content_length:
        case field_code::accept_encoding:
        case field_code::expect:
            return false;
        default:
            break;
    }
    return !is_hop_by_hop(field.name) && !iequals(field.name_text, bypass_header) &&
           !connection.names(field.name_text);
}

bool relayed_to_clients(const header_field& field, const connection_tokens& connection) noexcept {
    return !is_hop_by_hop(field.name) && field.name != field_code::content_length &&
           !connection.names(field.name_text);
}

bool forbids_sharing(const header_field& field) noexcept {
    if (field.name == field_code::set_cookie) {
        return true;
    }
    return field.name == field_code::cache_control &&
           (lists(field.value, "no-store") || lists(field.value, "private"));
}

bool asks_not_to_share(std::span<const header_field> fields,
                       std::string_view bypass_header) noexcept {
    for (const auto& field : fields) {
        if (iequals(field.name_text, bypass_header)) {
            const auto v = trim(field.value);
            if (v != "0" && !iequals(v, "false")) {
                return true;
            }
        }
        if (field.name == field_code::cache_control &&
            (lists(field.value, "no-cache") || lists(field.value, "no-store"))) {
            return true;
        }
    }
    return false;
}

}  // namespace coalescer::http
