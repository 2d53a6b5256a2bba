#include "server/session.hpp"

#include "net/socket_read.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"
#include "server/forwarder.hpp"
#include "server/request_framing.hpp"
#include "server/request_validator.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <memory_resource>

namespace coalescer::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using ops::proxy_errc;
using clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t read_size = 16 * 1024;

// The client closed (or never started) cleanly: nothing to answer.
const error_code quiet_close = asio::error::eof;

std::string_view view(const beast::flat_buffer& b) {
    return {static_cast<const char*>(b.data().data()), b.size()};
}

// Registers a connection as idle (between requests) for as long as it waits for a first byte.
class idle_registration {
  public:
    idle_registration(worker& w, asio::ip::tcp::socket& s) : node_(s) { w.idle.push_back(node_); }

  private:
    idle_connection node_;  // unlinks itself
};

// Reads until the buffer holds a whole request head; returns its size in `head_size`.
// Waiting for the first byte is the keep-alive idle time; from the first byte on, the whole
// head must arrive within header_timeout (slowloris), and within max_header_bytes.
template <class Stream>
asio::awaitable<error_code> read_head(Stream& stream, net::socket_deadline& deadline,
                                      beast::flat_buffer& buffer, const ops::limits_config& limits,
                                      worker& self, const std::atomic<bool>& refusing,
                                      std::size_t& head_size) {
    auto& tcp = beast::get_lowest_layer(stream);
    if (buffer.size() == 0 && refusing.load(std::memory_order_relaxed)) {
        co_return quiet_close;
    }
    // A hang-up watch of the previous request may have left a peek queued on the socket; a
    // close would complete it and no edge would ever wake a read queued behind it.
    net::drop_stale_reads(tcp);
    std::optional<idle_registration> idle;
    if (buffer.size() == 0) {
        idle.emplace(self, tcp);
    }
    std::size_t scanned = 0;
    bool started = buffer.size() != 0;
    // Set at the first wait after the head's first bytes came (microseconds after them); a
    // head that arrives whole, the usual case, needs none.
    std::optional<clock::time_point> head_deadline;
    for (;;) {
        if (buffer.size() != 0) {
            if (const auto end = find_head_end(view(buffer), scanned)) {
                head_size = end;
                co_return end > limits.max_header_bytes ? error_code(proxy_errc::headers_too_large)
                                                        : error_code{};
            }
            scanned = buffer.size();
            if (buffer.size() > limits.max_header_bytes) {
                const bool line_done = view(buffer).find('\n') != std::string_view::npos;
                co_return line_done || buffer.size() <= max_request_line
                    ? proxy_errc::headers_too_large
                    : proxy_errc::uri_too_long;
            }
        }
        // The sweep cancels the read without closing the socket, so a 408 can still be sent.
        if (started && !head_deadline) {
            head_deadline = clock::now() + limits.header_timeout;
        }
        deadline.expires_at(started ? *head_deadline : clock::now() + limits.idle_timeout);
        const auto space = buffer.prepare(read_size);
        std::tuple<error_code, std::size_t> got;
        if constexpr (std::is_same_v<Stream, asio::ip::tcp::socket>) {
            auto attempt = net::read_attempt::now(stream, space);
            if (!attempt.done()) {
                const auto waited = co_await stream.async_read_some(space, use_tuple);
                attempt.waited(stream, waited);
            }
            got = attempt.result();
        } else {
            got = co_await stream.async_read_some(space, use_tuple);
        }
        auto [rec, n] = got;
        const auto ec = deadline.finish(rec);
        buffer.commit(n);
        if (ec) {
            if (ec == beast::error::timeout && started) {
                co_return proxy_errc::header_timeout;
            }
            co_return quiet_close;
        }
        if (!started) {
            started = true;
            idle.reset();
        }
    }
}

// Reads the body, bounded by body_framing (request_framing.hpp) in memory and length; each
// read waits at most header_timeout for a byte, the whole body at most idle_timeout.
template <class Stream>
asio::awaitable<error_code> read_body(Stream& stream, net::socket_deadline& deadline,
                                      beast::flat_buffer& buffer, request_parser& parser,
                                      const ops::limits_config& limits) {
    const auto whole_by = clock::now() + limits.idle_timeout;
    body_framing framing(limits);
    for (;;) {
        error_code ec;
        if (framing.feed(parser, buffer, ec)) {
            co_return error_code{};
        }
        if (ec) {
            co_return ec;
        }
        const auto want = std::min(read_size, framing.room(buffer));
        deadline.expires_at(std::min(whole_by, clock::now() + limits.header_timeout));
        auto [rec, n] = co_await stream.async_read_some(buffer.prepare(want), use_tuple);
        const auto fec = deadline.finish(rec);
        buffer.commit(n);
        if (fec == beast::error::timeout) {
            co_return proxy_errc::body_timeout;
        }
        if (fec == asio::error::eof) {
            // A half-close mid-body: the client may still read why nothing was forwarded.
            co_return proxy_errc::bad_request;
        }
        if (fec) {
            co_return quiet_close;  // the client is gone: nothing to answer or forward
        }
    }
}

// What the access log says of a request refused before it was parsed: its request line's
// method and target, as far as they can be made out.
struct request_line {
    std::string_view method;
    std::string_view target;
    bool head = false;
};

request_line first_line(std::string_view data) {
    constexpr std::size_t most = 256;  // a log line, not a copy of whatever was sent
    request_line r;
    const auto line = data.substr(0, std::min(data.find_first_of("\r\n"), most));
    const auto sp = line.find(' ');
    r.method = line.substr(0, std::min(sp, std::size_t{16}));
    if (sp != std::string_view::npos) {
        const auto rest = line.substr(sp + 1);
        r.target = rest.substr(0, rest.find(' '));
    }
    r.head = r.method == "HEAD";
    return r;
}

// After an error that ends the connection: stop sending, then read and drop what the client is
// still sending for a moment, so the kernel doesn't reset the connection before the client
// has read our answer (the "lingering close" of RFC 9112 §9.6).
template <class Stream>
asio::awaitable<void> linger_and_close(Stream& stream, net::socket_deadline& deadline) {
    auto& tcp = beast::get_lowest_layer(stream);
    error_code ignored;
    tcp.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    std::array<char, 4096> sink;
    std::size_t drained = 0;
    deadline.expires_after(std::chrono::seconds(2));
    while (drained < 1024 * 1024) {
        auto [ec, n] = co_await tcp.async_read_some(asio::buffer(sink), use_tuple);
        if (ec)
            break;
        drained += n;
    }
    tcp.close(ignored);
}

// Answers a request the session refuses, logs it, and closes the connection.
template <class Stream>
asio::awaitable<void> refuse(Stream& stream, net::socket_deadline& deadline, error_code ec,
                             const request_line& line, proxy_context& context,
                             clock::time_point started) {
    const auto text = ops::error_response(ec, false, line.head);
    deadline.expires_after(std::chrono::seconds(5));
    auto [wec, n] = co_await asio::async_write(stream, asio::buffer(text), use_tuple);
    deadline.clear();
    const auto reply = ops::reply_for(ec);
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - started).count();
    context.metrics.client_request(context.config->routes.size(), coalesce::role::pass,
                                   reply.status, ms / 1000, std::nullopt);
    context.log.request({.route = "none",
                         .method = line.method,
                         .target = line.target,
                         .status = reply.status,
                         .role = coalesce::role::pass,
                         .bytes_out = wec ? 0 : ops::content_size(text),
                         .duration_ms = ms,
                         .outcome = reply.code});
    co_await linger_and_close(stream, deadline);
}

// Parses and checks the head in `buffer` (its first `head_size` bytes, consumed on success).
error_code take_head(beast::flat_buffer& buffer, std::size_t head_size, request_parser& parser,
                     const ops::limits_config& limits, const coalesce::tenant_headers& tenants) {
    if (auto ec = check_raw_head(view(buffer).substr(0, head_size))) {
        return ec;
    }
    parser.header_limit(
        static_cast<std::uint32_t>(std::max<std::size_t>(limits.max_header_bytes, head_size)));
    parser.body_limit(limits.max_request_body);
    error_code pec;
    parser.put(asio::buffer(buffer.data().data(), head_size), pec);
    if (pec || !parser.is_header_done()) {
        return pec && pec != beast_http::error::need_more ? client_error_of(pec)
                                                          : error_code(proxy_errc::bad_request);
    }
    buffer.consume(head_size);
    auto& request = parser.get();
    if (auto ec = adopt_absolute_form(request)) {
        return ec;
    }
    if (auto ec = check_request(request, tenants)) {
        return ec;
    }
    if (declared_length(request).value_or(0) > limits.max_request_body) {
        return proxy_errc::body_too_large;  // refused before reading a byte of it
    }
    return {};
}

// RFC 9110 §10.1.1: an HTTP/1.1 client that asked may send its body once told to; an HTTP/1.0
// client can't have asked (and can't parse an interim answer).
template <class Stream>
asio::awaitable<error_code> continue_if_asked(Stream& stream, net::socket_deadline& deadline,
                                              const client_request& request,
                                              const ops::limits_config& limits) {
    if (request.version() < 11 || request.find(beast_http::field::expect) == nullptr) {
        co_return error_code{};
    }
    constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
    deadline.expires_after(limits.write_timeout);
    auto [wec, n] = co_await asio::async_write(stream, asio::buffer(go_on), use_tuple);
    deadline.clear();
    co_return wec;
}

}  // namespace

template <class Stream>
asio::awaitable<void> run_session(Stream& stream, worker& self, proxy_context& context) {
    const auto& cfg = *context.config;
    const auto& limits = cfg.limits;
    beast::flat_buffer buffer;
    auto& tcp = beast::get_lowest_layer(stream);
    net::socket_deadline deadline(self.deadlines, tcp);
    std::array<std::byte, 2048> fields_buffer;  // a usual request's fields fit; more go to the heap
    std::pmr::monotonic_buffer_resource arena(fields_buffer.data(), fields_buffer.size());
    for (;;) {
        std::size_t head_size = 0;
        error_code ec =
            co_await read_head(stream, deadline, buffer, limits, self, context.refusing, head_size);
        const auto started = clock::now();
        if (ec == quiet_close) {
            break;
        }
        auto line = first_line(view(buffer));
        arena.release();  // the previous request is gone: reuse the whole buffer
        request_parser parser(&arena);
        if (!ec) {
            ec = take_head(buffer, head_size, parser, limits, context.tenants);
        }
        if (!ec) {
            line = {parser.get().method_string(), parser.get().target(),
                    parser.get().method() == beast_http::verb::head};
            if (co_await continue_if_asked(stream, deadline, parser.get(), limits)) {
                break;
            }
            ec = co_await read_body(stream, deadline, buffer, parser, limits);
            if (ec == quiet_close) {
                break;
            }
        }
        if (ec) {
            co_await refuse(stream, deadline, ec, line, context, started);
            co_return;
        }
        const bool keep_alive =
            parser.keep_alive() && !context.draining.load(std::memory_order_relaxed);
        if (!co_await forward(stream, deadline, parser.get(), keep_alive, self, context, started)) {
            break;
        }
    }
    error_code ignored;
    tcp.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    tcp.close(ignored);
}

template asio::awaitable<void> run_session(asio::ip::tcp::socket&, worker&, proxy_context&);
template asio::awaitable<void> run_session(beast::ssl_stream<asio::ip::tcp::socket>&, worker&,
                                           proxy_context&);

}  // namespace coalescer::server
