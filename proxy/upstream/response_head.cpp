#include "upstream/response_head.hpp"

#include "http/header_policy.hpp"
#include "http/header_rules.hpp"
#include "ops/errors.hpp"

#include <optional>

namespace coalescer::upstream {
using namespace std::string_view_literals;  // appends of literals without strlen()
using boost::system::error_code;
using field_code = boost::beast::http::field;
using ops::proxy_errc;

error_code read_head(const response_parser& parser, bool head_method, http::response_head& out,
                     std::string_view& content_type) {
    // One pass by field code for what decides the rest (each lookup by name is a search).
    int te_lines = 0;
    bool te_chunked = false;
    bool has_cl = false;
    std::optional<std::string_view> type;
    std::size_t text_size = 0;
    for (const auto& field : parser.fields()) {
        switch (field.name) {
            case field_code::transfer_encoding:
                ++te_lines;
                te_chunked = http::iequals(http::trim(field.value), "chunked");
                break;
            case field_code::content_length:
                has_cl = true;
                break;
            case field_code::content_type:
                if (!type)
                    type = field.value;
                break;
            default:
                break;
        }
        text_size += field.name_text.size() + field.value.size() + 4;
    }
    if (te_lines != 0 && has_cl) {
        return proxy_errc::upstream_conflicting_framing;
    }
    // The sidecar asked for identity and decodes no transfer coding but chunked: relaying
    // `gzip, chunked` as plain bytes would hand clients a body nobody can read.
    if (te_lines > 1 || (te_lines == 1 && !te_chunked)) {
        return proxy_errc::upstream_transfer_coding;
    }
    content_type = type.value_or(std::string_view{});
    out.status = parser.status();
    out.reason = std::string(parser.reason());
    out.fields.reserve(text_size);
    const http::connection_tokens connection(parser.fields());
    for (const auto& field : parser.fields()) {
        if (!http::relayed_to_clients(field, connection)) {
            continue;
        }
        out.no_store = out.no_store || http::forbids_sharing(field);
        out.has_age = out.has_age || field.name == field_code::age;
        out.fields.append(field.name_text.data(), field.name_text.size());
        out.fields += ": "sv;
        out.fields.append(field.value.data(), field.value.size());
        out.fields += "\r\n"sv;
    }
    const unsigned s = out.status;
    out.has_body = !head_method && !(s / 100 == 1 || s == 204 || s == 304);
    if (has_cl && (out.has_body || head_method)) {
        out.content_length = parser.content_length().value_or(0);
    }
    return {};
}

}  // namespace coalescer::upstream
