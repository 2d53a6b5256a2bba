#include "ops/admin_server.hpp"

#include "net/acceptor.hpp"
#include "net/use_tuple.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <stdexcept>

namespace coalescer::ops {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

admin_server::admin_server(asio::io_context& io, const std::string& address, std::uint16_t port,
                           admin_handlers handlers)
    : acceptor_(io), handlers_(std::move(handlers)) {
    net::bind_and_listen(acceptor_, address, port, "admin");
}

std::uint16_t admin_server::port() const {
    return acceptor_.local_endpoint().port();
}

void admin_server::start() {
    asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached);
}

void admin_server::stop() {
    net::close_on_executor(acceptor_);
}

asio::awaitable<void> admin_server::accept_loop() {
    asio::steady_timer pause(acceptor_.get_executor());
    while (acceptor_.is_open()) {
        auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) {
            break;
        }
        if (ec) {
            pause.expires_after(std::chrono::milliseconds(50));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        asio::co_spawn(acceptor_.get_executor(), serve(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> admin_server::serve(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
        beast_http::request_parser<beast_http::empty_body> parser;
        parser.header_limit(8 * 1024);
        stream.expires_after(std::chrono::seconds(30));
        auto [ec, n] = co_await beast_http::async_read(stream, buffer, parser, use_tuple);
        if (ec) {
            break;
        }
        const auto& req = parser.get();
        const auto path = req.target().substr(0, req.target().find('?'));
        beast_http::response<beast_http::string_body> res;
        res.version(11);
        res.keep_alive(req.keep_alive());
        if (req.method() != beast_http::verb::get && req.method() != beast_http::verb::head) {
            res.result(beast_http::status::method_not_allowed);
            res.body() = "method not allowed\n";
        } else if (path == "/healthz") {
            res.result(beast_http::status::ok);
            res.body() = "ok\n";
        } else if (path == "/readyz") {
            const bool ready = handlers_.ready();
            res.result(ready ? beast_http::status::ok : beast_http::status::service_unavailable);
            res.body() = ready ? "ready\n" : "not ready\n";
        } else if (path == "/metrics") {
            res.result(beast_http::status::ok);
            res.set(beast_http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
            res.body() = handlers_.metrics();
        } else {
            res.result(beast_http::status::not_found);
            res.body() = "not found\n";
        }
        if (!res.has_content_length() && res[beast_http::field::content_type].empty()) {
            res.set(beast_http::field::content_type, "text/plain; charset=utf-8");
        }
        res.prepare_payload();
        stream.expires_after(std::chrono::seconds(10));
        auto [wec, wn] = co_await beast_http::async_write(stream, res, use_tuple);
        if (wec || !res.keep_alive()) {
            break;
        }
    }
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace coalescer::ops
