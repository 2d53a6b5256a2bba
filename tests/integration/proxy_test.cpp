// The transparent proxy: JSON and SSE relayed as they arrive, hop-by-hop headers stripped,
// the upstream host taken from config, keep-alive upstream, and upstream failures answered
// with 502/504 (before the head) or a cut response (after it).
#include "harness.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <functional>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
        ++n;
    return n;
}

// Relay behaviour is checked twice: through a flight (/chat/completions coalesces by default)
// and through the pass-route relay, which shares no code with flights after the head.
const std::string pass_routes = "  - {prefix: /, upstream: mock, coalesce: false}\n";
const std::vector<std::string> route_kinds = {"", pass_routes};

// Waits up to 10 s for `fd` to have something to read (a connection, bytes, or the end).
bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 10'000) == 1;
}

// Whether `bytes` hold a request head and all of the body its Content-Length announces.
bool whole_request(const std::string& bytes) {
    const auto head_end = bytes.find("\r\n\r\n");
    if (head_end == std::string::npos)
        return false;
    std::string head = bytes.substr(0, head_end);
    std::transform(head.begin(), head.end(), head.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    const auto at = head.find("content-length:");
    const auto length = at == std::string::npos ? 0 : std::stoul(head.substr(at + 15));
    return bytes.size() >= head_end + 4 + length;
}

}  // namespace

TEST_CASE("a JSON chat completion is relayed, with the request forwarded byte for byte") {
    mock_and_proxy env;
    // Odd spacing on purpose: the provider must receive exactly these bytes.
    const std::string body =
        "{ \"model\" : \"sonar\", \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}] }";
    const auto r = request(env.proxy->port(), "POST", "/chat/completions", body,
                           {{"Authorization", "Bearer pplx-test"},
                            {"Connection", "keep-alive, x-private"},
                            {"X-Private", "hop"},
                            {"Keep-Alive", "timeout=5"},
                            {"Accept-Encoding", "gzip, br"},
                            {"X-Stainless-Retry-Count", "0"}});
    REQUIRE(r.status == 200);
    CHECK(r.complete);
    CHECK(r.header("content-type") == "application/json");
    CHECK(r.header("x-coalesce") == "leader");
    CHECK(!r.header("x-coalesce-flight").empty());
    const auto json = boost::json::parse(r.body);
    CHECK(json.at("object").as_string() == "chat.completion");

    const auto calls = env.mock->calls();
    REQUIRE(calls.size() == 1);
    const auto& call = calls.front();
    CHECK(call.body_sha256 == sha256_hex(body));
    CHECK(call.target == "/chat/completions");
    CHECK(call.headers.at("host") == "127.0.0.1:" + std::to_string(env.mock->port()));
    CHECK(call.headers.at("authorization") == "Bearer pplx-test");
    CHECK(call.headers.at("accept-encoding") == "identity");
    CHECK(call.headers.at("x-stainless-retry-count") == "0");
    CHECK(call.headers.count("x-private") == 0);  // named in Connection: hop-by-hop
    CHECK(call.headers.count("keep-alive") == 0);
    CHECK(call.headers.count("connection") == 0);
}

TEST_CASE("an SSE stream reaches the client event by event, before the provider has finished") {
    for (const auto& routes : route_kinds) {
        CAPTURE(routes);
        mock::mock_options options;
        options.chunks = 6;
        options.chunk_interval_ms = 150;
        mock_and_proxy env(options, "", "", routes);
        client c(env.proxy->port());
        c.send("POST", "/chat/completions", chat_body("stream me", true));
        auto first = c.read_until("\n\n");
        REQUIRE(first.status == 200);
        CHECK(first.header("content-type") == "text/event-stream");
        CHECK(first.header("transfer-encoding") == "chunked");
        CHECK(count_of(first.body, "data: ") >= 1);
        // The client holds the first event while the provider is still streaming the rest.
        const auto during = env.mock->stats();
        CHECK(during.completed == 0);
        CHECK(during.in_flight == 1);

        const auto whole = c.read_rest(first);
        CHECK(whole.complete);
        CHECK(count_of(whole.body, "data: {") == 6);
        CHECK(count_of(whole.body, "data: [DONE]") == 1);
        CHECK(env.mock->stats().completed == 1);
    }
}

TEST_CASE(
    "routes: strip_prefix and the upstream base path shape the upstream target, and no route is "
    "404") {
    mock::mock_server mock({});
    mock.start();
    const std::string routes =
        "  - {prefix: /perplexity/chat/completions, upstream: mock, strip_prefix: /perplexity, "
        "coalesce: true}\n"
        "  - {prefix: /perplexity/, upstream: mock, strip_prefix: /perplexity, coalesce: false}\n";
    running_proxy proxy(
        proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()) + "/v1", "", "", routes));
    const auto r =
        request(proxy.port(), "POST", "/perplexity/chat/completions?x=1", chat_body("routed"));
    CHECK(r.status == 200);
    CHECK(mock.calls().at(0).target == "/v1/chat/completions?x=1");
    const auto models = request(proxy.port(), "GET", "/perplexity/models", "");
    CHECK(models.status == 200);
    CHECK(models.header("x-coalesce") == "pass");
    const auto none = request(proxy.port(), "GET", "/elsewhere", "");
    CHECK(none.status == 404);
    CHECK(boost::json::parse(none.body).at("error").at("code").as_string() == "no_route");
}

TEST_CASE("upstream connections are kept alive and reused") {
    for (const auto& routes : route_kinds) {
        CAPTURE(routes);
        mock_and_proxy env({}, "", "", routes);
        client c(env.proxy->port());
        for (int i = 0; i < 6; ++i) {
            c.send("POST", "/chat/completions", chat_body("reuse " + std::to_string(i)));
            CHECK(c.read().status == 200);
        }
        // One client connection lives on one worker, whose pool hands the same idle upstream
        // connection to each of these requests in turn: one connection for all six.
        const auto stats = env.mock->stats();
        CHECK(stats.calls == 6);
        CHECK(stats.connections == 1);
    }
}

TEST_CASE("upstream statuses and error bodies pass through unchanged") {
    for (const auto& routes : route_kinds) {
        CAPTURE(routes);
        mock_and_proxy env({}, "", "", routes);
        const auto r = request(env.proxy->port(), "POST", "/chat/completions",
                               chat_body("limited", false, R"({"status":429,"retry_after":"7"})"));
        CHECK(r.status == 429);
        CHECK(r.header("retry-after") == "7");
        CHECK(boost::json::parse(r.body).at("error").at("code").as_int64() == 429);
    }
}

TEST_CASE("upstream failures before the head: refused → 502, slow head → 504, closed → 502") {
    SUBCASE("connection refused") {
        for (const auto& routes : route_kinds) {
            CAPTURE(routes);
            boost::asio::io_context io;
            boost::asio::ip::tcp::acceptor probe(io,
                                                 {boost::asio::ip::make_address("127.0.0.1"), 0});
            const auto dead_port = probe.local_endpoint().port();
            probe.close();  // nothing listens there now
            running_proxy proxy(
                proxy_yaml("http://127.0.0.1:" + std::to_string(dead_port), "", "", routes));
            const auto r = request(proxy.port(), "POST", "/chat/completions", chat_body("refused"));
            CHECK(r.status == 502);
            CHECK(boost::json::parse(r.body).at("error").at("type").as_string() ==
                  "coalescer_error");
        }
    }
    SUBCASE("head timeout") {
        for (const auto& routes : route_kinds) {
            CAPTURE(routes);
            mock_and_proxy env({}, "",
                               "    timeouts: {connect: 2s, head: 300ms, idle: 10s, total: 60s}\n",
                               routes);
            const auto r = request(env.proxy->port(), "POST", "/chat/completions",
                                   chat_body("slow", false, R"({"latency_ms":2000})"));
            CHECK(r.status == 504);
            CHECK(boost::json::parse(r.body).at("error").at("code").as_string() ==
                  "upstream_head_timeout");
        }
    }
    SUBCASE("closed without a response") {
        for (const auto& routes : route_kinds) {
            CAPTURE(routes);
            mock_and_proxy env({}, "", "", routes);
            const auto r = request(env.proxy->port(), "POST", "/chat/completions",
                                   chat_body("drop", false, R"({"drop_before_head":true})"));
            CHECK(r.status == 502);
        }
    }
}

TEST_CASE("upstream failures after the head cut the client's response instead of ending it") {
    SUBCASE("connection closed or reset mid-stream") {
        // The idle timeout is far beyond the client's patience: the close or reset itself,
        // which arrives together with the last event, must end the response.
        const std::string patient =
            "    timeouts: {connect: 2s, head: 10s, idle: 60s, total: 120s}\n";
        for (const char* drop :
             {R"({"chunks":6,"drop_after":2})", R"({"chunks":6,"drop_after":2,"drop_rst":true})"}) {
            for (const auto& routes : route_kinds) {
                CAPTURE(drop);
                CAPTURE(routes);
                mock_and_proxy env({}, "", patient, routes);
                client c(env.proxy->port());
                c.send("POST", "/chat/completions", chat_body("cut", true, drop));
                const auto r = c.read(10s);
                CHECK(r.status == 200);
                CHECK_FALSE(r.complete);
                CHECK_FALSE(r.timed_out);
                CHECK(r.body.find("data: {") != std::string::npos);
                CHECK(r.body.find("[DONE]") == std::string::npos);
            }
        }
    }
    SUBCASE("stall longer than the idle timeout") {
        for (const auto& routes : route_kinds) {
            CAPTURE(routes);
            mock_and_proxy env(
                {}, "", "    timeouts: {connect: 2s, head: 5s, idle: 300ms, total: 60s}\n", routes);
            client c(env.proxy->port());
            c.send("POST", "/chat/completions",
                   chat_body("stall", true, R"({"chunks":4,"stall_after":1,"stall_ms":3000})"));
            const auto r = c.read();
            CHECK(r.status == 200);
            CHECK_FALSE(r.complete);
        }
    }
}

TEST_CASE("an upstream body ended by the close arrives whole when the close comes with it") {
    namespace asio = boost::asio;
    using asio::ip::tcp;
    const std::string json = R"({"id":"close-delimited","object":"chat.completion"})";
    for (const auto& routes : route_kinds) {
        CAPTURE(routes);
        asio::io_context io;
        tcp::acceptor provider(io, {asio::ip::make_address("127.0.0.1"), 0});
        // A provider that frames its body by closing: head, body and FIN in one segment, so
        // nothing that comes later can wake a reader that stopped looking.
        std::thread answer([&] {
            tcp::socket s(io);
            boost::system::error_code ec;
            if (!readable(provider.native_handle()))
                return;
            provider.accept(s, ec);
            if (ec)
                return;
            std::string got;
            while (!whole_request(got) && readable(s.native_handle())) {
                char buf[4096];
                const auto n = s.read_some(asio::buffer(buf), ec);
                if (ec)
                    return;
                got.append(buf, n);
            }
            set_cork(s.native_handle(), true);
            asio::write(
                s, asio::buffer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + json),
                ec);
            s.shutdown(tcp::socket::shutdown_send, ec);
            readable(s.native_handle());  // until the proxy closes its end
        });
        running_proxy proxy(
            proxy_yaml("http://127.0.0.1:" + std::to_string(provider.local_endpoint().port()), "",
                       "    timeouts: {connect: 2s, head: 10s, idle: 60s, total: 120s}\n", routes));
        client c(proxy.port());
        c.send("POST", "/chat/completions", chat_body("close-delimited"));
        const auto r = c.read(10s);
        answer.join();
        CHECK_FALSE(r.timed_out);
        CHECK(r.status == 200);
        CHECK(r.complete);
        CHECK(r.body == json);
    }
}

TEST_CASE(
    "HTTPS upstream: a valid certificate works, and a wrong host name or an untrusted CA gives "
    "502") {
    const auto certs = certs_dir();
    auto run = [&](const std::string& leaf) {
        mock::mock_options options;
        options.tls_cert_file = certs + "/" + leaf + ".pem";
        options.tls_key_file = certs + "/" + leaf + ".key";
        mock::mock_server mock(options);
        mock.start();
        running_proxy proxy(proxy_yaml("https://localhost:" + std::to_string(mock.port()), "",
                                       "    tls: {verify: true, ca_file: " + certs + "/ca.pem}\n"));
        auto r = request(proxy.port(), "POST", "/chat/completions", chat_body("tls"));
        return std::make_pair(r, mock.stats().calls);
    };
    const auto [good, good_calls] = run("localhost");
    CHECK(good.status == 200);
    CHECK(good_calls == 1);
    const auto [wrong_host, wrong_calls] = run("other");
    CHECK(wrong_host.status == 502);
    CHECK(boost::json::parse(wrong_host.body).at("error").at("code").as_string() ==
          "upstream_tls_failed");
    CHECK(wrong_calls == 0);
    const auto [rogue, rogue_calls] = run("rogue");
    CHECK(rogue.status == 502);
    CHECK(rogue_calls == 0);
}

TEST_CASE("the TLS listener serves clients that trust its certificate") {
    mock::mock_server mock({});
    mock.start();
    const auto certs = certs_dir();
    std::string yaml = proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                                  "limits: {header_timeout: 1s}\n");
    const std::string plain_listen = "listen: {address: 127.0.0.1, port: 0}";
    yaml.replace(yaml.find(plain_listen), plain_listen.size(),
                 "listen: {address: 127.0.0.1, port: 0, tls: {cert_file: " + certs +
                     "/localhost.pem, key_file: " + certs + "/localhost.key}}");
    running_proxy proxy(yaml);
    boost::asio::ssl::context tls(boost::asio::ssl::context::tls_client);
    tls.load_verify_file(certs + "/ca.pem");
    tls.set_verify_mode(boost::asio::ssl::verify_peer);
    client c(proxy.port(), &tls);
    c.send("POST", "/chat/completions", chat_body("over tls", true));
    const auto r = c.read();
    CHECK(r.status == 200);
    CHECK(r.complete);
    CHECK(r.body.find("[DONE]") != std::string::npos);
    c.send("GET", "/models", "");
    CHECK(c.read().status == 200);  // keep-alive over TLS
    // A client that connects and never starts its handshake is dropped at header_timeout (T-09).
    client silent(proxy.port());
    CHECK(silent.closed_by_peer(5s));
}

TEST_CASE("admin endpoints: healthz, readyz and metrics with request and upstream counters") {
    mock_and_proxy env;
    CHECK(request(env.proxy->port(), "POST", "/chat/completions", chat_body("count me")).status ==
          200);
    CHECK(request(env.proxy->admin_port(), "GET", "/healthz", "").status == 200);
    CHECK(request(env.proxy->admin_port(), "GET", "/readyz", "").status == 200);
    const auto m = request(env.proxy->admin_port(), "GET", "/metrics", "");
    CHECK(m.status == 200);
    CHECK(m.header("content-type").find("text/plain") == 0);
    CHECK(m.body.find("# TYPE coalescer_requests_total counter") != std::string::npos);
    CHECK(m.body.find("coalescer_requests_total{route=\"/chat/"
                      "completions\",role=\"leader\",status_class=\"2xx\"} 1") !=
          std::string::npos);
    CHECK(m.body.find("coalescer_upstream_calls_total{upstream=\"mock\",status=\"200\"} 1") !=
          std::string::npos);
    CHECK(request(env.proxy->admin_port(), "GET", "/nope", "").status == 404);
}

TEST_CASE("an HTTP/1.0 client gets a streamed body without chunked framing, ended by the close") {
    for (const auto& routes : route_kinds) {
        CAPTURE(routes);
        mock_and_proxy env({}, "", "", routes);
        client c(env.proxy->port());
        const auto body = chat_body("old client", true);
        c.send_raw(
            "POST /chat/completions HTTP/1.0\r\nHost: localhost\r\nContent-Type: "
            "application/json\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body);
        const auto raw = c.read_all_raw(std::chrono::seconds(10));
        CHECK(raw.rfind("HTTP/1.1 200", 0) == 0);
        const auto head = raw.substr(0, raw.find("\r\n\r\n"));
        CHECK(head.find("Transfer-Encoding") == std::string::npos);
        CHECK(head.find("Connection: close") != std::string::npos);
        CHECK(raw.find("data: [DONE]") != std::string::npos);
        CHECK(raw.find("\r\n0\r\n\r\n") == std::string::npos);  // no chunk framing in the body
    }
}

TEST_CASE(
    "a pass-route client that hangs up takes its upstream call with it, before or mid-stream") {
    SUBCASE("while the provider thinks") {
        mock_and_proxy env({}, "", "", pass_routes);
        {
            client c(env.proxy->port());
            c.send("POST", "/chat/completions",
                   chat_body("leaves early", false, R"({"latency_ms": 3000})"));
            // The provider has the call (and thinks for 3 s): now the client leaves.
            REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
        }
        CHECK(eventually([&] { return env.mock->stats().aborted == 1; }, 10s));
        CHECK(env.mock->stats().calls == 1);
    }
    SUBCASE("after the first events") {
        mock_and_proxy env({}, "", "", pass_routes);
        {
            client c(env.proxy->port());
            c.send("POST", "/chat/completions",
                   chat_body("leaves mid-stream", true,
                             R"({"chunks": 40, "chunk_interval_ms": 100})"));
            const auto partial = c.read_until("data: ", 5s);
            CHECK(partial.status == 200);
        }
        CHECK(eventually([&] { return env.mock->stats().aborted == 1; }, 3s));
        CHECK(env.mock->stats().completed == 0);
    }
}

TEST_CASE("pipelined requests on a pass route are answered in order, none lost to the watch") {
    mock_and_proxy env({}, "", "", pass_routes);
    client c(env.proxy->port());
    const auto first = chat_body("first", false, R"({"latency_ms": 300})");
    const auto second = chat_body("second");
    auto request_text = [](const std::string& body) {
        return "POST /chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
               "application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
    };
    c.send_raw(request_text(first) + request_text(second));
    const auto a = c.read(10s);
    const auto b = c.read(10s);
    CHECK(a.status == 200);
    CHECK(a.complete);
    CHECK(b.status == 200);
    CHECK(b.complete);
    // Each answer is the mock's answer to its own request, in the order they were sent: the
    // mock's id names the call (seq) and the body it answered.
    CHECK(answered_by(a).body_tag == body_tag(first));
    CHECK(answered_by(b).body_tag == body_tag(second));
    CHECK(answered_by(a).seq == 1);
    CHECK(answered_by(b).seq == 2);
    CHECK(env.mock->stats().calls == 2);
    CHECK(env.mock->stats().aborted == 0);
}

TEST_CASE("204 on a pass route ends at the head, and the connection is reused") {
    mock_and_proxy env({}, "", "", pass_routes);
    client c(env.proxy->port());
    c.send("POST", "/chat/completions", chat_body("no content", false, R"({"status": 204})"));
    const auto empty = c.read(10s);
    CHECK(empty.status == 204);
    CHECK(empty.body.empty());
    CHECK(empty.complete);
    c.send("POST", "/chat/completions", chat_body("after"));
    CHECK(c.read(10s).status == 200);
    CHECK(env.mock->stats().aborted == 0);
}

TEST_CASE(
    "a pass-route client that stops reading is dropped at write_timeout, and so is its call") {
    mock_and_proxy env({}, "limits: {write_timeout: 1s}\n", "", pass_routes);
    client stuck(env.proxy->port());
    stuck.send("POST", "/chat/completions", chat_body("big", false, R"({"body_bytes":24000000})"));
    // Never reads: the relay's write stalls on a full socket until the deadline sweep cuts it.
    CHECK(eventually([&] { return env.mock->stats().aborted == 1; }, 10s));
    const auto late = stuck.read(10s);
    CHECK_FALSE(late.complete);
    const auto after = request(env.proxy->port(), "POST", "/chat/completions", chat_body("next"));
    CHECK(after.status == 200);
    CHECK(after.complete);
}

TEST_CASE("keep-alive requests that arrive in pieces, at any moment, are all read and answered") {
    // A read that believed the socket empty and waited for the next readiness event would
    // hang here on some piece: each request comes in three writes with pauses between them,
    // some right after the last answer, some pipelined behind the one before.
    mock_and_proxy env({}, "", "", pass_routes);
    client c(env.proxy->port());
    auto request_text = [](int i) {
        const auto body = chat_body("piece " + std::to_string(i));
        return "POST /chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
               "application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
    };
    int answered = 0;
    for (int i = 0; i < 60; ++i) {
        const auto text = request_text(i);
        const std::size_t cut1 = 1 + static_cast<std::size_t>(i * 7) % 40;
        const std::size_t cut2 = text.size() - 1 - static_cast<std::size_t>(i * 5) % 30;
        c.send_raw(text.substr(0, cut1));
        std::this_thread::sleep_for(std::chrono::microseconds(300 * (i % 4)));
        c.send_raw(text.substr(cut1, cut2 - cut1));
        std::this_thread::sleep_for(std::chrono::microseconds(200 * (i % 3)));
        c.send_raw(text.substr(cut2));
        if (i % 5 == 4) {
            c.send_raw(request_text(1000 + i));  // pipelined: two answers to read
            answered += c.read(5s).status == 200 ? 1 : 0;
        }
        const auto r = c.read(5s);
        REQUIRE(r.status == 200);
        CHECK(r.complete);
        ++answered;
    }
    CHECK(answered == 72);
    CHECK(env.mock->stats().calls == 72);
}

TEST_CASE("300 connections opened at once are all accepted and answered") {
    // More than one accept batch: the listener takes them in several turns of its loop.
    mock_and_proxy env({}, "", "", pass_routes);
    constexpr int n = 300;
    std::vector<std::unique_ptr<client>> clients;
    for (int i = 0; i < n; ++i)
        clients.push_back(std::make_unique<client>(env.proxy->port()));
    for (int i = 0; i < n; ++i)
        clients[i]->send("POST", "/chat/completions", chat_body("burst " + std::to_string(i)));
    int answered = 0;
    for (auto& c : clients)
        answered += c->read(10s).status == 200 ? 1 : 0;
    CHECK(answered == n);
    CHECK(env.mock->stats().calls == n);
}

// (No ';' in a test name: ctest splits the name there, and each half matches no test case.)
TEST_CASE("over max_connections a connection gets 503 and is closed, and a freed place is reused") {
    mock_and_proxy env({}, "limits: {max_connections: 2}\n", "", pass_routes);
    client a(env.proxy->port());
    client b(env.proxy->port());
    for (auto* c : {&a, &b}) {
        c->send("POST", "/chat/completions", chat_body("held"));
        REQUIRE(c->read().status == 200);  // both sessions are open and counted
    }
    client third(env.proxy->port());
    const auto refused = third.read(5s);
    CHECK(refused.status == 503);
    CHECK(third.closed_by_peer());
    a.close();
    CHECK(eventually([&] {
        return request(env.proxy->port(), "POST", "/chat/completions", chat_body("after")).status ==
               200;
    }));
    b.send("POST", "/chat/completions", chat_body("still held"));
    CHECK(b.read().status == 200);
}

TEST_CASE("idle upstream connections are kept up to max_concurrent: a second burst opens none") {
    // 160 clients on 2 workers keep 80 upstream connections busy on each; a pool that kept
    // fewer idle ones would close some after the first burst and open them again for the next.
    mock::mock_options options;
    options.latency_ms = 2000;  // every call of a burst overlaps every other, even under TSan
    mock_and_proxy env(options, "", "    max_concurrent: 256\n", pass_routes);
    constexpr int n = 160;
    std::vector<std::unique_ptr<client>> clients;
    for (int i = 0; i < n; ++i)
        clients.push_back(std::make_unique<client>(env.proxy->port()));
    auto burst = [&](int round) {
        std::atomic<int> answered{0};
        // Every thread is started before any sends: starting 160 threads under TSan on a busy
        // machine can take longer than a call, and a call that ended before the last one began
        // would lend it its connection.
        std::latch started(n);
        std::vector<std::thread> threads;
        for (int i = 0; i < n; ++i) {
            threads.emplace_back([&, i] {
                const auto prompt = std::to_string(round) + " " + std::to_string(i);
                started.arrive_and_wait();
                clients[i]->send("POST", "/chat/completions", chat_body(prompt));
                answered += clients[i]->read().status == 200 ? 1 : 0;
            });
        }
        for (auto& t : threads)
            t.join();
        return answered.load();
    };
    REQUIRE(burst(1) == n);
    const auto opened = env.mock->stats().connections;
    CHECK(opened == n);
    REQUIRE(burst(2) == n);
    CHECK(env.mock->stats().connections == opened);
    CHECK(env.mock->stats().calls == 2 * n);
}

TEST_CASE("a burst of connections past max_connections: exactly the limit are served") {
    // Connections accepted in one turn and still on their way to the other worker count too.
    mock_and_proxy env({}, "limits: {max_connections: 4}\n", "", pass_routes);
    std::vector<std::unique_ptr<client>> clients;
    for (int i = 0; i < 40; ++i)
        clients.push_back(std::make_unique<client>(env.proxy->port()));
    for (auto& c : clients) {
        try {
            c->send("POST", "/chat/completions", chat_body("burst"));
        } catch (const std::exception&) {
            // refused and closed already: its read below is not a 200 either
        }
    }
    int served = 0;
    for (auto& c : clients)
        served += c->read(10s).status == 200 ? 1 : 0;
    CHECK(served == 4);
}

namespace {

// One flight whose upstream fails before the response head, shared by `n` clients: the
// leader's request first; once `in_progress` holds, n - 1 followers join it. Returns the
// leader's response first.
std::vector<response> share_a_failure(std::uint16_t port, const std::string& body, int n,
                                      const std::function<bool()>& in_progress) {
    client leader(port);
    leader.send("POST", "/chat/completions", body);
    REQUIRE(eventually(in_progress, 10s));
    std::vector<std::unique_ptr<client>> followers;
    for (int i = 1; i < n; ++i) {
        followers.push_back(std::make_unique<client>(port));
        followers.back()->send("POST", "/chat/completions", body);
    }
    std::vector<response> out;
    out.push_back(leader.read(30s));
    for (auto& f : followers)
        out.push_back(f->read(30s));
    return out;
}

// Every one of `responses` is the same sidecar error, and the metrics say they were one flight
// of responses.size() subscribers: one leader, the rest followers.
void check_one_failure_for_all(const std::vector<response>& responses, unsigned status,
                               const std::string& code, std::uint16_t admin) {
    const auto n = static_cast<double>(responses.size());
    for (const auto& r : responses) {
        CHECK(r.status == status);
        CHECK(r.complete);
        CHECK(r.header("x-coalesce-error") == code);
        CHECK(r.body == responses.front().body);
    }
    CHECK(boost::json::parse(responses.front().body).at("error").at("code").as_string() == code);
    const std::string route = R"(coalescer_requests_total{route="/chat/completions",)";
    // Counted once each delivery has ended, just after its last byte: wait for the last one.
    CHECK(eventually([&] {
        return metric_value(admin, route + R"(role="follower",status_class="5xx"})") == n - 1;
    }));
    CHECK(metric_value(admin, route + R"(role="leader",status_class="5xx"})") == 1);
    CHECK(metric_value(admin, "coalescer_subscribers_per_flight_count") == 1);
    CHECK(metric_value(admin, "coalescer_subscribers_per_flight_sum") == n);
}

}  // namespace

TEST_CASE("a failure before the head reaches every subscriber of the flight as the same 502/504") {
    constexpr int n = 8;
    SUBCASE("head timeout: 504 for all, one upstream call") {
        mock_and_proxy env({}, "",
                           "    timeouts: {connect: 2s, head: 2s, idle: 10s, total: 60s}\n");
        const auto responses = share_a_failure(
            env.proxy->port(), chat_body("all time out", false, R"({"latency_ms":8000})"), n,
            [&] { return env.mock->stats().in_flight == 1; });
        check_one_failure_for_all(responses, 504, "upstream_head_timeout", env.proxy->admin_port());
        CHECK(env.mock->stats().calls == 1);
    }
    SUBCASE("closed without a response: 502 for all, one upstream call") {
        mock_and_proxy env;
        const auto responses = share_a_failure(
            env.proxy->port(),
            chat_body("all dropped", false, R"({"latency_ms":2000,"drop_before_head":true})"), n,
            [&] { return env.mock->stats().in_flight == 1; });
        check_one_failure_for_all(responses, 502, "upstream_closed", env.proxy->admin_port());
        CHECK(env.mock->stats().calls == 1);
    }
    SUBCASE("connection refused, retried: 502 for all") {
        boost::asio::io_context io;
        boost::asio::ip::tcp::acceptor probe(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
        const auto dead_port = probe.local_endpoint().port();
        probe.close();  // nothing listens there now
        // Two waits of 1 s between the three attempts keep the flight open while the others join.
        running_proxy proxy(
            proxy_yaml("http://127.0.0.1:" + std::to_string(dead_port), "",
                       "    retries: {max_attempts: 3, base_delay: 1s, max_delay: 1s}\n"));
        const auto admin = proxy.admin_port();
        const auto responses = share_a_failure(proxy.port(), chat_body("all refused"), n, [&] {
            return metric_value(admin, "coalescer_flights_in_flight") == 1;
        });
        check_one_failure_for_all(responses, 502, "upstream_connect_failed", admin);
    }
}
