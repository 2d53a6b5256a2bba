#include "ops/errors.hpp"

#include <boost/beast/http/status.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <array>

namespace coalescer::ops {
namespace {

struct errc_info {
    const char* message;
    local_reply reply;
};

// Indexed by proxy_errc.
constexpr std::array<errc_info, 34> table{{
    {"unknown error", {500, "internal_error", true, 0}},
    {"malformed HTTP request", {400, "bad_request", true, 0}},
    {"request carries more than one credential", {400, "ambiguous_credentials", true, 0}},
    {"request headers not received in time", {408, "header_timeout", true, 0}},
    {"request body not received in time", {408, "body_timeout", true, 0}},
    {"request body exceeds the configured limit", {413, "body_too_large", true, 0}},
    {"request line too long", {414, "uri_too_long", true, 0}},
    {"request headers exceed the configured limit", {431, "headers_too_large", true, 0}},
    {"chunked framing line exceeds the configured limit", {400, "framing_too_long", true, 0}},
    {"transfer coding not supported", {501, "unsupported_transfer_coding", true, 0}},
    {"HTTP version not supported", {505, "unsupported_http_version", true, 0}},
    {"method not allowed", {405, "method_not_allowed", true, 0}},
    {"expectation not supported", {417, "expectation_failed", true, 0}},
    {"no route for this path", {404, "no_route", false, 0}},
    {"could not connect to the upstream", {502, "upstream_connect_failed", false, 0}},
    {"TLS handshake with the upstream failed", {502, "upstream_tls_failed", false, 0}},
    {"connecting to the upstream timed out", {504, "upstream_connect_timeout", false, 0}},
    {"the upstream did not answer in time", {504, "upstream_head_timeout", false, 0}},
    {"the upstream stopped sending", {504, "upstream_idle_timeout", false, 0}},
    {"the upstream exchange took too long", {504, "upstream_total_timeout", false, 0}},
    {"the upstream sent a malformed response", {502, "upstream_protocol_error", false, 0}},
    {"the upstream closed the connection", {502, "upstream_closed", false, 0}},
    {"could not resolve the upstream host", {502, "upstream_resolve_failed", false, 0}},
    {"too many identical requests are waiting", {503, "flight_full", false, 1}},
    {"waited too long for an upstream slot", {503, "queue_timeout", false, 1}},
    {"the upstream call was cancelled", {502, "flight_cancelled", false, 0}},
    {"the sidecar is shutting down", {503, "shutting_down", true, 1}},
    {"the upstream sent a response head past the size limit",
     {502, "upstream_protocol_error", false, 0}},
    {"the upstream sent an invalid status code", {502, "upstream_protocol_error", false, 0}},
    {"the upstream switched protocols unasked", {502, "upstream_protocol_error", false, 0}},
    {"the upstream used a transfer coding other than chunked",
     {502, "upstream_protocol_error", false, 0}},
    {"the upstream sent conflicting message framing", {502, "upstream_protocol_error", false, 0}},
    {"the upstream sent a malformed body", {502, "upstream_protocol_error", false, 0}},
    {"the upstream's fleet budget is used up", {503, "fleet_budget_exhausted", false, 1}},
}};

const errc_info& info(int value) noexcept {
    if (value <= 0 || value >= static_cast<int>(table.size())) {
        return table[0];
    }
    return table[static_cast<std::size_t>(value)];
}

class category final : public boost::system::error_category {
  public:
    const char* name() const noexcept override { return "coalescer"; }
    std::string message(int value) const override { return info(value).message; }
};

}  // namespace

const boost::system::error_category& proxy_category() noexcept {
    static const category instance;
    return instance;
}

local_reply reply_for(boost::system::error_code ec) noexcept {
    if (ec.category() == proxy_category()) {
        return info(ec.value()).reply;
    }
    return table[0].reply;
}

std::string_view to_string(protocol_fault f) noexcept {
    static constexpr std::array<std::string_view, protocol_fault_count> names{
        "malformed",       "head_too_large",      "bad_status", "unexpected_101",
        "transfer_coding", "conflicting_framing", "bad_body",   "trailing_bytes"};
    return names[static_cast<std::size_t>(f)];
}

std::optional<protocol_fault> protocol_fault_of(boost::system::error_code ec) noexcept {
    if (ec.category() != proxy_category()) {
        return std::nullopt;
    }
    switch (static_cast<proxy_errc>(ec.value())) {
        case proxy_errc::upstream_protocol_error:
            return protocol_fault::malformed;
        case proxy_errc::upstream_head_too_large:
            return protocol_fault::head_too_large;
        case proxy_errc::upstream_bad_status:
            return protocol_fault::bad_status;
        case proxy_errc::upstream_unexpected_upgrade:
            return protocol_fault::unexpected_upgrade;
        case proxy_errc::upstream_transfer_coding:
            return protocol_fault::transfer_coding;
        case proxy_errc::upstream_conflicting_framing:
            return protocol_fault::conflicting_framing;
        case proxy_errc::upstream_bad_body:
            return protocol_fault::bad_body;
        default:
            return std::nullopt;
    }
}

std::string error_body(std::string_view message, std::string_view code) {
    std::string out = R"({"error":{"message":)";
    out += boost::json::serialize(boost::json::string(message));
    out += R"(,"type":"coalescer_error","code":)";
    out += boost::json::serialize(boost::json::string(code));
    out += "}}";
    return out;
}

std::size_t content_size(std::string_view response) noexcept {
    const auto end = response.find("\r\n\r\n");
    return end == std::string_view::npos ? 0 : response.size() - end - 4;
}

std::string error_response(boost::system::error_code ec, bool keep_alive, bool head_request,
                           unsigned retry_after_seconds) {
    local_reply reply = reply_for(ec);
    if (retry_after_seconds != 0) {
        reply.retry_after_seconds = retry_after_seconds;
    }
    const std::string body =
        error_body(ec.category() == proxy_category() ? info(ec.value()).message : "internal error",
                   reply.code);
    std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " ";
    out +=
        boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(reply.status));
    out += "\r\nContent-Type: application/json\r\nContent-Length: ";
    out += std::to_string(body.size());
    out += "\r\nx-coalesce-error: ";
    out += reply.code;
    if (reply.retry_after_seconds != 0) {
        out += "\r\nRetry-After: " + std::to_string(reply.retry_after_seconds);
    }
    out += (keep_alive && !reply.close_connection) ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    if (!head_request) {
        out += body;
    }
    return out;
}

}  // namespace coalescer::ops
