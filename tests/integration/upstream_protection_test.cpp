// Upstream protection, once per flight: the pacer's concurrency cap and queue timeout, and
// retries before the head that honour Retry-After, observed through the mock's counters.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

std::vector<response> burst(std::uint16_t port, const std::vector<std::string>& bodies) {
    std::vector<response> out(bodies.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < bodies.size(); ++i) {
        threads.emplace_back(
            [&, i] { out[i] = request(port, "POST", "/chat/completions", bodies[i]); });
    }
    for (auto& t : threads)
        t.join();
    return out;
}

std::string metric(std::uint16_t admin, const std::string& line_prefix) {
    const auto body = request(admin, "GET", "/metrics", "").body;
    const auto at = body.find(line_prefix);
    if (at == std::string::npos)
        return "";
    const auto end = body.find('\n', at);
    return body.substr(at + line_prefix.size(), end - at - line_prefix.size());
}

}  // namespace

TEST_CASE("429 with Retry-After: 1 twice, then 200: every client gets the 200 after 3 calls") {
    mock_and_proxy env;
    const auto body =
        chat_body("retry me", false, R"({"status":429,"retry_after":"1","fail_times":2})");
    const auto started = steady::now();
    const auto responses = burst(env.proxy->port(), std::vector<std::string>(10, body));
    const auto elapsed = steady::now() - started;
    for (const auto& r : responses) {
        CHECK(r.status == 200);
        CHECK(r.body == responses.front().body);
    }
    CHECK(env.mock->stats().calls == 3);
    CHECK(elapsed >= 2s);
    CHECK(metric(env.proxy->admin_port(), "coalescer_upstream_retries_total{upstream=\"mock\"} ") ==
          "2");
}

TEST_CASE("a Retry-After longer than max_delay is not waited out: the clients get that 429") {
    mock_and_proxy env({}, "",
                       "    retries: {max_attempts: 3, base_delay: 100ms, max_delay: 2s}\n");
    const auto body = chat_body("too long", false, R"({"status":429,"retry_after":"30"})");
    const auto r = request(env.proxy->port(), "POST", "/chat/completions", body);
    CHECK(r.status == 429);
    CHECK(r.header("retry-after") == "30");
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE("retry-after-ms is honoured before Retry-After, and 503 is retried too") {
    mock_and_proxy env;
    const auto body =
        chat_body("ms hint", false,
                  R"({"status":503,"retry_after_ms":150,"retry_after":"60","fail_times":1})");
    const auto r = request(env.proxy->port(), "POST", "/chat/completions", body);
    CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 2);
}

TEST_CASE("500, 400 and 502 are never retried") {
    mock_and_proxy env;
    for (int status : {500, 400, 502}) {
        CAPTURE(status);
        env.mock->reset();
        const auto r = request(env.proxy->port(), "POST", "/chat/completions",
                               chat_body("no retry " + std::to_string(status), false,
                                         R"({"status":)" + std::to_string(status) + "}"));
        CHECK(r.status == status);
        CHECK(env.mock->stats().calls == 1);
    }
}

TEST_CASE("a refused connection is retried with backoff, then 502") {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor probe(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    const auto dead_port = probe.local_endpoint().port();
    probe.close();
    running_proxy proxy(
        proxy_yaml("http://127.0.0.1:" + std::to_string(dead_port), "",
                   "    retries: {max_attempts: 3, base_delay: 100ms, max_delay: 1s}\n"));
    const auto started = steady::now();
    const auto r = request(proxy.port(), "POST", "/chat/completions", chat_body("refused"));
    CHECK(r.status == 502);
    CHECK(steady::now() - started >= 200ms);  // two backoffs of at least base_delay
    CHECK(metric(proxy.admin_port(), "coalescer_upstream_retries_total{upstream=\"mock\"} ") ==
          "2");
}

TEST_CASE("an upstream that never completes the TCP handshake gets 504 at the connect timeout") {
    // A listener that never accepts, its queue filled: the kernel drops further SYNs, so a
    // connect neither succeeds nor fails until the sidecar's own deadline ends it.
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
    REQUIRE(::listen(listener, 0) == 0);
    socklen_t size = sizeof at;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&at), &size);
    std::vector<int> fillers;
    for (int i = 0; i < 4; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ::connect(fd, reinterpret_cast<sockaddr*>(&at), sizeof at);
        fillers.push_back(fd);
    }
    std::this_thread::sleep_for(100ms);
    running_proxy proxy(
        proxy_yaml("http://127.0.0.1:" + std::to_string(ntohs(at.sin_port)), "",
                   "    timeouts: {connect: 300ms, head: 10s, idle: 10s, total: 60s}\n"
                   "    retries: {max_attempts: 1}\n"));
    const auto started = steady::now();
    const auto r = request(proxy.port(), "POST", "/chat/completions", chat_body("blackhole"));
    const auto took = steady::now() - started;
    CHECK(r.status == 504);
    CHECK(r.header("x-coalesce-error") == "upstream_connect_timeout");
    CHECK(took >= 300ms);
    CHECK(took < 3s);  // the deadline, not the kernel's SYN retries, ended it
    for (const int fd : fillers)
        ::close(fd);
    ::close(listener);
}

TEST_CASE("max_concurrent: 2 keeps the provider at 2 calls at once, the rest queue in order") {
    mock::mock_options options;
    options.latency_ms = 300;
    mock_and_proxy env(options, "", "    max_concurrent: 2\n");
    std::vector<std::string> bodies;
    for (int i = 0; i < 10; ++i)
        bodies.push_back(chat_body("distinct " + std::to_string(i)));
    const auto responses = burst(env.proxy->port(), bodies);
    for (const auto& r : responses)
        CHECK(r.status == 200);
    const auto stats = env.mock->stats();
    CHECK(stats.calls == 10);
    CHECK(stats.max_concurrency == 2);
}

TEST_CASE("waiting longer than queue_timeout for a slot gives 503 with Retry-After") {
    mock_and_proxy env({}, "", "    max_concurrent: 1\n    queue_timeout: 300ms\n");
    std::thread slow([&] {
        request(env.proxy->port(), "POST", "/chat/completions",
                chat_body("hog", false, R"({"latency_ms":2000})"));
    });
    std::this_thread::sleep_for(100ms);
    const auto r = request(env.proxy->port(), "POST", "/chat/completions", chat_body("queued"));
    slow.join();
    CHECK(r.status == 503);
    CHECK(r.header("retry-after") == "1");
    CHECK(r.body.find("queue_timeout") != std::string::npos);
}

TEST_CASE(
    "100 identical requests take one slot: a distinct request alongside them is not starved") {
    mock::mock_options options;
    options.latency_ms = 1000;
    mock_and_proxy env(options, "", "    max_concurrent: 1\n");
    std::vector<std::string> bodies(100, chat_body("the same question"));
    std::vector<response> same;
    std::thread crowd([&] { same = burst(env.proxy->port(), bodies); });
    std::this_thread::sleep_for(100ms);
    const auto started = steady::now();
    const auto other =
        request(env.proxy->port(), "POST", "/chat/completions", chat_body("another question"));
    const auto waited = steady::now() - started;
    crowd.join();
    CHECK(other.status == 200);
    for (const auto& r : same)
        CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 2);
    // One call's time (~1 s) ahead of it in the queue, plus its own: never 100 calls' worth.
    CHECK(waited < 10s);
}

TEST_CASE("rate_limit spaces call starts by its token bucket") {
    mock_and_proxy env({}, "", "    rate_limit: {requests_per_second: 5, burst: 1}\n");
    std::vector<std::string> bodies;
    for (int i = 0; i < 4; ++i)
        bodies.push_back(chat_body("paced " + std::to_string(i)));
    const auto started = steady::now();
    const auto responses = burst(env.proxy->port(), bodies);
    const auto elapsed = steady::now() - started;
    for (const auto& r : responses)
        CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 4);
    // One token at once, then one every 200 ms: the fourth call cannot start before 600 ms.
    CHECK(elapsed >= 550ms);
}
