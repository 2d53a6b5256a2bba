#include "server/listener.hpp"

#include "http/acceptor.hpp"
#include "http/use_tuple.hpp"
#include "ops/errors.hpp"
#include "server/session.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <openssl/ssl.h>

#include <stdexcept>

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

asio::awaitable<void> refuse_busy(tcp::socket socket) {
    const auto text = ops::error_response(ops::proxy_errc::shutting_down, false);
    beast::tcp_stream stream(std::move(socket));
    stream.expires_after(std::chrono::seconds(1));
    co_await asio::async_write(stream, asio::buffer(text), use_tuple);
}

}  // namespace

listener::listener(asio::io_context& io, const ops::listen_config& cfg,
                   std::vector<std::unique_ptr<worker>>& workers, proxy_context& context)
    : acceptor_(io), workers_(workers), context_(context) {
    http_rules::bind_and_listen(acceptor_, cfg.address, cfg.port, "");
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
        worker& target = *workers_[next_worker_++ % workers_.size()];
        auto [ec, socket] = co_await acceptor_.async_accept(target.io.get_executor(), use_tuple);
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
            asio::co_spawn(target.io, refuse_busy(std::move(socket)), asio::detached);
            continue;
        }
        if (tls_) {
            asio::co_spawn(target.io, tls_session(std::move(socket), *tls_, target, context_),
                           asio::detached);
        } else {
            asio::co_spawn(target.io, plain_session(std::move(socket), target, context_),
                           asio::detached);
        }
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
