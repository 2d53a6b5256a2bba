// Hostile clients (hardening review, checklist H and R): framing that never ends, bodies that
// stall, credential headers nobody configured, requests resent behind the client's back, HEAD
// answers with content, absolute-form targets, drain. Real sockets, the mock provider, the
// sidecar in this process.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <future>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

const std::string chat_post_head = "POST /chat/completions HTTP/1.1\r\nHost: localhost\r\n";

// The value of one sample of /metrics, e.g. metric_value(port, "coalescer_upstream_resends_total",
// "upstream=\"mock\""); fails the test when the series is missing.
double metric_value(std::uint16_t admin_port, const std::string& name, const std::string& labels) {
    const auto text = request(admin_port, "GET", "/metrics", "").body;
    const auto line = name + (labels.empty() ? "" : "{" + labels + "}") + " ";
    const auto at = text.find("\n" + line);
    REQUIRE_MESSAGE(at != std::string::npos, "no series " << line);
    return std::stod(text.substr(at + 1 + line.size()));
}

// Sends `bytes` in pieces until the peer stops taking them or everything went; returns what
// the server answered.
response send_until_refused(client& conn, const std::string& head, const std::string& piece,
                            std::size_t total) {
    conn.send_raw(head);
    for (std::size_t sent = 0; sent < total; sent += piece.size()) {
        try {
            conn.send_raw(piece);
        } catch (const std::exception&) {
            break;  // the server closed: it answered already
        }
    }
    return conn.read(5s);
}

}  // namespace

TEST_CASE("a chunk-size line that never ends gets 400 once it passes max_header_bytes") {
    mock_and_proxy env({}, "limits: {max_header_bytes: 4KiB}\n");
    client conn(env.proxy->port());
    const auto r = send_until_refused(
        conn, chat_post_head + "Transfer-Encoding: chunked\r\n\r\n1;a=", std::string(1024, 'x'),
        1024 * 1024);
    CHECK(r.status == 400);
    CHECK(r.header("x-coalesce-error") == "framing_too_long");
    CHECK(conn.closed_by_peer());
    CHECK(env.mock->stats().calls == 0);
}

TEST_CASE("a trailer section that never ends gets 400 once it passes max_header_bytes") {
    mock_and_proxy env({}, "limits: {max_header_bytes: 4KiB}\n");
    client conn(env.proxy->port());
    const auto r = send_until_refused(
        conn, chat_post_head + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n", "X: y\r\n",
        1024 * 1024);
    CHECK(r.status == 400);
    CHECK(r.header("x-coalesce-error") == "framing_too_long");
    CHECK(conn.closed_by_peer());
    CHECK(env.mock->stats().calls == 0);
}

TEST_CASE("chunk framing past a sixteenth of max_request_body over it gets 413") {
    // 1-byte chunks with long extensions: 1 KiB of body would take ~110 KiB on the wire.
    mock_and_proxy env({}, "limits: {max_request_body: 1KiB}\n");
    client conn(env.proxy->port());
    const std::string chunk = "1;pad=" + std::string(100, 'p') + "\r\nx\r\n";
    const auto r = send_until_refused(conn, chat_post_head + "Transfer-Encoding: chunked\r\n\r\n",
                                      chunk, 1024 * chunk.size());
    CHECK(r.status == 413);
    CHECK(conn.closed_by_peer());
    CHECK(env.mock->stats().calls == 0);
}

TEST_CASE("a body that stalls is cut by the per-read bound (header_timeout), not idle_timeout") {
    mock_and_proxy env({}, "limits: {header_timeout: 300ms, idle_timeout: 30s}\n");
    client conn(env.proxy->port());
    conn.send_raw(chat_post_head + "Content-Length: 100\r\n\r\n{\"model\":");
    const auto r = conn.read(10s);  // well under idle_timeout
    CHECK_FALSE(r.timed_out);
    CHECK(r.status == 408);
    CHECK(r.header("x-coalesce-error") == "body_timeout");
    CHECK(conn.closed_by_peer());
    CHECK(env.mock->stats().calls == 0);
}

TEST_CASE("a body that keeps coming, slowly, is read whole") {
    mock_and_proxy env({}, "limits: {header_timeout: 400ms, idle_timeout: 30s}\n");
    client conn(env.proxy->port());
    const auto body = chat_body("slow but steady");
    conn.send_raw(chat_post_head + "Content-Type: application/json\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n");
    for (std::size_t i = 0; i < body.size(); i += body.size() / 4 + 1) {
        std::this_thread::sleep_for(150ms);  // each under the per-read bound, all four over it
        conn.send_raw(body.substr(i, body.size() / 4 + 1));
    }
    CHECK(conn.read(10s).status == 200);
}

TEST_CASE("two tenants under api-key with one body make two upstream calls") {
    mock::mock_options slow;
    slow.latency_ms = 300;
    mock_and_proxy env(slow);
    const auto body = chat_body("azure tenants");
    auto ask = [&](const std::string& header, const std::string& key) {
        return std::async(std::launch::async, [&, header, key] {
            return request(env.proxy->port(), "POST", "/chat/completions", body,
                           {{"Content-Type", "application/json"}, {header, key}});
        });
    };
    for (const char* header : {"api-key", "x-goog-api-key", "X-Tenant-Token", "Cookie"}) {
        CAPTURE(header);
        env.mock->reset();
        auto a = ask(header, "A"), b = ask(header, "B");
        const auto ra = a.get(), rb = b.get();
        CHECK(ra.status == 200);
        CHECK(rb.status == 200);
        CHECK(ra.header("x-coalesce-flight") != rb.header("x-coalesce-flight"));
        CHECK(env.mock->stats().calls == 2);
    }
}

TEST_CASE("shared_headers lets a credential-like header that is the same for all be shared") {
    mock::mock_options slow;
    slow.latency_ms = 300;
    mock_and_proxy env(slow, "coalesce: {shared_headers: [x-gateway-token]}\n");
    const auto body = chat_body("one gateway token each");
    auto ask = [&](const std::string& token) {
        return std::async(std::launch::async, [&, token] {
            return request(env.proxy->port(), "POST", "/chat/completions", body,
                           {{"Content-Type", "application/json"},
                            {"Authorization", "Bearer same-tenant"},
                            {"x-gateway-token", token}});
        });
    };
    auto a = ask("one");
    std::this_thread::sleep_for(50ms);
    auto b = ask("two");
    const auto ra = a.get(), rb = b.get();
    CHECK(ra.header("x-coalesce-flight") == rb.header("x-coalesce-flight"));
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE("an HTTP/1.0 client that sends Expect gets no 100 Continue") {
    mock_and_proxy env;
    client conn(env.proxy->port());
    const auto body = chat_body("old client");
    conn.send_raw(
        "POST /chat/completions HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body);
    const auto raw = conn.read_all_raw(10s);
    CHECK(raw.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(raw.find("100 Continue") == std::string::npos);
}

TEST_CASE(
    "an absolute-form target is routed by its path, and the upstream still comes from config") {
    mock_and_proxy env;
    client conn(env.proxy->port());
    const auto body = chat_body("absolute");
    conn.send_raw(
        "POST http://evil.example:8080/chat/completions?x=1 HTTP/1.1\r\nHost: "
        "evil.example\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body);
    const auto r = conn.read(10s);
    CHECK(r.status == 200);
    CHECK(r.header("x-coalesce") == "leader");
    REQUIRE(env.mock->calls().size() == 1);
    const auto call = env.mock->calls().front();
    CHECK(call.target == "/chat/completions?x=1");
    CHECK(call.headers.at("host") == "127.0.0.1:" + std::to_string(env.mock->port()));
    conn.send_raw("GET http://evil.example HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    CHECK(conn.read(10s).status == 404);  // "/" is the mock's, and no call of interest
}

TEST_CASE("dot segments in a target are refused with 400 and never reach the provider") {
    mock_and_proxy env;
    for (const std::string target : {"/chat/completions/../../files", "/chat/completions/./x",
                                     "/chat/completions/%2e%2E/x", "/chat/completions/.."}) {
        client conn(env.proxy->port());
        conn.send_raw("GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
        const auto r = conn.read(5s);
        CHECK_MESSAGE(r.status == 400, target);
    }
    // A dot inside a name is no segment of its own.
    client conn(env.proxy->port());
    conn.send_raw("GET /v1.2/...x/.well-known HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(conn.read(5s).status == 404);  // the mock's answer: forwarded
    REQUIRE(env.mock->calls().size() == 1);
    CHECK(env.mock->calls().front().target == "/v1.2/...x/.well-known");
}

TEST_CASE("answers to HEAD carry no content, the sidecar's own errors included") {
    // The upstream is down: a 502 the sidecar writes itself, on a connection kept alive. A
    // body after it would be read as the next response.
    running_proxy proxy(proxy_yaml("http://127.0.0.1:1", "", "    retries: {max_attempts: 1}\n"));
    client conn(proxy.port());
    conn.send_raw("HEAD /chat/completions HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send_raw("HEAD /models HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send_raw("HEAD /nothing-routes-here HTTP/1.1\r\nHost: x\r\n\r\n");
    // Read everything the server sends for a while: exactly the heads, nothing after them.
    std::this_thread::sleep_for(1s);
    conn.send_raw("HEAD /m\xffodels HTTP/1.1\r\nHost: x\r\n\r\n");  // refused: 400, closes
    const auto raw = conn.read_all_raw(10s);
    std::size_t heads = 0;
    for (std::size_t at = 0; (at = raw.find("HTTP/1.1 ", at)) != std::string::npos; ++heads) {
        const auto end = raw.find("\r\n\r\n", at);
        REQUIRE(end != std::string::npos);
        CHECK(raw.find("Content-Length: ", at) < end);
        at = end + 4;
        CHECK((at == raw.size() || raw.compare(at, 9, "HTTP/1.1 ") == 0));
    }
    CHECK(heads == 4);
    CHECK(raw.find("{\"error\"") == std::string::npos);
}

TEST_CASE("a request the upstream held before closing a reused connection is never resent") {
    mock_and_proxy env({}, "", "    retries: {max_attempts: 1}\n",
                       "  - {prefix: /, upstream: mock, coalesce: false}\n");
    client conn(env.proxy->port());
    auto post = [&](const std::string& body) {
        conn.send("POST", "/chat/completions", body, {{"Content-Type", "application/json"}});
        return conn.read(10s);
    };
    // A first call leaves the upstream connection in the pool (both on this client's worker).
    REQUIRE(post(chat_body("warm")).status == 200);
    // The next is held for a second, then the connection closes without an answer; a resend
    // would succeed (fail_times: 1) and the client would never know it was sent twice.
    const auto r = post(chat_body("held", false,
                                  R"({"latency_ms":1000,"drop_before_head":true,)"
                                  R"("fail_times":1})"));
    CHECK(r.status == 502);
    CHECK(r.header("x-coalesce-error") == "upstream_closed");
    CHECK(env.mock->stats().calls == 2);
    CHECK(metric_value(env.proxy->admin_port(), "coalescer_upstream_resends_total",
                       "upstream=\"mock\"") == 0);
}

TEST_CASE("a reused connection closed at once, before the upstream could start, is resent once") {
    mock_and_proxy env({}, "", "    retries: {max_attempts: 1}\n",
                       "  - {prefix: /, upstream: mock, coalesce: false}\n");
    client conn(env.proxy->port());
    auto post = [&](const std::string& body) {
        conn.send("POST", "/chat/completions", body, {{"Content-Type", "application/json"}});
        return conn.read(10s);
    };
    REQUIRE(post(chat_body("warm")).status == 200);
    const auto r = post(chat_body("dropped", false, R"({"drop_before_head":true,"fail_times":1})"));
    CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 3);
    CHECK(metric_value(env.proxy->admin_port(), "coalescer_upstream_resends_total",
                       "upstream=\"mock\"") == 1);
}

TEST_CASE("during drain_delay a new connection is served, with Connection: close") {
    mock_and_proxy env({}, "shutdown: {drain_delay: 2s, drain_timeout: 5s}\n");
    env.proxy->server->drain();
    std::this_thread::sleep_for(100ms);
    const auto r = request(env.proxy->port(), "POST", "/chat/completions", chat_body("late"),
                           {{"Content-Type", "application/json"}});
    CHECK(r.status == 200);
    CHECK(r.header("connection") == "close");
    CHECK(request(env.proxy->admin_port(), "GET", "/readyz", "").status == 503);
}

TEST_CASE("a keep-alive connection the client closes is let go at once, whatever it carried") {
    // The answers take 200 ms, so every client waits past the 50 ms after which the sidecar
    // watches it for a hang-up; that watch used to swallow the later close (CLOSE-WAIT until
    // idle_timeout).
    mock::mock_options slow;
    slow.latency_ms = 200;
    mock_and_proxy env(slow, "limits: {idle_timeout: 30s}\n", "",
                       "  - {prefix: /p/, upstream: mock, strip_prefix: /p, coalesce: false}\n"
                       "  - {prefix: /chat/completions, upstream: mock, coalesce: true}\n");
    auto& metrics = env.proxy->server->context().metrics;
    const std::vector<std::pair<std::string, std::string>> json = {
        {"Content-Type", "application/json"}};
    for (const bool reset : {false, true}) {
        CAPTURE(reset);
        const auto body = chat_body(reset ? "closed with a reset" : "closed with a FIN");
        auto finish = [&](client& c) { reset ? c.close_with_reset() : c.close(); };
        {
            client leader(env.proxy->port()), follower(env.proxy->port());
            leader.send("POST", "/chat/completions", body, json);
            std::this_thread::sleep_for(50ms);
            follower.send("POST", "/chat/completions", body, json);
            CHECK(leader.read(5s).header("x-coalesce") == "leader");
            CHECK(follower.read(5s).header("x-coalesce") == "follower");
            client hit(env.proxy->port());
            hit.send("POST", "/chat/completions", body, json);
            CHECK(hit.read(5s).header("x-coalesce") == "hit");
            client pass(env.proxy->port()), bypass(env.proxy->port());
            pass.send("POST", "/p/chat/completions", body, json);
            CHECK(pass.read(5s).header("x-coalesce") == "pass");
            bypass.send("POST", "/chat/completions", body,
                        {{"Content-Type", "application/json"}, {"x-coalesce-bypass", "1"}});
            CHECK(bypass.read(5s).header("x-coalesce") == "bypass");
            REQUIRE(metrics.open_connections() == 5);
            for (auto* c : {&leader, &follower, &hit, &pass, &bypass})
                finish(*c);
            // Within a second, far below idle_timeout: the sidecar noticed every close.
            CHECK(eventually([&] { return metrics.open_connections() == 0; }, 1s));
        }
    }
}

TEST_CASE("bodies keyed off the worker (256 KiB and more) coalesce like small ones") {
    mock::mock_options slow;
    slow.latency_ms = 300;
    mock_and_proxy env(slow, "workers: 1\n");
    auto big = [](char fill) {
        return R"({"model":"sonar","messages":[{"role":"user","content":")" +
               std::string(1024 * 1024, fill) + R"("}]})";
    };
    const auto a = big('a'), b = big('b');
    auto ask = [&](const std::string& body) {
        return std::async(std::launch::async, [&env, &body] {
            return request(env.proxy->port(), "POST", "/chat/completions", body,
                           {{"Content-Type", "application/json"}});
        });
    };
    auto r1 = ask(a), r2 = ask(a), r3 = ask(b);
    const auto x = r1.get(), y = r2.get(), z = r3.get();
    CHECK(x.status == 200);
    CHECK(x.header("x-coalesce-flight") == y.header("x-coalesce-flight"));
    CHECK(x.header("x-coalesce-flight") != z.header("x-coalesce-flight"));
    CHECK(env.mock->stats().calls == 2);
}
