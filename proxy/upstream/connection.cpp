#include "upstream/connection.hpp"

#include "net/socket_read.hpp"
#include "net/socket_write.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <utility>

namespace coalescer::upstream {
namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using boost::system::error_code;
using ops::proxy_errc;

namespace {

bool is_ip_literal(const std::string& host) {
    error_code ec;
    asio::ip::make_address(host, ec);
    return !ec;
}

// Hostname (or IP) verification on this connection, RFC 6125 style, no partial wildcards.
bool set_peer_name(SSL* ssl, const std::string& host) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip_literal(host)) {
        return X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1;
    }
    // SNI only for DNS names (RFC 6066 forbids IP literals).
    return SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 &&
           X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) == 1;
}

}  // namespace

connection::connection(asio::any_io_executor ex, net::deadline_sweep& deadlines,
                       std::size_t max_buffered)
    : buffer_(max_buffered), executor_(std::move(ex)), deadlines_(deadlines) {}

tcp::socket& connection::socket() noexcept {
    return tls_ ? beast::get_lowest_layer(*tls_) : *plain_;
}

asio::awaitable<error_code> connection::connect(const ops::upstream_config& upstream,
                                                asio::ssl::context* tls, deadline by) {
    if (upstream.https && tls != nullptr) {
        tls_.emplace(executor_, *tls);
    } else {
        plain_.emplace(executor_);
    }
    deadline_.emplace(deadlines_, socket());
    std::vector<tcp::endpoint> endpoints;
    error_code ec;
    if (auto address = asio::ip::make_address(upstream.host, ec); !ec) {
        endpoints.emplace_back(address, upstream.port);
    } else {
        tcp::resolver resolver(executor_);
        auto [rec, results] = co_await resolver.async_resolve(
            upstream.host, std::to_string(upstream.port), use_tuple);
        if (rec) {
            co_return proxy_errc::upstream_resolve_failed;
        }
        for (const auto& r : results) {
            endpoints.push_back(r.endpoint());
        }
    }
    error_code cec = asio::error::host_not_found;
    for (const auto& endpoint : endpoints) {  // in order, each under what is left of `by`
        cec = co_await connect_to(endpoint, by);
        // A close by the exchange's cancel aborts the connect: never move on to the next
        // address (reopening the socket there would lose the cancel).
        if (!cec || cec == beast::error::timeout || cec == asio::error::operation_aborted) {
            break;
        }
    }
    if (cec) {
        co_return cec == beast::error::timeout ? proxy_errc::upstream_connect_timeout
                                               : proxy_errc::upstream_connect_failed;
    }
    socket().set_option(tcp::no_delay(true), ec);
    if (tls_) {
        if (!set_peer_name(tls_->native_handle(), upstream.host)) {
            co_return proxy_errc::upstream_tls_failed;
        }
        deadline_->expires_at(by);
        auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::client, use_tuple);
        if (const auto fec = deadline_->finish(hec)) {
            co_return fec == beast::error::timeout ? proxy_errc::upstream_connect_timeout
                                                   : proxy_errc::upstream_tls_failed;
        }
    }
    co_return error_code{};
}

// A nearby upstream (a gateway on the node, loopback) completes the handshake inside the
// connect call; when the socket is writable at once the request goes out without a wait
// through the worker's queue. During a burst that queue holds every other client's request,
// and a flight's upstream call would otherwise start only after all of them.
asio::awaitable<error_code> connection::connect_to(const tcp::endpoint& endpoint, deadline by) {
    error_code ec;
    socket().close(ec);
    socket().open(endpoint.protocol(), ec);
    if (!ec) {
        socket().non_blocking(true, ec);
    }
    if (ec) {
        co_return ec;
    }
    const int fd = socket().native_handle();
    if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) == 0) {
        co_return error_code{};
    }
    if (errno != EINPROGRESS && errno != EINTR) {
        co_return error_code(errno, boost::system::system_category());
    }
    pollfd ready{fd, POLLOUT, 0};
    if (::poll(&ready, 1, 0) != 1) {
        deadline_->expires_at(by);
        auto [wec] = co_await socket().async_wait(tcp::socket::wait_write, use_tuple);
        if (const auto fec = deadline_->finish(wec)) {
            co_return fec;
        }
    }
    int failure = 0;
    socklen_t size = sizeof failure;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &size) != 0) {
        failure = errno;
    }
    co_return failure == 0 ? error_code{} : error_code(failure, boost::system::system_category());
}

std::size_t connection::write_now(std::span<const asio::const_buffer> buffers,
                                  error_code& ec) noexcept {
    return tls_ ? net::write_now(*tls_, buffers, ec) : net::write_now(*plain_, buffers, ec);
}

asio::awaitable<error_code> connection::write_rest(std::span<const asio::const_buffer> buffers,
                                                   std::size_t sent, deadline by) {
    return tls_ ? net::write_rest(*tls_, *deadline_, buffers, sent, by)
                : net::write_rest(*plain_, *deadline_, buffers, sent, by);
}

bool connection::parse(response_parser& parser, bool header_only, error_code& ec) {
    return feed(parser, buffer_, header_only, ec);
}

asio::awaitable<error_code> connection::receive(response_parser& parser) {
    // Beast's read_size() offers only the buffer's spare capacity (512 bytes at first, and it
    // stays there): a streamed event would arrive in several pieces, each one a wake-up and a
    // write per subscriber. Every receive offers at least min_read.
    constexpr std::size_t min_read = 16 * 1024;
    constexpr std::size_t max_read = 64 * 1024;
    const auto space = std::min(std::max(min_read, buffer_.capacity() - buffer_.size()),
                                std::min(max_read, buffer_.max_size() - buffer_.size()));
    if (space == 0) {
        co_return beast::http::error::buffer_overflow;
    }
    // Two statements, not `co_await (tls_ ? a : b)`: GCC 12 evaluates the wrong operand there.
    std::tuple<error_code, std::size_t> got;
    if (tls_) {
        got = co_await tls_->async_read_some(buffer_.prepare(space), use_tuple);
    } else {
        const auto buffer = buffer_.prepare(space);
        auto attempt = net::read_attempt::now(*plain_, buffer);
        if (!attempt.done()) {
            const auto waited = co_await plain_->async_read_some(buffer, use_tuple);
            attempt.waited(*plain_, waited);
        }
        got = attempt.result();
    }
    auto [ec, n] = got;
    buffer_.commit(n);
    if (ec == asio::error::eof) {
        // What was read so far decides: a body delimited by the close ends here, a head or a
        // counted body was cut short, and nothing at all is a connection closed between answers.
        if (!parser.got_some()) {
            co_return beast::http::error::end_of_stream;
        }
        ec = {};
        parser.put_eof(ec);
    }
    co_return ec;
}

asio::awaitable<error_code> connection::read_header(response_parser& parser, deadline by) {
    return read(parser, true, by);
}

asio::awaitable<error_code> connection::read_some(response_parser& parser, deadline by) {
    return read(parser, false, by);
}

// Loops like Beast's own reads: parse what is buffered, receive only when that is not enough.
// The deadline covers the whole read.
asio::awaitable<error_code> connection::read(response_parser& parser, bool header_only,
                                             deadline by) {
    deadline_->expires_at(by);
    for (;;) {
        error_code ec;
        if (!parse(parser, header_only, ec)) {
            if (deadline_->fired()) {  // it passed between two receives
                co_return deadline_->finish(asio::error::operation_aborted);
            }
            ec = co_await receive(parser);
            if (!ec && !parser.is_done()) {
                continue;
            }
        }
        co_return deadline_->finish(ec);
    }
}

bool connection::parse_buffered(response_parser& parser, error_code& ec) {
    return parse(parser, false, ec);
}

void connection::close() noexcept {
    error_code ignored;
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
}

bool connection::stale() noexcept {
    if (buffer_.size() != 0) {
        return true;  // bytes after the last response: the connection is out of step
    }
    char probe = 0;
    const auto n = ::recv(socket().native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

bool closed_by_peer(error_code ec) noexcept {
    return ec == beast::http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::ssl::error::stream_truncated;
}

// OpenSSL's default store: SSL_CERT_FILE / SSL_CERT_DIR or the compiled-in paths.
bool system_store_present() {
    const char* file = std::getenv(X509_get_default_cert_file_env());
    const char* dir = std::getenv(X509_get_default_cert_dir_env());
    const std::filesystem::path cert_file = file != nullptr ? file : X509_get_default_cert_file();
    const std::filesystem::path cert_dir = dir != nullptr ? dir : X509_get_default_cert_dir();
    std::error_code ec;
    if (std::filesystem::is_regular_file(cert_file, ec) &&
        std::filesystem::file_size(cert_file, ec) > 0) {
        return true;
    }
    return std::filesystem::is_directory(cert_dir, ec) && !std::filesystem::is_empty(cert_dir, ec);
}

asio::ssl::context make_client_tls_context(const ops::upstream_config& upstream) {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_compression);
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx.native_handle(), alpn, sizeof alpn);
    if (upstream.tls.verify) {
        ctx.set_verify_mode(asio::ssl::verify_peer);
    } else {
        ctx.set_verify_mode(asio::ssl::verify_none);
    }
    if (upstream.tls.ca_file.empty()) {
        if (upstream.tls.verify && !system_store_present()) {
            // Starting anyway would answer every call with 502 while /readyz says ready.
            throw std::runtime_error(
                "upstream " + upstream.name + ": no system CA certificates found (" +
                X509_get_default_cert_file() + ", " + X509_get_default_cert_dir() +
                "); install ca-certificates, set SSL_CERT_FILE, or set tls.ca_file");
        }
        ctx.set_default_verify_paths();
    } else {
        error_code ec;
        ctx.load_verify_file(upstream.tls.ca_file, ec);
        if (ec) {
            throw std::runtime_error("upstream " + upstream.name + ": cannot load tls.ca_file " +
                                     upstream.tls.ca_file + ": " + ec.message());
        }
    }
    return ctx;
}

}  // namespace coalescer::upstream
