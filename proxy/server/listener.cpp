#include "server/listener.hpp"

#include "http/acceptor.hpp"
#include "http/use_tuple.hpp"
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

#include <stdexcept>
#include <utility>

#include <unistd.h>

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
        http_rules::socket_deadline deadline(self.deadlines, stream.next_layer());
        deadline.expires_after(context.config->limits.header_timeout);
        auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
        if (ec) {
            co_return;
        }
    }
    co_await run_session(stream, self, context);
}

// A descriptor on its way to another worker: closed if the worker's loop ends before taking it.
class owned_descriptor {
  public:
    explicit owned_descriptor(int fd) noexcept : fd_(fd) {}
    owned_descriptor(owned_descriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    owned_descriptor(const owned_descriptor&) = delete;
    owned_descriptor& operator=(const owned_descriptor&) = delete;
    owned_descriptor& operator=(owned_descriptor&&) = delete;
    ~owned_descriptor() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    int get() const noexcept { return fd_; }
    void disown() noexcept { fd_ = -1; }

  private:
    int fd_;
};

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
    http_rules::bind_and_listen(acceptor_, cfg.address, cfg.port, "");
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
    http_rules::close_on_executor(acceptor_);
}

asio::awaitable<void> listener::accept_loop() {
    asio::steady_timer pause(acceptor_.get_executor());
    const auto max_connections = static_cast<std::int64_t>(context_.config->limits.max_connections);
    while (acceptor_.is_open()) {
        auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) {
            break;
        }
        if (ec) {
            // Out of descriptors or memory: wait a little rather than spin.
            pause.expires_after(std::chrono::milliseconds(50));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        socket.set_option(tcp::no_delay(true), ec);
        if (context_.metrics.open_connections() >= max_connections) {
            asio::co_spawn(acceptor_.get_executor(), refuse_busy(std::move(socket)),
                           asio::detached);
            continue;
        }
        hand_over(std::move(socket), *workers_[next_worker_++ % workers_.size()]);
    }
}

void listener::hand_over(tcp::socket socket, worker& target) {
    if (&target.io == &home_) {
        start_session(std::move(socket), target);
        return;
    }
    // The descriptor is registered anew by the worker's own thread: a worker's reactor state is
    // only ever touched by that thread, so its loop runs socket I/O without locks.
    error_code ec;
    owned_descriptor fd(socket.release(ec));
    if (ec) {
        return;
    }
    asio::post(target.io, [this, &target, fd = std::move(fd)]() mutable {
        tcp::socket moved(target.io);
        error_code assign_ec;
        moved.assign(protocol_, fd.get(), assign_ec);
        if (!assign_ec) {
            fd.disown();
            start_session(std::move(moved), target);
        }
    });
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
