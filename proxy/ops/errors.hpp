// Errors the sidecar produces itself, as an error_category of our own, and the one place that
// maps each to the local reply a client sees (status, JSON body) and to a metrics label.
#pragma once

#include <boost/system/error_code.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace coalescer::ops {

enum class proxy_errc {
    // Downstream: the client's request.
    bad_request = 1,        // 400, close
    ambiguous_credentials,  // 400: two credentials that disagree
    header_timeout,         // 408
    body_timeout,           // 408
    body_too_large,         // 413
    uri_too_long,           // 414
    headers_too_large,      // 431
    framing_too_long,       // 400: a chunk-size line or the trailer section past max_header_bytes
    unsupported_coding,     // 501
    unsupported_version,    // 505
    method_not_allowed,     // 405 (CONNECT)
    expectation_failed,     // 417
    no_route,               // 404
    // Upstream side.
    upstream_connect_failed,   // 502
    upstream_tls_failed,       // 502
    upstream_connect_timeout,  // 504
    upstream_head_timeout,     // 504
    upstream_idle_timeout,     // 504 before the head; a cut stream after
    upstream_total_timeout,    // 504
    upstream_protocol_error,   // 502
    upstream_closed,           // 502: closed before a complete head
    upstream_resolve_failed,   // 502
    // The coalescing layer.
    flight_full,       // 503 + Retry-After: max_subscribers_per_flight reached
    queue_timeout,     // 503 + Retry-After
    flight_cancelled,  // 502: the flight was cancelled (orphan: cancel, shutdown)
    shutting_down,     // 503
    // More upstream protocol errors: each a 502 upstream_protocol_error to clients, told apart
    // in the metrics and the access log (protocol_fault).
    upstream_head_too_large,       // response head past max_header_bytes
    upstream_bad_status,           // a status outside 100–599
    upstream_unexpected_upgrade,   // 101 Switching Protocols, never asked for
    upstream_transfer_coding,      // a transfer coding other than chunked alone
    upstream_conflicting_framing,  // Content-Length with Transfer-Encoding, or two lengths
    upstream_bad_body,             // the body's framing broke after the head
    fleet_budget_exhausted,        // 503 + Retry-After from the budget: fleet_limits reached
};

// How an upstream broke HTTP: coalescer_upstream_protocol_errors_total{kind} and the access
// log's error_detail. `trailing_bytes` is no error for the answer it follows (clients got it
// whole), only for the connection, which is closed instead of reused.
enum class protocol_fault {
    malformed,
    head_too_large,
    bad_status,
    unexpected_upgrade,
    transfer_coding,
    conflicting_framing,
    bad_body,
    trailing_bytes,
};
inline constexpr std::size_t protocol_fault_count = 8;
std::string_view to_string(protocol_fault f) noexcept;
// The fault an upstream protocol error code stands for, if it is one.
std::optional<protocol_fault> protocol_fault_of(boost::system::error_code ec) noexcept;

const boost::system::error_category& proxy_category() noexcept;

inline boost::system::error_code make_error_code(proxy_errc e) noexcept {
    return {static_cast<int>(e), proxy_category()};
}

// What a client is told when the sidecar answers by itself.
struct local_reply {
    unsigned status;
    std::string_view code;         // machine-readable, also the metrics/log label
    bool close_connection;         // framing errors: the connection can't be trusted any more
    unsigned retry_after_seconds;  // 0 = no Retry-After header
};

local_reply reply_for(boost::system::error_code ec) noexcept;

// {"error":{"message":…,"type":"coalescer_error","code":…}} — the provider error shape SDKs
// display.
std::string error_body(std::string_view message, std::string_view code);

// The size of the content in a complete response text (what follows its blank line).
std::size_t content_size(std::string_view response) noexcept;

// The complete HTTP/1.1 response for a local error, ready to write. The answer to a HEAD
// request has the same head and no content (RFC 9110 §9.3.2).
// `retry_after_seconds`, when not 0, replaces the error's usual Retry-After.
std::string error_response(boost::system::error_code ec, bool keep_alive, bool head_request = false,
                           unsigned retry_after_seconds = 0);

}  // namespace coalescer::ops

template <>
struct boost::system::is_error_code_enum<coalescer::ops::proxy_errc> : std::true_type {};
