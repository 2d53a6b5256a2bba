// Upstream protection, once per flight: the pacer's concurrency cap and queue timeout, and
// retries before the head that honour Retry-After, observed through the mock's counters.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
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

const std::string retries = R"(coalescer_upstream_retries_total{upstream="mock"})";
const std::string queue_depth = R"(coalescer_pacer_queue_depth{upstream="mock"})";
const std::string in_use = R"(coalescer_pacer_in_use{upstream="mock"})";
const std::string waits = R"(coalescer_pacer_wait_seconds_count{upstream="mock"})";

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
    CHECK(metric_value(env.proxy->admin_port(), retries) == 2);
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
    // 800 ms asked for in milliseconds, 60 s in Retry-After: the retry must come after the
    // former (so not at once, as with no hint at all) and long before the latter.
    const auto body =
        chat_body("ms hint", false,
                  R"({"status":503,"retry_after_ms":800,"retry_after":"60","fail_times":1})");
    // The mock's call count, polled: the first poll that saw the first call, and the last
    // poll that still saw fewer than two, bound the time between the calls from below.
    std::atomic<bool> done{false};
    std::optional<steady::time_point> first_seen, last_before_second;
    std::thread watch([&] {
        while (!done) {
            const auto now = steady::now();
            const auto calls = env.mock->stats().calls;
            if (calls >= 1 && !first_seen)
                first_seen = now;
            if (calls < 2)
                last_before_second = now;
            std::this_thread::sleep_for(1ms);
        }
    });
    const auto started = steady::now();
    const auto r = request(env.proxy->port(), "POST", "/chat/completions", body);
    const auto elapsed = steady::now() - started;
    done = true;
    watch.join();
    CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 2);
    CHECK(metric_value(env.proxy->admin_port(), retries) == 1);
    CHECK(elapsed >= 800ms);  // the second call cannot have started sooner
    CHECK(elapsed < 30s);     // nor waited out the 60 s of Retry-After
    REQUIRE(first_seen.has_value());
    REQUIRE(last_before_second.has_value());
    // At least this long passed between the calls (less than the true gap by how late the
    // poller saw the first one: a few ms, so 300 ms of slack is plenty).
    CHECK(*last_before_second - *first_seen >= 500ms);
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
    CHECK(metric_value(proxy.admin_port(), retries) == 2);
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
    // The queue is full once the first filler's handshake has completed (it is writable).
    pollfd first{fillers.front(), POLLOUT, 0};
    REQUIRE(::poll(&first, 1, 10'000) == 1);
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
    // The deadline, not the kernel's SYN retries (over a minute), ended it; the error code above
    // already says so, and this bound is generous for a loaded machine.
    CHECK(took < 20s);
    for (const int fd : fillers)
        ::close(fd);
    ::close(listener);
}

TEST_CASE("max_concurrent: 2 keeps the provider at 2 calls at once, the rest queue in order") {
    mock_and_proxy env({}, "", "    max_concurrent: 2\n");
    const auto admin = env.proxy->admin_port();
    constexpr int n = 10;
    // Two long calls take the slots; the first gives its slot back after 3 s, and the eight
    // waiters (answered at once) then go through that one slot, one after the other, before
    // the second gives its slot back at 6 s.
    std::vector<std::string> bodies;
    bodies.push_back(chat_body("distinct 0", false, R"({"latency_ms":3000})"));
    bodies.push_back(chat_body("distinct 1", false, R"({"latency_ms":6000})"));
    for (int i = 2; i < n; ++i)
        bodies.push_back(chat_body("distinct " + std::to_string(i)));
    // One at a time, each once the one before is seen taking a slot or queueing, and 20 ms
    // after that (waiters on different workers are FIFO to within 5 ms).
    std::vector<std::unique_ptr<client>> clients;
    for (int i = 0; i < n; ++i) {
        clients.push_back(std::make_unique<client>(env.proxy->port()));
        clients.back()->send("POST", "/chat/completions", bodies[i]);
        if (i < 2) {
            REQUIRE(eventually([&] { return env.mock->stats().in_flight == std::uint64_t(i) + 1; },
                               10s));
        } else {
            REQUIRE(eventually([&] { return metric_value(admin, queue_depth) == i - 1; }, 10s));
        }
        std::this_thread::sleep_for(20ms);
    }
    // All ten are in: two calls at the provider, eight waiting.
    CHECK(metric_value(admin, in_use) == 2);
    for (auto& c : clients)
        CHECK(c->read(30s).status == 200);
    const auto stats = env.mock->stats();
    CHECK(stats.calls == n);
    CHECK(stats.max_concurrency == 2);
    // The provider got them in the order they arrived.
    const auto calls = env.mock->calls();
    REQUIRE(calls.size() == std::size_t(n));
    for (int i = 0; i < n; ++i) {
        CAPTURE(i);
        CHECK(calls[i].body_sha256 == sha256_hex(bodies[i]));
    }
    // Every slot given back, every wait measured once.
    CHECK(eventually([&] { return metric_value(admin, in_use) == 0; }));
    CHECK(metric_value(admin, queue_depth) == 0);
    CHECK(metric_value(admin, waits) == n);
}

TEST_CASE("waiting longer than queue_timeout for a slot gives 503 with Retry-After") {
    mock_and_proxy env({}, "", "    max_concurrent: 1\n    queue_timeout: 300ms\n");
    std::thread slow([&] {
        request(env.proxy->port(), "POST", "/chat/completions",
                chat_body("hog", false, R"({"latency_ms":2000})"));
    });
    // The hog has the only slot (its call is at the provider) before the next one asks.
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
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
    const auto admin = env.proxy->admin_port();
    std::vector<std::string> bodies(100, chat_body("the same question"));
    std::vector<response> same;
    std::thread crowd([&] { same = burst(env.proxy->port(), bodies); });
    // The crowd's flight holds the slot before the other question asks for it.
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
    client other_client(env.proxy->port());
    other_client.send("POST", "/chat/completions", chat_body("another question"));
    // It waits for that one slot: one waiter, not one behind each of the 100 clients.
    CHECK(eventually([&] { return metric_value(admin, queue_depth) == 1; }));
    CHECK(metric_value(admin, in_use) == 1);
    const auto other = other_client.read(30s);
    crowd.join();
    CHECK(other.status == 200);
    for (const auto& r : same)
        CHECK(r.status == 200);
    const auto calls = env.mock->calls();
    REQUIRE(calls.size() == 2);
    CHECK(calls[1].body_sha256 == sha256_hex(chat_body("another question")));
    // One slot taken per flight: the crowd's and the other's.
    CHECK(eventually([&] { return metric_value(admin, in_use) == 0; }));
    CHECK(metric_value(admin, waits) == 2);
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
