#include "cluster/redis_connection.hpp"

#include "net/use_tuple.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <tuple>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

error_code protocol_error() {
    return make_error_code(boost::system::errc::protocol_error);
}

}  // namespace

redis_connection::redis_connection(asio::any_io_executor ex, const ops::cluster_config& config,
                                   asio::ssl::context& tls)
    : config_(config), tls_(config.tls), stream_(ex, tls), deadline_(ex), buffer_(16 * 1024) {}

void redis_connection::close() noexcept {
    usable_ = false;
    error_code ignored;
    stream_.next_layer().close(ignored);
}

// The deadline closes nothing itself: it cancels the socket's operations, and the coroutine that
// awaited them sees the cancellation and closes the connection.
void redis_connection::arm(std::chrono::milliseconds timeout) {
    timed_out_ = false;
    deadline_.expires_after(timeout);
    deadline_.async_wait([this](error_code ec) {
        if (!ec) {
            timed_out_ = true;
            error_code ignored;
            stream_.next_layer().cancel(ignored);
        }
    });
}

error_code redis_connection::disarm(error_code ec) {
    deadline_.cancel();
    if (timed_out_)
        ec = asio::error::timed_out;
    if (ec)
        close();
    return ec;
}

asio::awaitable<error_code> redis_connection::open() {
    arm(config_.connect_timeout);
    tcp::resolver resolver(co_await asio::this_coro::executor);
    auto [rec, endpoints] =
        co_await resolver.async_resolve(config_.host, std::to_string(config_.port), use_tuple);
    if (rec)
        co_return disarm(rec);
    auto [cec, endpoint] = co_await asio::async_connect(stream_.next_layer(), endpoints, use_tuple);
    if (cec)
        co_return disarm(cec);
    stream_.next_layer().set_option(tcp::no_delay(true));
    if (tls_) {
        if (!SSL_set_tlsext_host_name(stream_.native_handle(), config_.host.c_str()))
            co_return disarm(protocol_error());
        if (config_.tls_verify)
            stream_.set_verify_callback(asio::ssl::host_name_verification(config_.host));
        auto [hec] = co_await stream_.async_handshake(asio::ssl::stream_base::client, use_tuple);
        if (hec)
            co_return disarm(hec);
    }
    usable_ = true;
    const auto ec = co_await handshake();
    co_return disarm(ec);
}

// AUTH and SELECT, in one write, before the connection serves anything else.
asio::awaitable<error_code> redis_connection::handshake() {
    std::string commands;
    std::size_t count = 0;
    if (!config_.password.empty()) {
        if (config_.username.empty())
            append_command(commands, {"AUTH", config_.password});
        else
            append_command(commands, {"AUTH", config_.username, config_.password});
        ++count;
    }
    if (config_.database != 0) {
        append_command(commands, {"SELECT", std::to_string(config_.database)});
        ++count;
    }
    if (count == 0)
        co_return error_code{};
    if (auto ec = co_await write(commands))
        co_return ec;
    std::vector<reply> replies;
    if (auto ec = co_await read_replies(count, replies))
        co_return ec;
    for (const auto& r : replies) {
        if (r.is_error())
            co_return make_error_code(boost::system::errc::permission_denied);
    }
    co_return error_code{};
}

asio::awaitable<error_code> redis_connection::write(const std::string& bytes) {
    // No co_await inside a conditional expression: GCC 12 miscompiles some.
    if (tls_) {
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(bytes), use_tuple);
        co_return ec;
    }
    auto [ec, n] = co_await asio::async_write(stream_.next_layer(), asio::buffer(bytes), use_tuple);
    co_return ec;
}

void redis_connection::start_write(const std::string& bytes, std::function<void(error_code)> done) {
    auto written = [done = std::move(done)](error_code ec, std::size_t) { done(ec); };
    if (tls_)
        asio::async_write(stream_, asio::buffer(bytes), std::move(written));
    else
        asio::async_write(stream_.next_layer(), asio::buffer(bytes), std::move(written));
}

std::size_t redis_connection::write_now(const std::string& bytes, error_code& ec) noexcept {
    ec = {};
    if (tls_)
        return 0;
    for (;;) {
        const auto n = ::send(stream_.next_layer().native_handle(), bytes.data(), bytes.size(),
                              MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0)
            return static_cast<std::size_t>(n);
        if (errno != EINTR) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                ec = error_code(errno, boost::system::system_category());
            return 0;
        }
    }
}

// A plain connection waits for the socket to be readable and then receives itself: every
// receive happens in a handler of this worker and is fed at once, so a read_now() between two
// of them cannot take bytes out of order (a reactor-run receive would hold its bytes until its
// handler's turn).
void redis_connection::start_read(std::function<void(error_code)> done) {
    if (tls_) {
        stream_.async_read_some(asio::buffer(buffer_),
                                [this, done = std::move(done)](error_code ec, std::size_t n) {
                                    if (!ec && !reader_.feed(buffer_.data(), n))
                                        ec = protocol_error();
                                    done(ec);
                                });
        return;
    }
    stream_.next_layer().async_wait(tcp::socket::wait_read,
                                    [this, done = std::move(done)](error_code ec) {
                                        if (!ec)
                                            read_now(ec);
                                        done(ec == asio::error::would_block ? error_code{} : ec);
                                    });
}

std::size_t redis_connection::read_now(error_code& ec) {
    ec = {};
    std::size_t total = 0;
    // A large reply (a stream so far) is taken whole, within a bound that keeps the loop fair.
    for (int i = 0; i < 64; ++i) {
        const auto n = ::recv(stream_.next_layer().native_handle(), buffer_.data(), buffer_.size(),
                              MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                ec = error_code(errno, boost::system::system_category());
            else if (total == 0)
                ec = asio::error::would_block;
            return total;
        }
        if (n == 0) {
            ec = asio::error::eof;
            return total;
        }
        if (!reader_.feed(buffer_.data(), static_cast<std::size_t>(n))) {
            ec = protocol_error();
            return total;
        }
        total += static_cast<std::size_t>(n);
        if (static_cast<std::size_t>(n) < buffer_.size())
            return total;  // the socket is drained; later bytes bring a readiness of their own
    }
    return total;
}

// A plain connection takes what the socket holds in one go (a stream read's reply can be
// hundreds of KiB) and waits only when it is empty: a wait per 16 KiB receive would put the
// rest of the reply behind every other handler of a busy worker, each time.
asio::awaitable<error_code> redis_connection::receive(reply& out) {
    for (;;) {
        const auto got = reader_.next(out);
        if (got == reply_reader::status::broken)
            co_return protocol_error();
        if (got == reply_reader::status::complete)
            co_return error_code{};
        if (!tls_) {
            error_code ec;
            read_now(ec);
            if (ec == asio::error::would_block)
                std::tie(ec) =
                    co_await stream_.next_layer().async_wait(tcp::socket::wait_read, use_tuple);
            if (ec)
                co_return ec;
            continue;
        }
        auto [ec, n] = co_await stream_.async_read_some(asio::buffer(buffer_), use_tuple);
        if (ec)
            co_return ec;
        if (!reader_.feed(buffer_.data(), n))
            co_return protocol_error();
    }
}

asio::awaitable<error_code> redis_connection::read_replies(std::size_t count,
                                                           std::vector<reply>& out) {
    while (out.size() < count) {
        reply r;
        if (auto ec = co_await receive(r))
            co_return ec;
        out.push_back(std::move(r));
    }
    co_return error_code{};
}

asio::awaitable<error_code> redis_connection::pipeline(const std::string& commands,
                                                       std::size_t count,
                                                       std::chrono::milliseconds timeout,
                                                       std::vector<reply>& replies) {
    replies.clear();
    if (!usable_)
        co_return asio::error::not_connected;
    arm(timeout);
    auto ec = co_await write(commands);
    if (!ec)
        ec = co_await read_replies(count, replies);
    co_return disarm(ec);
}

asio::awaitable<redis_result> redis_connection::command(const std::vector<std::string_view>& args,
                                                        std::chrono::milliseconds timeout) {
    std::string bytes;
    append_command(bytes, args);
    std::vector<reply> replies;
    redis_result result;
    result.ec = co_await pipeline(bytes, 1, timeout, replies);
    if (!result.ec)
        result.value = std::move(replies.front());
    co_return result;
}

}  // namespace coalescer::cluster
