#include "harness.hpp"

#include <openssl/evp.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <algorithm>
#include <stdexcept>

namespace coalescer::test {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;

std::string proxy_yaml(const std::string& upstream_url, const std::string& extra,
                       const std::string& upstream_extra, const std::string& routes) {
    const bool sets_workers =
        extra.rfind("workers:", 0) == 0 || extra.find("\nworkers:") != std::string::npos;
    std::string yaml =
        std::string(sets_workers ? "" : "workers: 2\n") +
        "listen: {address: 127.0.0.1, port: 0}\n"
        "admin: {address: 127.0.0.1, port: 0}\n"
        "upstreams:\n"
        "  - name: mock\n"
        "    url: " +
        upstream_url + "\n" +
        (upstream_extra.find("timeouts:") == std::string::npos
             ? "    timeouts: {connect: 2s, head: 10s, idle: 10s, total: 60s}\n"
             : "") +
        upstream_extra + "routes:\n" +
        (routes.empty() ? "  - {prefix: /chat/completions, upstream: mock, coalesce: true}\n"
                          "  - {prefix: /, upstream: mock, coalesce: false}\n"
                        : routes) +
        extra;
    if (extra.find("log:") == std::string::npos) {
        yaml += "log: {level: warn}\n";
    }
    return yaml;
}

running_proxy::running_proxy(const std::string& yaml)
    : server(std::make_unique<server::server>(ops::load_config_text(yaml, "test.yaml"))) {
    server->start();
}

running_proxy::~running_proxy() {
    server.reset();
}

mock_and_proxy::mock_and_proxy(mock::mock_options options, const std::string& extra,
                               const std::string& upstream_extra, const std::string& routes)
    : mock(std::make_unique<mock::mock_server>(std::move(options))) {
    mock->start();
    proxy = std::make_unique<running_proxy>(proxy_yaml(mock_url(), extra, upstream_extra, routes));
}

std::string mock_and_proxy::mock_url() const {
    return "http://127.0.0.1:" + std::to_string(mock->port());
}

std::string response::header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
}

struct client::impl {
    asio::io_context io;
    std::optional<beast::tcp_stream> plain;
    std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
    beast::flat_buffer buffer;
    std::optional<beast_http::response_parser<beast_http::string_body>> parser;

    beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }

    // Runs one asynchronous operation to completion or `timeout`.
    template <class Start>
    error_code run(Start start, std::chrono::milliseconds timeout) {
        std::optional<error_code> result;
        tcp().expires_after(timeout);
        start([&](error_code ec, std::size_t = 0) { result = ec; });
        io.restart();
        io.run();
        return result.value_or(asio::error::timed_out);
    }

    template <class Op>
    error_code with_stream(Op op, std::chrono::milliseconds timeout) {
        return run(
            [&](auto handler) {
                if (tls)
                    op(*tls, handler);
                else
                    op(*plain, handler);
            },
            timeout);
    }
};

client::client(std::uint16_t port, asio::ssl::context* tls, const std::string& sni)
    : impl_(std::make_unique<impl>()) {
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
    if (tls != nullptr) {
        impl_->tls.emplace(impl_->io, *tls);
        SSL_set_tlsext_host_name(impl_->tls->native_handle(), sni.c_str());
        impl_->tls->set_verify_callback(asio::ssl::host_name_verification(sni));
    } else {
        impl_->plain.emplace(impl_->io);
    }
    auto ec = impl_->run([&](auto h) { impl_->tcp().async_connect(endpoint, h); },
                         std::chrono::seconds(5));
    if (ec)
        throw std::runtime_error("connect: " + ec.message());
    if (impl_->tls) {
        ec = impl_->run(
            [&](auto h) { impl_->tls->async_handshake(asio::ssl::stream_base::client, h); },
            std::chrono::seconds(5));
        if (ec)
            throw std::runtime_error("handshake: " + ec.message());
    }
}

client::~client() = default;

void client::send_raw(const std::string& bytes) {
    auto ec =
        impl_->with_stream([&](auto& s, auto h) { asio::async_write(s, asio::buffer(bytes), h); },
                           std::chrono::seconds(10));
    if (ec)
        throw std::runtime_error("send: " + ec.message());
}

void client::send(const std::string& method, const std::string& target, const std::string& body,
                  const std::vector<std::pair<std::string, std::string>>& headers) {
    std::string text = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n";
    bool has_type = false;
    for (const auto& [n, v] : headers) {
        text += n + ": " + v + "\r\n";
        has_type = has_type || n == "Content-Type";
    }
    if (!body.empty() && !has_type)
        text += "Content-Type: application/json\r\n";
    if (!body.empty() || method == "POST")
        text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    text += "\r\n" + body;
    send_raw(text);
}

namespace {

response from_parser(beast_http::response_parser<beast_http::string_body>& parser, error_code ec) {
    response r;
    if (parser.is_header_done()) {
        const auto& msg = parser.get();
        r.status = msg.result_int();
        for (const auto& f : msg) {
            std::string name(f.name_string());
            std::transform(name.begin(), name.end(), name.begin(),
                           [](unsigned char c) { return std::tolower(c); });
            auto& slot = r.headers[name];
            slot = slot.empty() ? std::string(f.value()) : slot + ", " + std::string(f.value());
        }
        r.body = msg.body();
    }
    r.complete = !ec && parser.is_done();
    if (ec)
        r.error = ec.message();
    r.timed_out = ec == beast::error::timeout || ec == asio::error::timed_out;
    return r;
}

}  // namespace

response client::read(std::chrono::milliseconds timeout) {
    auto& p = impl_->parser.emplace();
    p.body_limit(boost::none);
    auto ec = impl_->with_stream(
        [&](auto& s, auto h) { beast_http::async_read(s, impl_->buffer, p, h); }, timeout);
    return from_parser(p, ec);
}

response client::read_until(const std::string& needle, std::chrono::milliseconds timeout) {
    const bool resume =
        impl_->parser && impl_->parser->is_header_done() && !impl_->parser->is_done();
    auto& p = resume ? *impl_->parser : impl_->parser.emplace();
    p.body_limit(boost::none);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    error_code ec;
    if (!resume) {
        ec = impl_->with_stream(
            [&](auto& s, auto h) { beast_http::async_read_header(s, impl_->buffer, p, h); },
            timeout);
    }
    while (!ec && !p.is_done() && p.get().body().find(needle) == std::string::npos) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        ec = impl_->with_stream(
            [&](auto& s, auto h) { beast_http::async_read_some(s, impl_->buffer, p, h); },
            std::max(left, std::chrono::milliseconds(1)));
    }
    auto r = from_parser(p, ec);
    r.complete = !ec && p.is_done();
    return r;
}

response client::read_rest(response, std::chrono::milliseconds timeout) {
    auto& p = *impl_->parser;
    error_code ec;
    if (!p.is_done()) {
        ec = impl_->with_stream(
            [&](auto& s, auto h) { beast_http::async_read(s, impl_->buffer, p, h); }, timeout);
    }
    return from_parser(p, ec);
}

std::string client::read_all_raw(std::chrono::milliseconds timeout) {
    return read_to_close(timeout).bytes;
}

client::raw_read client::read_to_close(std::chrono::milliseconds timeout) {
    raw_read result;
    std::string& out = result.bytes;
    out.assign(static_cast<const char*>(impl_->buffer.data().data()), impl_->buffer.size());
    impl_->buffer.consume(impl_->buffer.size());
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        char chunk[4096];
        std::size_t got = 0;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            break;
        auto ec = impl_->with_stream(
            [&](auto& s, auto h) {
                s.async_read_some(asio::buffer(chunk), [&, h](error_code e, std::size_t n) {
                    got = n;
                    h(e, n);
                });
            },
            left);
        out.append(chunk, got);
        if (ec) {
            result.closed = ec != beast::error::timeout && ec != asio::error::timed_out;
            break;
        }
    }
    return result;
}

bool client::closed_by_peer(std::chrono::milliseconds timeout) {
    char byte;
    auto ec = impl_->with_stream(
        [&](auto& s, auto h) { s.async_read_some(asio::buffer(&byte, 1), h); }, timeout);
    return ec && ec != beast::error::timeout && ec != asio::error::timed_out;
}

void client::send_last(const std::string& bytes) {
    auto& socket = impl_->tcp().socket();
    set_cork(socket.native_handle(), true);  // the shutdown's FIN joins the bytes' segment
    send_raw(bytes);
    socket.shutdown(asio::ip::tcp::socket::shutdown_send);
}

void client::send_with_urgent_byte(const std::string& before, char urgent,
                                   const std::string& after) {
    const int fd = impl_->tcp().socket().native_handle();
    set_cork(fd, true);
    send_raw(before);
    if (::send(fd, &urgent, 1, MSG_OOB) != 1)
        throw std::runtime_error("send MSG_OOB failed");
    send_raw(after);
    set_cork(fd, false);
}

void client::close() {
    error_code ignored;
    impl_->tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    impl_->tcp().socket().close(ignored);
}

void client::close_with_reset() {
    auto& socket = impl_->tcp().socket();
    const ::linger abort{1, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    error_code ignored;
    socket.close(ignored);
}

response request(std::uint16_t port, const std::string& method, const std::string& target,
                 const std::string& body,
                 const std::vector<std::pair<std::string, std::string>>& headers) {
    client c(port);
    c.send(method, target, body, headers);
    return c.read();
}

std::string chat_body(const std::string& prompt, bool stream, const std::string& mock) {
    std::string body =
        R"({"model":"sonar","messages":[{"role":"user","content":")" + prompt + R"("}])";
    if (stream)
        body += R"(,"stream":true)";
    if (!mock.empty())
        body += R"(,"mock":)" + mock;
    body += "}";
    return body;
}

void set_cork(int fd, bool on) {
    const int value = on ? 1 : 0;
    ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

std::string sha256_hex(const std::string& data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
    std::string hex;
    char buf[3];
    for (unsigned i = 0; i < len; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", digest[i]);
        hex += buf;
    }
    return hex;
}

std::optional<double> find_metric(std::uint16_t admin_port, const std::string& series) {
    const auto r = request(admin_port, "GET", "/metrics", "");
    if (r.status != 200)
        throw std::runtime_error("GET /metrics: status " + std::to_string(r.status));
    const std::string prefix = series + " ";
    for (std::size_t at = 0; at < r.body.size();) {
        const auto end = std::min(r.body.find('\n', at), r.body.size());
        const std::string_view line(r.body.data() + at, end - at);
        if (line.starts_with(prefix))
            return std::stod(std::string(line.substr(prefix.size())));
        at = end + 1;
    }
    return std::nullopt;
}

double metric_value(std::uint16_t admin_port, const std::string& series) {
    const auto v = find_metric(admin_port, series);
    if (!v)
        throw std::runtime_error("/metrics has no series " + series);
    return *v;
}

mock_answer answered_by(const response& r) {
    const auto id = r.header("x-request-id");  // mock-<seq>-<tag>
    mock_answer a;
    const auto dash = id.rfind('-');
    if (!id.starts_with("mock-") || dash == std::string::npos || dash <= 5)
        return a;
    a.seq = std::stoull(id.substr(5, dash - 5));
    a.body_tag = id.substr(dash + 1);
    return a;
}

std::string body_tag(const std::string& request_body) {
    return sha256_hex(request_body).substr(0, 8);
}

std::string certs_dir() {
    return COALESCER_TEST_CERTS;
}

}  // namespace coalescer::test
