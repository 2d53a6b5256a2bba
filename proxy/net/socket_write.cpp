#include "net/socket_write.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <type_traits>

namespace coalescer::net {
namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

namespace {
// More buffers than this go out in two steps (the rest asynchronously); a relayed piece uses
// at most five, a subscriber's catch-up write a few hundred.
constexpr std::size_t max_iov = 64;
}  // namespace

std::size_t send_now(asio::ip::tcp::socket& socket, std::span<const asio::const_buffer> buffers,
                     error_code& ec) noexcept {
    std::array<iovec, max_iov> iov;
    std::size_t count = 0;
    for (const auto& b : buffers) {
        if (count == iov.size()) {
            break;
        }
        if (b.size() != 0) {
            iov[count++] = {const_cast<void*>(b.data()), b.size()};
        }
    }
    if (count == 0) {
        return 0;
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    for (;;) {
        const auto n = ::sendmsg(socket.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            return static_cast<std::size_t>(n);
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            ec.assign(errno, boost::system::system_category());
        }
        return 0;
    }
}

template <class Stream>
std::size_t write_now(Stream& stream, std::span<const asio::const_buffer> buffers,
                      error_code& ec) noexcept {
    if constexpr (std::is_same_v<Stream, asio::ip::tcp::socket>) {
        return send_now(stream, buffers, ec);
    } else {
        return 0;  // TLS records are OpenSSL's to write
    }
}

template <class Stream, class Limit>
asio::awaitable<error_code> write_rest(Stream& stream, socket_deadline& deadline,
                                       std::span<const asio::const_buffer> buffers,
                                       std::size_t sent, Limit limit) {
    beast::buffers_suffix<std::span<const asio::const_buffer>> rest(buffers);
    rest.consume(sent);
    if constexpr (std::is_same_v<Limit, socket_deadline::clock::time_point>) {
        deadline.expires_at(limit);
    } else {
        deadline.expires_after(limit);
    }
    auto [ec, n] = co_await asio::async_write(stream, rest, asio::as_tuple(asio::use_awaitable));
    co_return deadline.finish(ec);
}

template <class Stream, class Limit>
asio::awaitable<error_code> write_fully(Stream& stream, socket_deadline& deadline,
                                        std::span<const asio::const_buffer> buffers, Limit limit) {
    error_code ec;
    const auto sent = write_now(stream, buffers, ec);
    if (ec || sent == asio::buffer_size(buffers)) {
        co_return ec;
    }
    co_return co_await write_rest(stream, deadline, buffers, sent, limit);
}

using buffer_span = std::span<const asio::const_buffer>;
using tls_stream = beast::ssl_stream<asio::ip::tcp::socket>;
using time_point = socket_deadline::clock::time_point;
template asio::awaitable<error_code> write_fully(asio::ip::tcp::socket&, socket_deadline&,
                                                 buffer_span, std::chrono::milliseconds);
template asio::awaitable<error_code> write_fully(tls_stream&, socket_deadline&, buffer_span,
                                                 std::chrono::milliseconds);
template asio::awaitable<error_code> write_fully(asio::ip::tcp::socket&, socket_deadline&,
                                                 buffer_span, time_point);
template asio::awaitable<error_code> write_fully(tls_stream&, socket_deadline&, buffer_span,
                                                 time_point);

template std::size_t write_now(asio::ip::tcp::socket&, buffer_span, error_code&) noexcept;
template std::size_t write_now(tls_stream&, buffer_span, error_code&) noexcept;
template asio::awaitable<error_code> write_rest(asio::ip::tcp::socket&, socket_deadline&,
                                                buffer_span, std::size_t,
                                                std::chrono::milliseconds);
template asio::awaitable<error_code> write_rest(tls_stream&, socket_deadline&, buffer_span,
                                                std::size_t, std::chrono::milliseconds);
template asio::awaitable<error_code> write_rest(asio::ip::tcp::socket&, socket_deadline&,
                                                buffer_span, std::size_t, time_point);
template asio::awaitable<error_code> write_rest(tls_stream&, socket_deadline&, buffer_span,
                                                std::size_t, time_point);

}  // namespace coalescer::net
