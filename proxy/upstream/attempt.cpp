#include "upstream/attempt.hpp"

#include "ops/errors.hpp"

#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>

namespace coalescer::upstream {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using ops::proxy_errc;
using clock = std::chrono::steady_clock;

namespace {

// A reused connection that closes before any answer is resent only this soon after the request
// went out (besides twice the path's round trip): the upstream's close crossed our request
// (an idle timeout), it cannot have started on it. Later, it may have done the work.
constexpr std::chrono::milliseconds resend_window{10};
constexpr std::chrono::milliseconds max_resend_window{500};

deadline earliest(deadline a, deadline b) {
    return std::min(a, b);
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

}  // namespace

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

}  // namespace coalescer::upstream
