#include "http/head_writer.hpp"

#include "http/header_rules.hpp"

#include <boost/beast/http/status.hpp>

#include <charconv>

namespace coalescer::http {
using namespace std::string_view_literals;  // appends of literals without strlen()
namespace beast_http = boost::beast::http;

namespace {

void append_number(std::string& out, std::uint64_t n) {
    char digits[24];
    const auto end = std::to_chars(std::begin(digits), std::end(digits), n).ptr;
    out.append(digits, end);
}

// Upstream's Age lines are dropped from a hit's head, which carries its own.
void append_without_age(std::string& out, std::string_view fields) {
    while (!fields.empty()) {
        const auto end = fields.find("\r\n");
        const auto line = fields.substr(0, end == std::string_view::npos ? fields.size() : end + 2);
        if (!iequals(line.substr(0, line.find(':')), "age")) {
            out += line;
        }
        fields.remove_prefix(line.size());
    }
}

}  // namespace

response_framing framing_for(const response_head& head, bool client_http11, bool keep_alive) {
    response_framing f;
    f.chunked = head.has_body && !head.content_length && client_http11;
    // HTTP/1.0 clients can't take chunked: their body ends at the close.
    f.keep_alive = keep_alive && !(head.has_body && !head.content_length && !f.chunked);
    return f;
}

std::string serialize_head(const response_head& head, std::string_view role,
                           std::string_view flight_id, std::optional<std::chrono::seconds> age,
                           const response_framing& framing) {
    std::string out;
    out.reserve(256 + head.fields.size());
    out += "HTTP/1.1 "sv;
    append_number(out, head.status);
    out += ' ';
    if (!head.reason.empty() && is_safe_value(head.reason)) {
        out += head.reason;
    } else {
        out += beast_http::obsolete_reason(static_cast<beast_http::status>(head.status));
    }
    out += "\r\n"sv;
    if (age && head.has_age) {
        append_without_age(out, head.fields);
    } else {
        out += head.fields;
    }
    out += "x-coalesce: "sv;
    out += role;
    out += "\r\nx-coalesce-flight: "sv;
    out += flight_id;
    out += "\r\n"sv;
    if (age) {
        out += "Age: "sv;
        append_number(out, static_cast<std::uint64_t>(std::max<std::int64_t>(0, age->count())));
        out += "\r\n"sv;
    }
    if (head.content_length) {
        out += "Content-Length: "sv;
        append_number(out, *head.content_length);
        out += "\r\n"sv;
    } else if (framing.chunked) {
        out += "Transfer-Encoding: chunked\r\n"sv;
    }
    if (!framing.keep_alive) {
        out += "Connection: close\r\n"sv;
    }
    out += "\r\n"sv;
    return out;
}

}  // namespace coalescer::http
