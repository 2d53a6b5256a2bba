// Tests of the mock provider itself: real sockets on 127.0.0.1, port 0, a tiny blocking client.
#include "mock_server.hpp"
#include "doctest_main.hpp"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
namespace ssl = asio::ssl;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;
using coalescer::mock::mock_options;
using coalescer::mock::mock_server;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr auto op_timeout = 10s;

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
    std::string out;
    char hex[3];
    for (unsigned int i = 0; i < len; ++i) {
        std::snprintf(hex, sizeof hex, "%02x", md[i]);
        out += hex;
    }
    return out;
}

struct response {
    unsigned status = 0;  // 0: no response head arrived
    unsigned version = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
    error_code ec;  // how reading ended (success, partial_message, end_of_stream, ...)

    std::string header(const std::string& name) const {
        const auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
    json::value json_body() const { return json::parse(body); }
};

struct header_list : std::vector<std::pair<std::string, std::string>> {
    using vector::vector;
};

// A blocking HTTP/1.x client over one connection (plain or TLS). Each call runs the io_context
// until the operation is done; every operation has a deadline.
class client {
  public:
    explicit client(std::uint16_t port, ssl::context* tls = nullptr) : port_(port) {
        if (tls != nullptr) {
            tls_.emplace(ioc_, *tls);
        } else {
            tcp_.emplace(ioc_);
        }
    }

    bool connect() {
        if (tls_) {
            return run(connect_op(*tls_));
        }
        return run(connect_op(*tcp_));
    }

    response request(beast_http::verb method, std::string target, std::string body = {},
                     header_list headers = {}, unsigned version = 11) {
        auto req = make_request(method, std::move(target), std::move(body), headers, version);
        if (tls_) {
            return run(exchange(*tls_, std::move(req), true));
        }
        return run(exchange(*tcp_, std::move(req), true));
    }

    response post(const std::string& body,
                  header_list headers = {{"authorization", "Bearer key-a"}},
                  unsigned version = 11) {
        return request(beast_http::verb::post, "/chat/completions", body, std::move(headers),
                       version);
    }

    // Sends a request and does not wait for the answer.
    void send(const std::string& body, header_list headers = {}) {
        auto req = make_request(beast_http::verb::post, "/chat/completions", body, headers, 11);
        if (tls_) {
            run(exchange(*tls_, std::move(req), false));
        } else {
            run(exchange(*tcp_, std::move(req), false));
        }
    }

    response read_response() {
        if (tls_) {
            return run(read_op(*tls_));
        }
        return run(read_op(*tcp_));
    }

    // Raw bytes out; then everything until the server closes (or the deadline).
    void write_raw(const std::string& bytes) { run(write_raw_op(*tcp_, bytes)); }
    std::string read_until_close() { return run(read_all_op(*tcp_)); }

    void close() {
        error_code ec;
        if (tls_) {
            beast::get_lowest_layer(*tls_).socket().close(ec);
        } else {
            tcp_->socket().close(ec);
        }
    }

  private:
    template <class T>
    T run(asio::awaitable<T> op) {
        auto result = asio::co_spawn(ioc_, std::move(op), asio::use_future);
        ioc_.restart();
        ioc_.run();
        return result.get();
    }

    static beast_http::request<beast_http::string_body> make_request(beast_http::verb method,
                                                                     std::string target,
                                                                     std::string body,
                                                                     const header_list& headers,
                                                                     unsigned version) {
        beast_http::request<beast_http::string_body> req{method, target, version};
        req.set(beast_http::field::host, "127.0.0.1");
        for (const auto& [name, value] : headers) {
            req.set(name, value);
        }
        if (method == beast_http::verb::post &&
            req.find(beast_http::field::content_type) == req.end()) {
            req.set(beast_http::field::content_type, "application/json");
        }
        req.body() = std::move(body);
        if (method == beast_http::verb::post || !req.body().empty()) {
            req.prepare_payload();
        }
        if (version == 10) {
            req.keep_alive(false);
        }
        return req;
    }

    template <class Stream>
    asio::awaitable<bool> connect_op(Stream& s) {
        auto& lowest = beast::get_lowest_layer(s);
        lowest.expires_after(op_timeout);
        auto [ec] = co_await lowest.async_connect(
            tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), use_tuple);
        if (ec) {
            co_return false;
        }
        if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
            lowest.expires_after(op_timeout);
            auto [hec] = co_await s.async_handshake(ssl::stream_base::client, use_tuple);
            co_return !hec;
        }
        co_return true;
    }

    template <class Stream>
    asio::awaitable<response> exchange(Stream& s, beast_http::request<beast_http::string_body> req,
                                       bool read) {
        beast::get_lowest_layer(s).expires_after(op_timeout);
        auto [ec, n] = co_await beast_http::async_write(s, req, use_tuple);
        if (ec) {
            response r;
            r.ec = ec;
            co_return r;
        }
        if (!read) {
            co_return response{};
        }
        co_return co_await read_op(s);
    }

    template <class Stream>
    asio::awaitable<response> read_op(Stream& s) {
        beast_http::response_parser<beast_http::string_body> parser;
        parser.body_limit(512u << 20);
        beast::get_lowest_layer(s).expires_after(op_timeout);
        auto [ec, n] = co_await beast_http::async_read(s, buffer_, parser, use_tuple);
        response r;
        r.ec = ec;
        if (parser.is_header_done()) {
            const auto& m = parser.get();
            r.status = m.result_int();
            r.version = m.version();
            for (const auto& f : m) {
                std::string name(f.name_string());
                for (auto& c : name) {
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                }
                r.headers[name] = std::string(f.value());
            }
            r.body = m.body();
        }
        co_return r;
    }

    asio::awaitable<bool> write_raw_op(beast::tcp_stream& s, std::string bytes) {
        s.expires_after(op_timeout);
        auto [ec, n] = co_await asio::async_write(s, asio::buffer(bytes), use_tuple);
        co_return !ec;
    }

    asio::awaitable<std::string> read_all_op(beast::tcp_stream& s) {
        std::string out(static_cast<const char*>(buffer_.data().data()), buffer_.size());
        buffer_.consume(buffer_.size());
        std::array<char, 4096> chunk;
        for (;;) {
            s.expires_after(5s);
            auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
            out.append(chunk.data(), n);
            if (ec) {
                break;
            }
        }
        co_return out;
    }

    std::uint16_t port_;
    asio::io_context ioc_;
    std::optional<beast::tcp_stream> tcp_;
    std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
    beast::flat_buffer buffer_;
};

std::unique_ptr<mock_server> start_mock(mock_options o = {}) {
    auto s = std::make_unique<mock_server>(std::move(o));
    s->start();
    return s;
}

response one_call(std::uint16_t port, const std::string& body,
                  header_list headers = {{"authorization", "Bearer key-a"}}) {
    client c(port);
    REQUIRE(c.connect());
    return c.post(body, std::move(headers));
}

std::string chat_body(const std::string& prompt, bool stream = false,
                      const std::string& mock = {}) {
    std::string body =
        R"({"model":"sonar","messages":[{"role":"user","content":")" + prompt + R"("}])";
    if (stream) {
        body += R"(,"stream":true)";
    }
    if (!mock.empty()) {
        body += R"(,"mock":)" + mock;
    }
    return body + "}";
}

struct sse {
    std::vector<json::object> events;  // parsed JSON payloads, in order
    int done = 0;                      // how many `data: [DONE]`
};

sse parse_sse(const std::string& body) {
    sse out;
    std::size_t pos = 0;
    while (pos < body.size()) {
        const auto end = body.find("\n\n", pos);
        if (end == std::string::npos) {
            break;
        }
        const std::string event = body.substr(pos, end - pos);
        pos = end + 2;
        REQUIRE(event.rfind("data: ", 0) == 0);
        const std::string data = event.substr(6);
        if (data == "[DONE]") {
            ++out.done;
        } else {
            out.events.push_back(json::parse(data).as_object());
        }
    }
    CHECK(pos == body.size());
    return out;
}

std::string content_of(const json::object& completion) {
    return std::string(completion.at("choices")
                           .as_array()
                           .at(0)
                           .as_object()
                           .at("message")
                           .as_object()
                           .at("content")
                           .as_string());
}

std::string tenant_of(const std::string& auth) {
    return "tenant " + sha256_hex(auth).substr(0, 8);
}

template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(2ms);
    }
    return true;
}

}  // namespace

TEST_CASE("json call: Perplexity shape, tenant marker, accounting") {
    auto mock = start_mock();
    const std::string body = chat_body("who maintains the kernel?");
    const auto r = one_call(mock->port(), body);
    REQUIRE(r.status == 200);
    CHECK(r.header("content-type") == "application/json");
    CHECK(r.header("content-length") == std::to_string(r.body.size()));
    const auto j = r.json_body().as_object();
    const std::string id(j.at("id").as_string());
    CHECK(id == "mock-1-" + sha256_hex(body).substr(0, 8));
    CHECK(r.header("x-request-id") == id);
    CHECK(j.at("object").as_string() == "chat.completion");
    CHECK(j.at("model").as_string() == "sonar");
    const auto& choice = j.at("choices").as_array().at(0).as_object();
    CHECK(choice.at("finish_reason").as_string() == "stop");
    CHECK(choice.at("delta").as_object().at("content").as_string() == "");
    CHECK(content_of(j).find(tenant_of("Bearer key-a")) != std::string::npos);
    const auto& usage = j.at("usage").as_object();
    CHECK(usage.at("total_tokens").to_number<std::uint64_t>() ==
          usage.at("prompt_tokens").to_number<std::uint64_t>() +
              usage.at("completion_tokens").to_number<std::uint64_t>());
    CHECK(j.at("citations").as_array().size() == 2);

    const auto st = mock->stats();
    CHECK(st.calls == 1);
    CHECK(st.connections == 1);
    CHECK(st.completed == 1);
    CHECK(st.aborted == 0);
    CHECK(st.in_flight == 0);
    CHECK(st.calls_per_path.at("/chat/completions") == 1);
    const auto calls = mock->calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].seq == 1);
    CHECK(calls[0].method == "POST");
    CHECK(calls[0].body_sha256 == sha256_hex(body));
    CHECK(calls[0].auth_sha256 == sha256_hex("Bearer key-a"));
    CHECK(calls[0].headers.at("authorization") == "Bearer key-a");
    CHECK(calls[0].status == 200);
    CHECK(calls[0].completed);
    CHECK_FALSE(calls[0].stream);
    CHECK(calls[0].bytes_sent > r.body.size());
}

TEST_CASE("sse call: events, cumulative usage and message, [DONE]") {
    auto mock = start_mock();
    const auto r = one_call(mock->port(), chat_body("stream me", true));
    REQUIRE(r.status == 200);
    CHECK(!r.ec);
    CHECK(r.header("content-type") == "text/event-stream");
    CHECK(r.header("cache-control") == "no-cache");
    CHECK(r.header("transfer-encoding") == "chunked");
    const auto s = parse_sse(r.body);
    REQUIRE(s.events.size() == 5);
    CHECK(s.done == 1);
    std::uint64_t last_tokens = 0;
    std::string joined;
    for (std::size_t i = 0; i < s.events.size(); ++i) {
        const auto& e = s.events[i];
        CHECK(e.at("object").as_string() == "chat.completion.chunk");
        CHECK(e.at("id") == s.events[0].at("id"));
        const auto& usage = e.at("usage").as_object();
        const auto tokens = usage.at("completion_tokens").to_number<std::uint64_t>();
        CHECK(tokens > last_tokens);
        last_tokens = tokens;
        const auto& choice = e.at("choices").as_array().at(0).as_object();
        joined += std::string(choice.at("delta").as_object().at("content").as_string());
        CHECK(content_of(e) == joined);
        if (i + 1 < s.events.size()) {
            CHECK(choice.at("finish_reason").is_null());
        } else {
            CHECK(choice.at("finish_reason").as_string() == "stop");
        }
    }
    CHECK(joined.find(tenant_of("Bearer key-a")) != std::string::npos);
    CHECK(r.header("x-request-id") == std::string(s.events[0].at("id").as_string()));

    SUBCASE("no [DONE], other object, other chunk count, timestamps") {
        const auto r2 = one_call(
            mock->port(),
            chat_body(
                "stream me", true,
                R"({"done":false,"chunks":3,"object":"chat.completion","timestamps":true,"chunk_interval_ms":0})"));
        REQUIRE(r2.status == 200);
        const auto s2 = parse_sse(r2.body);
        CHECK(s2.events.size() == 3);
        CHECK(s2.done == 0);
        CHECK(s2.events[0].at("object").as_string() == "chat.completion");
        CHECK(s2.events[0].at("mock_sent_us").to_number<std::int64_t>() > 0);
    }
    const auto calls = mock->calls();
    REQUIRE(!calls.empty());
    CHECK(calls[0].stream);
    CHECK(calls[0].completed);
}

TEST_CASE("server options: no [DONE], object, chunks") {
    mock_options o;
    o.send_done = false;
    o.object = "chat.completion";
    o.chunks = 2;
    o.chunk_interval_ms = 1;
    auto mock = start_mock(o);
    const auto s = parse_sse(one_call(mock->port(), chat_body("x", true)).body);
    CHECK(s.events.size() == 2);
    CHECK(s.done == 0);
    CHECK(s.events[1].at("object").as_string() == "chat.completion");
}

TEST_CASE("schedule absolute: events stamped with the times they were due") {
    auto mock = start_mock();
    const auto stamp = [](const json::object& e) {
        return e.at("mock_sent_us").to_number<std::int64_t>();
    };
    const auto now_us = [] {
        return std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    };
    const std::int64_t before = now_us();
    const auto r = one_call(
        mock->port(),
        chat_body("on time", true,
                  R"({"chunks":4,"chunk_interval_ms":25,"latency_ms":30,"timestamps":true,)"
                  R"("schedule":"absolute"})"));
    const std::int64_t after = now_us();
    REQUIRE(r.status == 200);
    const auto s = parse_sse(r.body);
    REQUIRE(s.events.size() == 4);
    // Event i is due exactly 25 ms * i after event 0, whatever the timer's lateness.
    for (std::size_t i = 1; i < s.events.size(); ++i)
        CHECK(stamp(s.events[i]) - stamp(s.events[0]) == 25'000 * static_cast<std::int64_t>(i));
    // Event 0 is due 30 ms after the request arrived, and nothing is sent before it is due.
    CHECK(stamp(s.events[0]) >= before + 30'000);
    CHECK(after >= stamp(s.events[3]));

    // Relative (the default) and anything else.
    const auto rel =
        one_call(mock->port(), chat_body("relative", true,
                                         R"({"chunks":2,"chunk_interval_ms":0,"timestamps":true,)"
                                         R"("schedule":"relative"})"));
    CHECK(rel.status == 200);
    CHECK(one_call(mock->port(), chat_body("x", true, R"({"schedule":"sometimes"})")).status ==
          400);
    CHECK(one_call(mock->port(), chat_body("x", true, R"({"schedule":true})")).status == 400);
}

TEST_CASE("same body twice: same content, different ids, and different bodies differ") {
    auto mock = start_mock();
    const std::string body = chat_body("same question");
    const auto a = one_call(mock->port(), body).json_body().as_object();
    const auto b = one_call(mock->port(), body).json_body().as_object();
    CHECK(content_of(a) == content_of(b));
    CHECK(a.at("id") != b.at("id"));
    CHECK(std::string(b.at("id").as_string()).rfind("mock-2-", 0) == 0);
    const auto c = one_call(mock->port(), chat_body("another question")).json_body().as_object();
    CHECK(content_of(c) != content_of(a));
    const auto st = mock->stats();
    CHECK(st.calls == 3);
    CHECK(st.calls_per_body_hash.at(sha256_hex(body)) == 2);
    CHECK(st.calls_per_body_hash.size() == 2);
}

TEST_CASE("tenants: Authorization and x-api-key give different markers") {
    auto mock = start_mock();
    const std::string body = chat_body("tenant test");
    const auto a = content_of(
        one_call(mock->port(), body, {{"authorization", "Bearer A"}}).json_body().as_object());
    const auto b = content_of(
        one_call(mock->port(), body, {{"authorization", "Bearer B"}}).json_body().as_object());
    const auto k = content_of(
        one_call(mock->port(), body, {{"x-api-key", "sk-ant-1"}}).json_body().as_object());
    const auto none = content_of(one_call(mock->port(), body, {}).json_body().as_object());
    CHECK(a.find(tenant_of("Bearer A")) != std::string::npos);
    CHECK(b.find(tenant_of("Bearer B")) != std::string::npos);
    CHECK(a.find(tenant_of("Bearer B")) == std::string::npos);
    CHECK(k.find(tenant_of("sk-ant-1")) != std::string::npos);
    CHECK(none.find("tenant none") != std::string::npos);
    const auto calls = mock->calls();
    REQUIRE(calls.size() == 4);
    CHECK(calls[2].auth_sha256 == sha256_hex("sk-ant-1"));
    CHECK(calls[3].auth_sha256.empty());
}

TEST_CASE("fail_times: 429 twice, then 200") {
    auto mock = start_mock();
    const std::string body =
        chat_body("rate me", false,
                  R"({"status":429,"retry_after":"1","retry_after_ms":250,"fail_times":2})");
    client c(mock->port());
    REQUIRE(c.connect());
    for (int i = 0; i < 2; ++i) {
        const auto r = c.post(body);
        REQUIRE(r.status == 429);
        CHECK(r.header("retry-after") == "1");
        CHECK(r.header("retry-after-ms") == "250");
        CHECK(r.header("content-type") == "application/json");
        const auto err = r.json_body().at("error").as_object();
        CHECK(err.at("code").to_number<int>() == 429);
        CHECK(err.at("type").as_string() == "mock_error");
        CHECK(err.at("message").as_string() == "mock injected 429");
    }
    const auto ok = c.post(body);
    CHECK(ok.status == 200);
    CHECK(ok.header("retry-after").empty());
    CHECK(mock->stats().calls == 3);
    CHECK(mock->stats().connections == 1);

    SUBCASE("without fail_times the status always applies, also to streams") {
        const auto r = c.post(
            chat_body("down", true, R"({"status":503,"headers":{"x-should-retry":"false"}})"));
        CHECK(r.status == 503);
        CHECK(r.header("x-should-retry") == "false");
        CHECK(c.post(chat_body("down", true, R"({"status":503})")).status == 503);
    }
}

TEST_CASE("drop_after: the client sees a truncated chunked body") {
    auto mock = start_mock();
    const auto r =
        one_call(mock->port(), chat_body("cut", true, R"({"drop_after":2,"chunk_interval_ms":5})"));
    CHECK(r.status == 200);
    CHECK(r.ec == beast_http::error::partial_message);
    const auto s = parse_sse(r.body);
    CHECK(s.events.size() == 2);
    CHECK(s.done == 0);
    REQUIRE(wait_for([&] { return mock->stats().in_flight == 0; }, 1000ms));
    const auto st = mock->stats();
    CHECK(st.completed == 0);
    CHECK(st.aborted == 0);
    const auto calls = mock->calls();
    REQUIRE(calls.size() == 1);
    CHECK_FALSE(calls[0].completed);
    CHECK_FALSE(calls[0].aborted);
    CHECK(calls[0].stream);
}

TEST_CASE("drop_before_head, error_after, stall") {
    auto mock = start_mock();
    SUBCASE("drop_before_head: no response at all") {
        const auto r =
            one_call(mock->port(), chat_body("gone", false, R"({"drop_before_head":true})"));
        CHECK(r.status == 0);
        CHECK(r.ec);
        CHECK(mock->stats().calls == 1);
    }
    SUBCASE("error_after: an error event inside a 200 stream") {
        const auto r = one_call(
            mock->port(), chat_body("err", true, R"({"error_after":1,"chunk_interval_ms":0})"));
        CHECK(r.status == 200);
        CHECK(!r.ec);
        const auto s = parse_sse(r.body);
        REQUIRE(s.events.size() == 2);
        CHECK(s.events[1].contains("error"));
        CHECK(s.done == 0);
    }
    SUBCASE("stall_after: a pause in the middle of the stream") {
        const auto t0 = std::chrono::steady_clock::now();
        const auto r = one_call(
            mock->port(),
            chat_body("stall", true,
                      R"({"chunks":3,"chunk_interval_ms":0,"stall_after":1,"stall_ms":300})"));
        const auto took = std::chrono::steady_clock::now() - t0;
        CHECK(r.status == 200);
        CHECK(parse_sse(r.body).events.size() == 3);
        CHECK(took >= 300ms);
    }
}

TEST_CASE("keep-alive: two requests on one connection") {
    auto mock = start_mock();
    client c(mock->port());
    REQUIRE(c.connect());
    CHECK(c.post(chat_body("one")).status == 200);
    CHECK(c.post(chat_body("two", true)).status == 200);
    CHECK(c.post(chat_body("three")).status == 200);
    const auto st = mock->stats();
    CHECK(st.connections == 1);
    CHECK(st.calls == 3);
    const auto calls = mock->calls();
    REQUIRE(calls.size() == 3);
    CHECK(calls[0].connection_id == calls[1].connection_id);
    CHECK(calls[1].connection_id == calls[2].connection_id);
}

TEST_CASE("pipelined requests and Expect: 100-continue") {
    auto mock = start_mock();
    const std::string b1 = chat_body("first", false, R"({"latency_ms":50})");
    const std::string b2 = chat_body("second");
    const auto req = [](const std::string& b, bool close) {
        return "POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
               std::string(close ? "Connection: close\r\n" : "") +
               "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
    };
    {
        client c(mock->port());
        REQUIRE(c.connect());
        c.write_raw(req(b1, false) + req(b2, true));
        const std::string all = c.read_until_close();
        CHECK(all.find("mock-1-" + sha256_hex(b1).substr(0, 8)) != std::string::npos);
        CHECK(all.find("mock-2-" + sha256_hex(b2).substr(0, 8)) != std::string::npos);
        CHECK(all.find("mock-1-") < all.find("mock-2-"));
    }
    {
        client c(mock->port());
        REQUIRE(c.connect());
        c.write_raw(
            "POST /chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            "Content-Length: " +
            std::to_string(b2.size()) + "\r\n\r\n");
        const auto interim = c.read_response();
        CHECK(interim.status == 100);
        c.write_raw(b2);
        const auto r = c.read_response();
        CHECK(r.status == 200);
    }
    CHECK(mock->stats().calls == 3);
    CHECK(mock->stats().aborted == 0);
}

TEST_CASE("abort: a client that hangs up during latency is seen at once") {
    auto mock = start_mock();
    client c(mock->port());
    REQUIRE(c.connect());
    c.send(chat_body("slow", false, R"({"latency_ms":2000})"));
    REQUIRE(wait_for([&] { return mock->stats().in_flight == 1; }, 1000ms));
    std::this_thread::sleep_for(50ms);
    const auto t0 = std::chrono::steady_clock::now();
    c.close();
    REQUIRE(wait_for([&] { return mock->stats().aborted == 1; }, 500ms));
    const auto took = std::chrono::steady_clock::now() - t0;
    MESSAGE(
        "abort seen after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                            << " ms");
    CHECK(took < 100ms);
    const auto st = mock->stats();
    CHECK(st.in_flight == 0);
    CHECK(st.completed == 0);
    const auto calls = mock->calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].aborted);
    CHECK(calls[0].status == 0);
}

TEST_CASE("abort: a client that hangs up mid-stream") {
    auto mock = start_mock();
    client c(mock->port());
    REQUIRE(c.connect());
    c.send(chat_body("long", true, R"({"chunks":100,"chunk_interval_ms":50})"));
    REQUIRE(wait_for([&] { return mock->calls().size() == 1 && mock->calls()[0].status == 200; },
                     1000ms));
    std::this_thread::sleep_for(120ms);
    c.close();
    REQUIRE(wait_for([&] { return mock->stats().aborted == 1; }, 500ms));
    CHECK(mock->stats().in_flight == 0);
    CHECK(mock->calls()[0].stream);
    CHECK(mock->calls()[0].bytes_sent > 0);
}

TEST_CASE("max_concurrency: three concurrent slow requests") {
    mock_options o;
    o.threads = 2;
    o.latency_ms = 300;
    auto mock = start_mock(o);
    std::vector<std::thread> clients;
    std::vector<unsigned> statuses(3);
    for (int i = 0; i < 3; ++i) {
        clients.emplace_back([&, i] {
            client c(mock->port());
            if (c.connect()) {
                statuses[i] = c.post(chat_body("concurrent " + std::to_string(i))).status;
            }
        });
    }
    for (auto& t : clients) {
        t.join();
    }
    CHECK(statuses == std::vector<unsigned>{200, 200, 200});
    const auto st = mock->stats();
    CHECK(st.max_concurrency == 3);
    CHECK(st.in_flight == 0);
    CHECK(st.calls == 3);
    CHECK(st.connections == 3);
}

TEST_CASE("control endpoints over HTTP: /__stats, /__calls, /__reset, /models") {
    auto mock = start_mock();
    client c(mock->port());
    REQUIRE(c.connect());
    const std::string body = chat_body("count me");
    REQUIRE(c.post(body).status == 200);

    const auto models = c.request(beast_http::verb::get, "/models");
    REQUIRE(models.status == 200);
    CHECK(models.json_body().at("data").as_array().at(0).at("id").as_string() == "sonar");

    const auto stats = c.request(beast_http::verb::get, "/__stats");
    REQUIRE(stats.status == 200);
    const auto j = stats.json_body().as_object();
    CHECK(j.at("calls").to_number<int>() == 1);
    CHECK(j.at("connections").to_number<int>() == 1);
    CHECK(j.at("completed").to_number<int>() == 1);
    CHECK(j.at("in_flight").to_number<int>() == 0);
    CHECK(j.at("calls_per_path").at("/chat/completions").to_number<int>() == 1);
    CHECK(j.at("calls_per_body_hash").at(sha256_hex(body)).to_number<int>() == 1);

    const auto calls = c.request(beast_http::verb::get, "/__calls");
    REQUIRE(calls.status == 200);
    const auto arr = calls.json_body().as_array();
    REQUIRE(arr.size() == 1);
    CHECK(arr[0].at("headers").at("authorization").as_string() == "Bearer key-a");
    CHECK(arr[0].at("body_sha256").as_string() == sha256_hex(body));
    CHECK(arr[0].at("completed").as_bool());

    const auto reset = c.request(beast_http::verb::post, "/__reset");
    CHECK(reset.status == 204);
    const auto st = mock->stats();
    CHECK(st.calls == 0);
    CHECK(st.connections == 0);
    CHECK(st.completed == 0);
    CHECK(st.calls_per_body_hash.empty());
    CHECK(mock->calls().empty());
    const auto after = c.request(beast_http::verb::get, "/__stats").json_body();
    CHECK(after.at("calls").to_number<int>() == 0);

    // Calls continue with fresh sequence numbers, never reused.
    const auto again = c.post(body).json_body();
    CHECK(std::string(again.at("id").as_string()).rfind("mock-2-", 0) == 0);
    CHECK(mock->stats().calls == 1);
    CHECK(mock->calls().at(0).seq == 2);
}

TEST_CASE("errors: bad JSON and missing fields are 400 calls, unknown path 404, garbage 400") {
    auto mock = start_mock();
    client c(mock->port());
    REQUIRE(c.connect());
    const auto not_json = c.post("this is not json");
    CHECK(not_json.status == 400);
    CHECK(not_json.json_body().at("error").at("type").as_string() == "invalid_request");
    CHECK(not_json.json_body().at("error").at("code").to_number<int>() == 400);
    CHECK(c.post(R"({"model":"sonar"})").status == 400);
    CHECK(c.post(R"({"messages":[]})").status == 400);
    CHECK(c.post(chat_body("x", false, R"({"latancy_ms":5})")).status == 400);
    CHECK(c.post(chat_body("x", false, R"({"status":"429"})")).status == 400);
    const auto unknown = c.request(beast_http::verb::post, "/async/chat/completions", "{}");
    CHECK(unknown.status == 404);
    CHECK(c.request(beast_http::verb::get, "/__reset").status == 405);
    const auto st = mock->stats();
    CHECK(st.calls == 6);
    CHECK(st.calls_per_path.at("/async/chat/completions") == 1);

    client g(mock->port());
    REQUIRE(g.connect());
    g.write_raw("GARBAGE GARBAGE GARBAGE\r\n\r\n");
    const std::string reply = g.read_until_close();
    CHECK(reply.rfind("HTTP/1.1 400", 0) == 0);

    client both(mock->port());
    REQUIRE(both.connect());
    both.write_raw(
        "POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    CHECK(both.read_until_close().rfind("HTTP/1.1 400", 0) == 0);

    client huge(mock->port());
    REQUIRE(huge.connect());
    huge.write_raw("GET /__stats HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70 * 1024, 'a') +
                   "\r\n\r\n");
    CHECK(huge.read_until_close().rfind("HTTP/1.1 431", 0) == 0);
    CHECK(mock->stats().calls == 6);  // none of these reached a call
}

TEST_CASE("HTTP/1.0: JSON with Content-Length, SSE delimited by close") {
    auto mock = start_mock();
    {
        client c(mock->port());
        REQUIRE(c.connect());
        const auto r = c.post(chat_body("old"), {}, 10);
        CHECK(r.status == 200);
        CHECK(r.version == 10);
    }
    {
        client c(mock->port());
        REQUIRE(c.connect());
        const auto r = c.post(chat_body("old", true), {}, 10);
        CHECK(r.status == 200);
        CHECK(r.header("transfer-encoding").empty());
        const auto s = parse_sse(r.body);
        CHECK(s.events.size() == 5);
        CHECK(s.done == 1);
    }
    CHECK(mock->stats().completed == 2);
}

TEST_CASE("body_bytes pads a JSON answer") {
    auto mock = start_mock();
    const auto r = one_call(mock->port(), chat_body("big", false, R"({"body_bytes":200000})"));
    REQUIRE(r.status == 200);
    CHECK(r.body.size() >= 199'900);
    CHECK(r.body.size() <= 200'100);
    CHECK_NOTHROW(r.json_body());
}

TEST_CASE("stop() with streams in flight") {
    mock_options o;
    o.threads = 2;
    o.chunks = 1000;
    o.chunk_interval_ms = 10;
    auto mock = start_mock(o);
    std::vector<std::thread> clients;
    std::vector<int> cut(4, 0);
    for (int i = 0; i < 4; ++i) {
        clients.emplace_back([port = mock->port(), i, &cut] {
            client c(port);
            if (c.connect()) {
                const auto r = c.post(chat_body("forever " + std::to_string(i), true));
                cut[i] = r.ec ? 1 : 0;  // cut off by stop()
            }
        });
    }
    REQUIRE(wait_for([&] { return mock->stats().in_flight == 4; }, 2000ms));
    std::this_thread::sleep_for(50ms);
    const auto t0 = std::chrono::steady_clock::now();
    mock->stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    mock->stop();  // idempotent
    for (auto& t : clients) {
        t.join();
    }
    CHECK(cut == std::vector<int>{1, 1, 1, 1});
    const auto st = mock->stats();
    CHECK(st.in_flight == 0);
    CHECK(st.aborted == 4);
}

TEST_CASE("https with a self-signed certificate") {
    if (std::system("openssl version >/dev/null 2>&1") != 0) {
        coalescer::test::skip_test("the openssl command-line tool is not installed");
        return;
    }
    char dir_template[] = "/tmp/mock-tls-XXXXXX";
    const char* dir = mkdtemp(dir_template);
    REQUIRE(dir != nullptr);
    const std::string d(dir);
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-days 1 -subj /CN=localhost -keyout " +
        d + "/key.pem -out " + d + "/cert.pem >/dev/null 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);

    mock_options o;
    o.tls_cert_file = d + "/cert.pem";
    o.tls_key_file = d + "/key.pem";
    auto mock = start_mock(o);
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_verify_mode(ssl::verify_peer);
    ctx.load_verify_file(d + "/cert.pem");
    {
        client c(mock->port(), &ctx);
        REQUIRE(c.connect());
        const auto r = c.post(chat_body("secure"));
        CHECK(r.status == 200);
        CHECK(content_of(r.json_body().as_object()).find(tenant_of("Bearer key-a")) !=
              std::string::npos);
        const auto s = c.post(chat_body("secure", true));
        CHECK(s.status == 200);
        CHECK(parse_sse(s.body).events.size() == 5);
    }
    {
        client c(mock->port(), &ctx);
        REQUIRE(c.connect());
        c.send(chat_body("slow", false, R"({"latency_ms":2000})"));
        REQUIRE(wait_for([&] { return mock->stats().in_flight == 1; }, 1000ms));
        c.close();
        CHECK(wait_for([&] { return mock->stats().aborted == 1; }, 500ms));
    }
    const auto st = mock->stats();
    CHECK(st.calls == 3);
    CHECK(st.completed == 2);
    mock->stop();
    std::filesystem::remove_all(d);
}
