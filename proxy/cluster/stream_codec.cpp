#include "cluster/stream_codec.hpp"

#include "ops/errors.hpp"

#include <charconv>

namespace coalescer::cluster {
namespace {

// The next line of `text` (without its '\n'), or nullopt when none is left.
std::optional<std::string_view> take_line(std::string_view& text) {
    const auto end = text.find('\n');
    if (end == std::string_view::npos)
        return std::nullopt;
    const auto line = text.substr(0, end);
    text.remove_prefix(end + 1);
    return line;
}

template <class T>
bool parse_number(std::string_view text, T& out) {
    const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && p == text.data() + text.size();
}

}  // namespace

std::string encode_head(const http::response_head& head, std::string_view trace_id) {
    std::string out = "1\n";  // the format's version
    out += std::to_string(head.status);
    out += '\n';
    out += head.reason;
    out += '\n';
    out += head.has_age ? '1' : '0';
    out += head.no_store ? '1' : '0';
    out += head.has_body ? '1' : '0';
    if (!trace_id.empty()) {
        out += ' ';
        out += trace_id;
    }
    out += '\n';
    out += head.content_length ? std::to_string(*head.content_length) : "-";
    out += '\n';
    out += head.fields;
    return out;
}

std::optional<http::response_head> decode_head(std::string_view text, std::string* trace_id) {
    const auto version = take_line(text);
    const auto status = take_line(text);
    const auto reason = take_line(text);
    const auto flags = take_line(text);
    const auto length = take_line(text);
    if (!length || *version != "1" || flags->size() < 3 ||
        (flags->size() > 3 && (*flags)[3] != ' '))
        return std::nullopt;
    if (trace_id != nullptr)
        *trace_id = std::string(flags->substr(std::min<std::size_t>(flags->size(), 4)));
    http::response_head head;
    if (!parse_number(*status, head.status) || head.status < 100 || head.status > 599)
        return std::nullopt;
    head.reason = std::string(*reason);
    head.has_age = (*flags)[0] == '1';
    head.no_store = (*flags)[1] == '1';
    head.has_body = (*flags)[2] == '1';
    if (*length != "-") {
        std::uint64_t n = 0;
        if (!parse_number(*length, n))
            return std::nullopt;
        head.content_length = n;
    }
    head.fields = std::string(text);
    return head;
}

std::string encode_failure(boost::system::error_code ec) {
    if (ec.category() != ops::proxy_category())
        ec = ops::make_error_code(ops::proxy_errc::upstream_closed);
    return std::to_string(ec.value());
}

boost::system::error_code decode_failure(std::string_view text) {
    int value = 0;
    if (!parse_number(text, value) || value < 1 ||
        value > static_cast<int>(ops::proxy_errc::fleet_budget_exhausted))
        return ops::make_error_code(ops::proxy_errc::upstream_closed);
    return ops::make_error_code(static_cast<ops::proxy_errc>(value));
}

std::optional<entry_kind> kind_of(std::string_view k) {
    if (k.size() != 1)
        return std::nullopt;
    switch (k[0]) {
        case 'h':
            return entry_kind::head;
        case 'b':
            return entry_kind::body;
        case 'e':
            return entry_kind::end;
        case 'f':
            return entry_kind::failure;
        default:
            return std::nullopt;
    }
}

void pack_event(std::string& packed, entry_kind kind, std::string_view value) {
    packed += static_cast<char>(kind);
    packed += std::to_string(value.size());
    packed += ':';
    packed += value;
}

bool unpack_events(std::string_view packed, std::vector<packed_event>& out) {
    out.clear();
    while (!packed.empty()) {
        const auto kind = kind_of(packed.substr(0, 1));
        const auto colon = packed.find(':');
        std::size_t size = 0;
        if (!kind || colon == std::string_view::npos || colon < 2 ||
            !parse_number(packed.substr(1, colon - 1), size) || size > packed.size() - colon - 1)
            return false;
        out.push_back({*kind, packed.substr(colon + 1, size)});
        packed.remove_prefix(colon + 1 + size);
    }
    return !out.empty();
}

}  // namespace coalescer::cluster
