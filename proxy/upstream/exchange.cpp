#include "upstream/exchange.hpp"

#include "http/header_rules.hpp"
#include "ops/errors.hpp"
#include "ops/token_usage.hpp"
#include "upstream/response_head.hpp"
#include "upstream/retry_policy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <optional>
#include <random>

namespace coalescer::upstream {
using namespace std::string_view_literals;  // appends of literals without strlen()
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using ops::proxy_errc;
using clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
// A reused connection that closes before any answer is resent only this soon after the request
// went out (besides twice the path's round trip): the upstream's close crossed our request
// (an idle timeout), it cannot have started on it. Later, it may have done the work.
constexpr std::chrono::milliseconds resend_window{10};
constexpr std::chrono::milliseconds max_resend_window{500};

deadline earliest(deadline a, deadline b) {
    return std::min(a, b);
}

bool closed_by_peer(error_code ec) {
    return ec == beast_http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::ssl::error::stream_truncated;
}

// Maps a failed write or head read to what clients are told.
error_code head_error(error_code ec, deadline total) {
    if (ec.category() == ops::proxy_category()) {
        return ec;  // already judged (an unasked 101, a status out of range)
    }
    if (ec == beast::error::timeout) {
        return clock::now() >= total ? proxy_errc::upstream_total_timeout
                                     : proxy_errc::upstream_head_timeout;
    }
    if (closed_by_peer(ec)) {
        return proxy_errc::upstream_closed;
    }
    if (ec == beast_http::error::header_limit) {
        return proxy_errc::upstream_head_too_large;
    }
    if (ec == beast_http::error::multiple_content_length) {
        return proxy_errc::upstream_conflicting_framing;
    }
    const bool malformed =
        ec.category() == make_error_code(beast_http::error::header_limit).category();
    return malformed ? error_code(proxy_errc::upstream_protocol_error)
                     : error_code(proxy_errc::upstream_closed);
}

// The path's smoothed round-trip time as the kernel measured it, if it can tell.
std::chrono::microseconds round_trip(int fd) noexcept {
    tcp_info info{};
    socklen_t size = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0) {
        return std::chrono::microseconds{0};
    }
    return std::chrono::microseconds{info.tcpi_rtt};
}

// One attempt's connection and parsed head.
struct attempt {
    error_code ec;
    std::unique_ptr<connection> conn;
    std::unique_ptr<response_parser> parser;  // parsers can't move
};

asio::awaitable<error_code> send_and_read_head(connection& conn, const upstream_request& request,
                                               std::unique_ptr<response_parser>& parser,
                                               const client& context, deadline total,
                                               clock::time_point& sent_at) {
    const auto& up = context.upstream;
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(request.head),
                                                    asio::buffer(request.body)};
    error_code ec;
    const auto sent = conn.write_now(buffers, ec);
    if (!ec && sent != asio::buffer_size(buffers)) {
        ec = co_await conn.write_rest(buffers, sent,
                                      earliest(clock::now() + up.timeouts.head, total));
    }
    sent_at = clock::now();
    if (ec) {
        co_return ec;
    }
    for (;;) {
        parser = std::make_unique<response_parser>();
        parser->header_limit(static_cast<std::uint32_t>(context.max_head_bytes));
        parser->body_limit(boost::none);  // streams are never cut by a size limit (U-06)
        if (request.head_method) {
            parser->skip(true);
        }
        if (auto ec = co_await conn.read_header(*parser,
                                                earliest(clock::now() + up.timeouts.head, total))) {
            co_return ec;
        }
        const unsigned status = parser->status();
        if (status < 100 || status > 599) {
            co_return proxy_errc::upstream_bad_status;
        }
        if (status == 101) {
            co_return proxy_errc::upstream_unexpected_upgrade;  // nobody asked to switch
        }
        if (status >= 200) {
            co_return error_code{};
        }
        // An interim 1xx (100, 103) is consumed: the real head follows.
    }
}

// Whether a reused connection that closed before any answer may carry the request again: only
// when the close came too soon after the request for the upstream to have started on it.
bool may_resend(connection& conn, clock::time_point sent_at) {
    const auto window = std::min<clock::duration>(
        resend_window + 2 * round_trip(conn.native_handle()), max_resend_window);
    return clock::now() - sent_at <= window;
}

// Connects (or reuses a pooled connection), sends the request and reads the head. A pooled
// connection the upstream closed just as we reused it fails before any response byte; when
// that happens within the resend window the request could not have been processed, so it is
// sent once more on a new connection (and counted). A request the upstream held longer is
// never sent twice: its clients get the 502.
asio::awaitable<attempt> try_once(const upstream_request& request, client& context, deadline total,
                                  const std::shared_ptr<exchange_cancel>& cancel) {
    const auto& up = context.upstream;
    const auto executor = co_await asio::this_coro::executor;
    attempt a;
    for (int round = 0; round < 2; ++round) {
        a.conn = round == 0 ? context.connections.take(request.tenant) : nullptr;
        if (!a.conn) {
            // Room for a whole head and one receive (connection.cpp reads at most 64 KiB).
            a.conn = std::make_unique<connection>(executor, context.deadlines,
                                                  context.max_head_bytes + 64 * 1024);
            a.conn->tenant = request.tenant;
            cancel->current = a.conn.get();
            a.ec = co_await a.conn->connect(up, context.tls,
                                            earliest(clock::now() + up.timeouts.connect, total));
            if (a.ec) {
                break;
            }
        }
        cancel->current = a.conn.get();
        clock::time_point sent_at;
        const auto ec =
            co_await send_and_read_head(*a.conn, request, a.parser, context, total, sent_at);
        if (ec && a.conn->reused && closed_by_peer(ec) && !cancel->cancelled &&
            may_resend(*a.conn, sent_at)) {
            context.metrics.upstream_resend(context.upstream_index);
            continue;
        }
        a.ec = ec ? head_error(ec, total) : error_code{};
        break;
    }
    cancel->current = nullptr;
    if (cancel->cancelled) {
        a.ec = proxy_errc::flight_cancelled;
    }
    co_return a;
}

// How long to wait before the next attempt after a 429/503, or nullopt when the answer goes
// to the clients as it is (no retries left, or a hint longer than max_delay).
std::optional<std::chrono::milliseconds> retry_delay(const response_parser& parser,
                                                     const ops::retry_config& cfg,
                                                     int attempt_number, double unit) {
    if (!retryable_status(parser.status()) || attempt_number >= cfg.max_attempts) {
        return std::nullopt;
    }
    const auto value = [](const std::string_view* v) { return v ? *v : std::string_view{}; };
    const auto hint = retry_hint(value(parser.find("retry-after-ms")),
                                 value(parser.find(beast_http::field::retry_after)),
                                 std::chrono::system_clock::now());
    if (hint && *hint > cfg.max_delay) {
        return std::nullopt;
    }
    return hint ? *hint : backoff(cfg, attempt_number, unit);
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds delay,
                                const std::shared_ptr<exchange_cancel>& cancel) {
    asio::steady_timer timer(co_await asio::this_coro::executor, delay);
    cancel->sleeping = &timer;
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    cancel->sleeping = nullptr;
}

double seconds_since(clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
}

double jitter_unit() {
    thread_local std::minstd_rand engine{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

}  // namespace

void exchange_cancel::cancel() noexcept {
    cancelled = true;
    if (current != nullptr)
        current->close();
    if (sleeping != nullptr)
        sleeping->cancel();
}

asio::awaitable<response_start> open_response(const upstream_request& request, client& context,
                                              deadline total,
                                              std::shared_ptr<exchange_cancel> cancel) {
    const auto& up = context.upstream;
    response_start out;
    for (int number = 1;; ++number) {
        const auto queued_at = clock::now();
        const bool at_once = context.admission.try_acquire();
        const bool admitted =
            at_once || co_await context.admission.acquire(queued_at + up.queue_timeout,
                                                          context.worker, context.deadlines);
        context.metrics.pacer_wait(context.upstream_index,
                                   at_once ? 0.0 : seconds_since(queued_at));
        if (!admitted) {
            out.ec = proxy_errc::queue_timeout;
            co_return out;
        }
        pacer_slot slot(context.admission, context.worker);
        if (cancel->cancelled) {
            out.ec = proxy_errc::flight_cancelled;
            co_return out;
        }
        out.sent_at = at_once ? queued_at : clock::now();  // no clock read when nothing waited
        out.attempts = number;
        attempt a = co_await try_once(request, context, total, cancel);
        context.metrics.upstream_call(context.upstream_index, a.ec ? 0 : a.parser->status());
        out.ttfb = seconds_since(out.sent_at);
        std::optional<std::chrono::milliseconds> delay;
        if (a.ec && retryable_failure(a.ec) && number < up.retries.max_attempts) {
            delay = backoff(up.retries, number, jitter_unit());
        } else if (!a.ec) {
            delay = retry_delay(*a.parser, up.retries, number, jitter_unit());
        }
        if (delay && clock::now() + *delay < total) {
            // The clients never see this attempt: they wait on for the next one.
            a.conn.reset();
            slot.reset();
            context.metrics.upstream_retry(context.upstream_index);
            co_await sleep_for(*delay, cancel);
            continue;
        }
        out.ec =
            a.ec ? a.ec : read_head(*a.parser, request.head_method, out.head, out.content_type);
        note_protocol_error(context, out.ec);
        out.head_method = request.head_method;
        if (!out.ec) {
            out.conn = std::move(a.conn);
            out.parser = std::move(a.parser);
            out.slot = std::move(slot);
        }
        co_return out;
    }
}

std::size_t parse_buffered_piece(response_start& response, std::span<char> buffer, error_code& ec) {
    auto& parser = *response.parser;
    parser.body_into(buffer);
    response.conn->parse_buffered(parser, ec);
    if (ec == beast_http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        ec = proxy_errc::upstream_bad_body;
    }
    return parser.body_taken();
}

asio::awaitable<error_code> read_body_piece(response_start& response, std::span<char> buffer,
                                            std::size_t& got, const ops::upstream_config& up,
                                            deadline total, exchange_cancel& cancel) {
    auto& parser = *response.parser;
    parser.body_into(buffer);
    error_code ec;
    if (!response.conn->parse_buffered(parser, ec)) {
        cancel.current = response.conn.get();
        ec = co_await response.conn->read_some(parser,
                                               earliest(clock::now() + up.timeouts.idle, total));
        cancel.current = nullptr;
    }
    got = parser.body_taken();
    if (ec == beast_http::error::need_buffer) {
        ec = {};
    }
    if (cancel.cancelled) {
        co_return proxy_errc::flight_cancelled;
    }
    if (ec == beast::error::timeout) {
        co_return clock::now() >= total ? proxy_errc::upstream_total_timeout
                                        : proxy_errc::upstream_idle_timeout;
    }
    if (ec) {
        co_return closed_by_peer(ec) ? proxy_errc::upstream_closed : proxy_errc::upstream_bad_body;
    }
    co_return error_code{};
}

void note_protocol_error(client& context, error_code ec) {
    if (const auto fault = ops::protocol_fault_of(ec)) {
        context.metrics.upstream_protocol_error(context.upstream_index, *fault);
    }
}

void release_connection(response_start& response, client& context) {
    if (!response.conn || !response.parser) {
        return;
    }
    switch (reuse_after(*response.parser, response.head_method, response.conn->buffered())) {
        case reuse::yes:
            context.connections.give_back(std::move(response.conn));
            return;
        case reuse::out_of_step:
            context.metrics.upstream_protocol_error(context.upstream_index,
                                                    ops::protocol_fault::trailing_bytes);
            break;
        case reuse::closes:
            break;
    }
    response.conn->close();
}

std::optional<ops::token_usage> count_tokens(client& context, std::string_view content_type,
                                             std::span<const std::string_view> body) {
    auto usage = ops::extract_usage(content_type, body);
    if (usage) {
        context.usage.spent(context.upstream_index, *usage);
    }
    return usage;
}

}  // namespace coalescer::upstream
