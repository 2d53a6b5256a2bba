#include "server/listener.hpp"

#include "net/acceptor.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"
#include "server/session.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <openssl/ssl.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace coalescer::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// Keeps the open-connection gauge and count true however the session ends.
struct connection_count {
    explicit connection_count(ops::metrics& m) : metrics(m) { metrics.connection_opened(); }
    ~connection_count() { metrics.connection_closed(); }
    ops::metrics& metrics;
};

asio::awaitable<void> plain_session(tcp::socket socket, worker& self, proxy_context& context) {
    connection_count counted(context.metrics);
    co_await run_session(socket, self, context);
}

asio::awaitable<void> tls_session(tcp::socket socket, asio::ssl::context& tls, worker& self,
                                  proxy_context& context) {
    connection_count counted(context.metrics);
    beast::ssl_stream<tcp::socket> stream(std::move(socket), tls);
    {
        // A client that never finishes its handshake is dropped at the header timeout (T-09).
        net::socket_deadline deadline(self.deadlines, stream.next_layer());
        deadline.expires_after(context.config->limits.header_timeout);
        auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
        if (ec) {
            co_return;
        }
    }
    co_await run_session(stream, self, context);
}

// Connections accepted in one go before the worker's own requests get a turn: a burst of new
// connections is taken in a few passes of the loop rather than one connection per pass, which
// under load left the last of 400 waiting up to 0.8 s.
constexpr int accept_batch = 64;
// Out of descriptors (or memory): accepting again at once would fail again.
constexpr std::chrono::milliseconds accept_pause{50};
constexpr std::chrono::seconds accept_warning_interval{10};

// An accepted descriptor as a socket of `io`'s loop (registered with it by the calling thread,
// which must be that loop's), or nothing: `fd` then still owns the descriptor and closes it.
std::optional<tcp::socket> socket_on(asio::io_context& io, const tcp& protocol,
                                     net::owned_descriptor& fd) {
    tcp::socket socket(io);
    error_code ec;
    socket.assign(protocol, fd.get(), ec);
    if (ec) {
        return std::nullopt;
    }
    fd.disown();
    return socket;
}

asio::awaitable<void> refuse_busy(tcp::socket socket) {
    const auto text = ops::error_response(ops::proxy_errc::shutting_down, false);
    beast::tcp_stream stream(std::move(socket));
    stream.expires_after(std::chrono::seconds(1));
    co_await asio::async_write(stream, asio::buffer(text), use_tuple);
}

}  // namespace

listener::listener(asio::io_context& io, const ops::listen_config& cfg,
                   std::vector<std::unique_ptr<worker>>& workers, proxy_context& context)
    : home_(io), acceptor_(io), protocol_(tcp::v4()), workers_(workers), context_(context) {
    net::bind_and_listen(acceptor_, cfg.address, cfg.port, "");
    net::allow_accept_now(acceptor_);
    protocol_ = acceptor_.local_endpoint().protocol();
    if (cfg.tls) {
        tls_ = make_server_tls_context(*cfg.tls);
    }
}

std::uint16_t listener::port() const {
    return acceptor_.local_endpoint().port();
}

void listener::start() {
    asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached);
}

void listener::stop() {
    net::close_on_executor(acceptor_);
}

asio::awaitable<void> listener::accept_loop() {
    asio::steady_timer pause(acceptor_.get_executor());
    while (acceptor_.is_open()) {
        // Accepting comes first, waiting second: the socket reports readiness by edges, and
        // connections queued before the first wait, or left behind by a failed accept, bring
        // no new edge.
        auto status = accept_some();
        while (status == net::accept_status::accepted && acceptor_.is_open()) {
            co_await asio::post(acceptor_.get_executor(), use_tuple);  // this worker's turn
            status = accept_some();
        }
        if (status == net::accept_status::drained) {
            auto [ec] = co_await acceptor_.async_wait(tcp::acceptor::wait_read, use_tuple);
            if (ec == asio::error::operation_aborted || !acceptor_.is_open()) {
                break;
            }
            if (!ec) {
                continue;
            }
        }
        pause.expires_after(accept_pause);
        co_await pause.async_wait(use_tuple);
    }
}

net::accept_status listener::accept_some() {
    const auto max_connections = static_cast<std::int64_t>(context_.config->limits.max_connections);
    for (int i = 0; i < accept_batch; ++i) {
        net::owned_descriptor fd;
        int error = 0;
        const auto status = net::accept_now(acceptor_, fd, error);
        if (status == net::accept_status::failed) {
            warn_accept_failed(error);
        }
        if (status != net::accept_status::accepted) {
            return status;
        }
        const auto open =
            context_.metrics.open_connections() + in_transit_.load(std::memory_order_relaxed);
        if (open >= max_connections) {
            refuse(std::move(fd));
        } else {
            hand_over(std::move(fd), *workers_[next_worker_++ % workers_.size()]);
        }
    }
    return net::accept_status::accepted;  // maybe more queued
}

void listener::warn_accept_failed(int error) {
    ++accept_failures_;
    const auto now = std::chrono::steady_clock::now();
    if (last_accept_warning_ != std::chrono::steady_clock::time_point{} &&
        now - last_accept_warning_ < accept_warning_interval) {
        return;
    }
    last_accept_warning_ = now;
    context_.log.message(ops::log_level::warn,
                         "cannot accept connections: " + std::generic_category().message(error) +
                             "; accepting again every " + std::to_string(accept_pause.count()) +
                             " ms (" + std::to_string(accept_failures_) + " failed accepts)");
    accept_failures_ = 0;
}

void listener::refuse(net::owned_descriptor fd) {
    if (auto socket = socket_on(home_, protocol_, fd)) {
        asio::co_spawn(home_, refuse_busy(std::move(*socket)), asio::detached);
    }
}

void listener::hand_over(net::owned_descriptor fd, worker& target) {
    if (&target.io == &home_) {
        adopt(std::move(fd), target);
        return;
    }
    // The descriptor is registered by the worker's own thread: a worker's reactor state is only
    // ever touched by that thread, so its loop runs socket I/O without locks. If the worker's
    // loop ends before it runs this, the descriptor is closed with the handler.
    in_transit_.fetch_add(1, std::memory_order_relaxed);
    asio::post(target.io, [this, &target, fd = std::move(fd)]() mutable {
        adopt(std::move(fd), target);  // the session counts itself from here on
        in_transit_.fetch_sub(1, std::memory_order_relaxed);
    });
}

void listener::adopt(net::owned_descriptor fd, worker& target) {
    if (auto socket = socket_on(target.io, protocol_, fd)) {
        start_session(std::move(*socket), target);
    }
}

void listener::start_session(tcp::socket socket, worker& target) {
    if (tls_) {
        asio::co_spawn(target.io, tls_session(std::move(socket), *tls_, target, context_),
                       asio::detached);
    } else {
        asio::co_spawn(target.io, plain_session(std::move(socket), target, context_),
                       asio::detached);
    }
}

std::unique_ptr<asio::ssl::context> make_server_tls_context(const ops::tls_files& files) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_compression |
                     asio::ssl::context::single_dh_use);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_RENEGOTIATION);
    error_code ec;
    ctx->use_certificate_chain_file(files.cert_file, ec);
    if (ec) {
        throw std::runtime_error("listen.tls.cert_file " + files.cert_file + ": " + ec.message());
    }
    ctx->use_private_key_file(files.key_file, asio::ssl::context::pem, ec);
    if (ec) {
        throw std::runtime_error("listen.tls.key_file " + files.key_file + ": " + ec.message());
    }
    return ctx;
}

}  // namespace coalescer::server
