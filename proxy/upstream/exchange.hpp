// One upstream exchange, as a plain HTTP/1.1 client: admission by the pacer, a pooled or new
// connection, the request sent, retries where the provider cannot have done the work, the
// answer's head, then its body piece by piece. What feeds a flight is coalesce/fetch.hpp.
#pragma once

#include "http/response_head.hpp"
#include "ops/config.hpp"
#include "upstream/client.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <memory>
#include <span>
#include <string>

namespace coalescer::upstream {

struct upstream_request {
    std::string head;          // serialized request line and headers, ending in CRLF CRLF
    std::string body;          // the client's bytes, unchanged
    bool head_method = false;  // HEAD: the response has no body whatever its headers say
    std::uint64_t tenant = 0;  // the credentials' partition: connections never cross it
};

// Lets whoever waits on an exchange stop it. Touched only on the exchange's executor.
struct exchange_cancel {
    bool cancelled = false;
    connection* current = nullptr;
    boost::asio::steady_timer* sleeping = nullptr;
    // Closes the connection in use and wakes a retry sleep: the exchange ends at its next step.
    void cancel() noexcept;
};

// An upstream response whose head arrived, after admission and retries. The connection and the
// pacer slot stay held while the caller reads the body.
struct response_start {
    boost::system::error_code ec;  // a proxy_errc: no head for the clients
    std::unique_ptr<connection> conn;
    std::unique_ptr<response_parser> parser;
    pacer_slot slot;
    budget_lease budget;  // settled with the answer's usage by the caller
    http::response_head head;
    std::string_view content_type;                  // views the parser's fields
    std::chrono::steady_clock::time_point sent_at;  // of the attempt that answered
    double ttfb = 0;                                // seconds, that attempt's
    int attempts = 0;
    bool head_method = false;          // the request was HEAD
    unsigned retry_after_seconds = 0;  // with fleet_budget_exhausted: when the budget allows
};

// Waits for a pacer slot, then tries until a head worth relaying arrives: retries before the
// head where the provider cannot have done the work, and 429/503 within the retry budget.
boost::asio::awaitable<response_start> open_response(const upstream_request& request,
                                                     client& context, deadline total,
                                                     std::shared_ptr<exchange_cancel> cancel);

// Parses body bytes that came with the head into `buffer`, without I/O; returns how many.
std::size_t parse_buffered_piece(response_start& response, std::span<char> buffer,
                                 boost::system::error_code& ec);

// Reads the next piece of the body into `buffer`; `got` says how much arrived.
boost::asio::awaitable<boost::system::error_code> read_body_piece(
    response_start& response, std::span<char> buffer, std::size_t& got,
    const ops::upstream_config& upstream, deadline total, exchange_cancel& cancel);

// After the answer was read whole: the connection goes back to the pool when reuse_after says
// so; otherwise it is closed (counted as trailing_bytes when out of step).
void release_connection(response_start& response, client& context);

// Counts an upstream protocol error by kind (no-op for other errors).
void note_protocol_error(client& context, boost::system::error_code ec);

// Counts the provider's billed tokens of a complete answer (from its own `usage`; the model
// from the request when the answer names none) as spent, and returns them so followers can be
// credited with what they saved. A 2xx JSON or SSE answer without usage is counted as missing:
// `absent`, or `too_large` when `body` is empty because it could not be kept for reading.
std::optional<ops::token_usage> count_tokens(client& context, const response_start& response,
                                             std::span<const std::string_view> body,
                                             std::string_view request_body);
// A 2xx JSON or SSE answer that ended early (broken off, or cancelled): its usage is missing.
void note_usage_cut(client& context, const response_start& response);

}  // namespace coalescer::upstream
