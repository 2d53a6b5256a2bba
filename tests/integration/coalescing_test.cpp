// Coalescing through real sockets: many clients race against one flight, and the mock's call
// counter and the bytes each client received are what is asserted.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <set>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

// Sends `n` identical requests at once, each on its own connection, and returns the responses.
std::vector<response> burst(std::uint16_t port, std::size_t n, const std::string& body,
                            const std::vector<std::pair<std::string, std::string>>& headers = {},
                            std::chrono::milliseconds read_timeout = 30s) {
    std::vector<response> out(n);
    std::vector<std::thread> threads;
    std::atomic<std::size_t> ready{0};
    for (std::size_t i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            client c(port);
            ++ready;
            while (ready.load() < n)
                std::this_thread::yield();  // all connected: now race
            c.send("POST", "/chat/completions", body, headers);
            out[i] = c.read(read_timeout);
        });
    }
    for (auto& t : threads)
        t.join();
    return out;
}

using steady = std::chrono::steady_clock;

// A client that sends one request and never reads its answer, with a receive buffer so small
// that the sidecar's writes to it stall once its own send buffer is full, whatever the
// kernel's receive-buffer autotuning would otherwise take in.
class stuck_reader {
  public:
    stuck_reader(std::uint16_t port, const std::string& body) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd_ >= 0);
        const int small = 4096;
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        sockaddr_in at{};
        at.sin_family = AF_INET;
        at.sin_port = htons(port);
        at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
        const std::string text =
            "POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body;
        REQUIRE(::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(text.size()));
    }
    ~stuck_reader() { ::close(fd_); }
    stuck_reader(const stuck_reader&) = delete;
    stuck_reader& operator=(const stuck_reader&) = delete;

    struct result {
        std::size_t bytes = 0;  // everything received, head included
        bool closed = false;    // the sidecar closed or reset the connection
    };
    // Now reads: whatever is queued, until the sidecar closes or `limit` passes.
    result read_until_closed(std::chrono::milliseconds limit) {
        result r;
        const auto until = steady::now() + limit;
        char buf[65536];
        while (steady::now() < until) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 100) != 1)
                continue;
            const auto n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) {
                r.closed = true;
                break;
            }
            r.bytes += static_cast<std::size_t>(n);
        }
        return r;
    }

  private:
    int fd_ = -1;
};

void check_identical(const std::vector<response>& responses, unsigned status) {
    REQUIRE(!responses.empty());
    std::map<std::string, int> roles;
    for (const auto& r : responses) {
        CHECK(r.status == status);
        CHECK(r.complete);
        CHECK(r.body == responses.front().body);
        CHECK(r.header("x-request-id") == responses.front().header("x-request-id"));
        CHECK(r.header("x-coalesce-flight") == responses.front().header("x-coalesce-flight"));
        ++roles[r.header("x-coalesce")];
    }
    CHECK(roles["leader"] == 1);
    CHECK(roles["leader"] + roles["follower"] + roles["hit"] == static_cast<int>(responses.size()));
}

// Sends `request` on a fresh connection and returns the data of each HTTP chunk of a chunked
// response, as framed on the wire (empty when the response is not chunked or is cut).
std::vector<std::string> chunks_on_the_wire(std::uint16_t port, const std::string& request) {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    socket.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    timeval limit{.tv_sec = 20, .tv_usec = 0};  // a blocking read never hangs the test
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    boost::asio::write(socket, boost::asio::buffer(request));
    std::string raw;
    std::array<char, 16384> buf{};
    boost::system::error_code ec;
    while (raw.find("\r\n0\r\n\r\n") == std::string::npos) {
        const auto n = socket.read_some(boost::asio::buffer(buf), ec);
        if (ec) {
            return {};
        }
        raw.append(buf.data(), n);
    }
    const auto head_end = raw.find("\r\n\r\n");
    std::string head = raw.substr(0, head_end);
    std::transform(head.begin(), head.end(), head.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (head.find("transfer-encoding: chunked") == std::string::npos) {
        return {};
    }
    std::vector<std::string> chunks;
    for (std::size_t pos = head_end + 4;;) {
        const auto line_end = raw.find("\r\n", pos);
        const auto size = std::stoul(raw.substr(pos, line_end - pos), nullptr, 16);
        if (size == 0) {
            return chunks;
        }
        chunks.push_back(raw.substr(line_end + 2, size));
        pos = line_end + 2 + size + 2;
    }
}

}  // namespace

TEST_CASE("200 concurrent identical JSON requests make one upstream call and get identical bytes") {
    mock::mock_options options;
    options.latency_ms = 300;
    mock_and_proxy env(options);
    const auto responses = burst(env.proxy->port(), 200, chat_body("burst json"));
    check_identical(responses, 200);
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE(
    "200 concurrent identical SSE requests make one upstream call and get identical streams") {
    mock::mock_options options;
    options.latency_ms = 100;
    options.chunks = 8;
    options.chunk_interval_ms = 30;
    mock_and_proxy env(options);
    const auto responses = burst(env.proxy->port(), 200, chat_body("burst sse", true));
    check_identical(responses, 200);
    CHECK(responses.front().body.find("[DONE]") != std::string::npos);
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE(
    "the original load test: 50 requests from 10 client loops, 2 s upstream → 50/50 and one call") {
    mock::mock_options options;
    options.latency_ms = 2000;
    mock_and_proxy env(options);
    const auto body = chat_body("the original load test");
    std::atomic<int> ok{0};
    std::atomic<int> sent{0};
    std::vector<std::thread> loops;
    for (int l = 0; l < 10; ++l) {
        loops.emplace_back([&] {
            client c(env.proxy->port());
            while (sent.fetch_add(1) < 50) {
                c.send("POST", "/chat/completions", body);
                const auto r = c.read(30s);
                if (r.status == 200 && r.complete)
                    ++ok;
            }
        });
    }
    for (auto& t : loops)
        t.join();
    CHECK(ok.load() == 50);
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE(
    "joining before the head, after the first event, before the last event and after completion") {
    mock::mock_options options;
    options.latency_ms = 1000;  // the head is 1 s away when the leader's call reaches the mock
    options.chunks = 6;
    options.chunk_interval_ms = 150;
    mock_and_proxy env(options, "coalesce: {result_ttl: 10s}\n");
    // After the last content event the mock pauses 1 s before [DONE] and the end: a client
    // that joins then is a follower, not a hit.
    const auto body = chat_body("late joiners", true, R"({"stall_after":6,"stall_ms":1000})");
    client leader(env.proxy->port());
    leader.send("POST", "/chat/completions", body);
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
    client before_head(env.proxy->port());
    before_head.send("POST", "/chat/completions", body);
    auto lead = leader.read_until("\n\n");  // the first event has arrived
    client after_first(env.proxy->port());
    after_first.send("POST", "/chat/completions", body);
    lead = leader.read_until("\"finish_reason\":\"stop\"");  // the last content event is out
    client before_last(env.proxy->port());
    before_last.send("POST", "/chat/completions", body);
    lead = leader.read_rest(lead);
    REQUIRE(lead.complete);
    client after_done(env.proxy->port());
    after_done.send("POST", "/chat/completions", body);

    const auto a = before_head.read();
    const auto b = after_first.read();
    const auto c = before_last.read();
    const auto d = after_done.read();
    for (const auto* r : {&a, &b, &c, &d}) {
        CHECK(r->complete);
        CHECK(r->body == lead.body);
        CHECK(r->header("x-coalesce-flight") == lead.header("x-coalesce-flight"));
    }
    CHECK(lead.header("x-coalesce") == "leader");
    CHECK(a.header("x-coalesce") == "follower");
    CHECK(b.header("x-coalesce") == "follower");
    CHECK(c.header("x-coalesce") == "follower");
    CHECK(d.header("x-coalesce") == "hit");
    CHECK(!d.header("age").empty());
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE("the leader's client hanging up after 2 events changes nothing for the followers") {
    mock::mock_options options;
    options.chunks = 8;
    options.chunk_interval_ms = 100;
    mock_and_proxy env(options);
    const auto body = chat_body("leader leaves", true);
    auto leader = std::make_unique<client>(env.proxy->port());
    leader->send("POST", "/chat/completions", body);
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));  // its flight runs
    client f1(env.proxy->port());
    client f2(env.proxy->port());
    f1.send("POST", "/chat/completions", body);
    f2.send("POST", "/chat/completions", body);
    const auto two = leader->read_until("\"completion_tokens\":2");
    CHECK(two.status == 200);
    REQUIRE(two.header("x-coalesce") == "leader");  // the client that leaves is the leader
    leader->close();
    leader.reset();
    const auto r1 = f1.read();
    const auto r2 = f2.read();
    CHECK(r1.header("x-coalesce") == "follower");
    CHECK(r2.header("x-coalesce") == "follower");
    CHECK(r1.header("x-coalesce-flight") == two.header("x-coalesce-flight"));
    CHECK(r1.complete);
    CHECK(r2.complete);
    CHECK(r1.body == r2.body);
    CHECK(r1.body.find("[DONE]") != std::string::npos);
    const auto stats = env.mock->stats();
    CHECK(stats.calls == 1);
    CHECK(stats.aborted == 0);
}

TEST_CASE("tenants never share: different API keys make one call each, the same key shares") {
    mock::mock_options options;
    options.latency_ms = 300;
    mock_and_proxy env(options);
    const auto body = chat_body("tenant isolation");
    std::vector<response> a, b, a2;
    std::thread ta([&] {
        a = burst(env.proxy->port(), 20, body, {{"Authorization", "Bearer tenant-a"}});
    });
    std::thread tb([&] {
        b = burst(env.proxy->port(), 20, body, {{"Authorization", "Bearer tenant-b"}});
    });
    ta.join();
    tb.join();
    check_identical(a, 200);
    check_identical(b, 200);
    CHECK(a.front().body != b.front().body);  // each tenant's own marker
    CHECK(a.front().header("x-coalesce-flight") != b.front().header("x-coalesce-flight"));
    CHECK(env.mock->stats().calls == 2);
    const auto x =
        request(env.proxy->port(), "POST", "/chat/completions", body, {{"x-api-key", "tenant-c"}});
    CHECK(x.status == 200);
    CHECK(env.mock->stats().calls == 3);
    const auto again = request(env.proxy->port(), "POST", "/chat/completions", body,
                               {{"Authorization", "Bearer tenant-a"}});
    CHECK(again.body == a.front().body);
    CHECK(env.mock->stats().calls == 3);
}

TEST_CASE(
    "JSON-aware keys: order, whitespace and escapes share, and a one-byte or big-number difference "
    "does not") {
    mock_and_proxy env;
    auto send = [&](const std::string& body) {
        return request(env.proxy->port(), "POST", "/chat/completions", body);
    };
    const auto base =
        send(R"({"model":"sonar","messages":[{"role":"user","content":"AB"}],"max_tokens":100})");
    CHECK(env.mock->stats().calls == 1);
    const auto reordered = send(
        "{ \"max_tokens\" : 100 ,\n \"messages\":[{\"content\":\"\\u0041B\",\"role\":\"user\"}], "
        "\"model\":\"sonar\"}");
    CHECK(reordered.header("x-coalesce") == "hit");
    CHECK(reordered.body == base.body);
    CHECK(env.mock->stats().calls == 1);
    send(R"({"model":"sonar","messages":[{"role":"user","content":"AC"}],"max_tokens":100})");
    CHECK(env.mock->stats().calls == 2);
    send(
        R"({"model":"sonar","messages":[{"role":"user","content":"AB"}],"max_tokens":1234567890123456789012345})");
    send(
        R"({"model":"sonar","messages":[{"role":"user","content":"AB"}],"max_tokens":1234567890123456789012346})");
    CHECK(env.mock->stats().calls == 4);
}

TEST_CASE(
    "upstream 429 and 500 reach every waiting client, and the next request goes upstream again") {
    for (const int status : {429, 500}) {
        CAPTURE(status);
        // No sidecar retries here: what is under test is the failure reaching every subscriber.
        mock_and_proxy env({}, "",
                           "    retries: {max_attempts: 1, base_delay: 100ms, max_delay: 1s}\n");
        const auto body = chat_body(
            "failing " + std::to_string(status), false,
            R"({"status":)" + std::to_string(status) + R"(,"latency_ms":300,"retry_after":"3"})");
        const auto responses = burst(env.proxy->port(), 30, body);
        for (const auto& r : responses) {
            CHECK(r.status == status);
            CHECK(r.body == responses.front().body);
        }
        CHECK(responses.front().header("retry-after") == "3");
        CHECK(env.mock->stats().calls == 1);
        CHECK(request(env.proxy->port(), "POST", "/chat/completions", body).status == status);
        CHECK(env.mock->stats().calls == 2);
    }
}

TEST_CASE("a connection dropped mid-stream cuts every subscriber, and nothing is retained") {
    mock::mock_options options;
    options.chunk_interval_ms = 80;
    // The idle timeout is far beyond the clients' patience: the drop itself must end the flight.
    mock_and_proxy env(options, "",
                       "    timeouts: {connect: 2s, head: 10s, idle: 60s, total: 120s}\n");
    const auto body = chat_body("dropped", true, R"({"chunks":8,"drop_after":3})");
    const auto responses = burst(env.proxy->port(), 20, body, {}, 10s);
    for (const auto& r : responses) {
        CHECK(r.status == 200);
        CHECK_FALSE(r.complete);
        CHECK_FALSE(r.timed_out);
        CHECK(r.body.find("[DONE]") == std::string::npos);
    }
    CHECK(env.mock->stats().calls == 1);
    const auto next = request(env.proxy->port(), "POST", "/chat/completions", body);
    CHECK(next.header("x-coalesce") == "leader");
    CHECK(env.mock->stats().calls == 2);
}

TEST_CASE("result_ttl expiry starts a new call, and bypass and no-cache requests go alone") {
    mock_and_proxy env({}, "coalesce: {result_ttl: 300ms}\n");
    const auto body = chat_body("ttl");
    CHECK(request(env.proxy->port(), "POST", "/chat/completions", body).header("x-coalesce") ==
          "leader");
    CHECK(request(env.proxy->port(), "POST", "/chat/completions", body).header("x-coalesce") ==
          "hit");
    CHECK(env.mock->stats().calls == 1);
    std::this_thread::sleep_for(400ms);
    CHECK(request(env.proxy->port(), "POST", "/chat/completions", body).header("x-coalesce") ==
          "leader");
    CHECK(env.mock->stats().calls == 2);
    const auto bypass =
        request(env.proxy->port(), "POST", "/chat/completions", body, {{"x-coalesce-bypass", "1"}});
    CHECK(bypass.header("x-coalesce") == "bypass");
    const auto no_cache = request(env.proxy->port(), "POST", "/chat/completions", body,
                                  {{"Cache-Control", "no-cache"}});
    CHECK(no_cache.header("x-coalesce") == "bypass");
    CHECK(env.mock->stats().calls == 4);
    CHECK(env.mock->calls().back().headers.count("x-coalesce-bypass") == 0);
}

TEST_CASE(
    "a subscriber that stops reading is dropped alone at its write timeout, holding back neither "
    "the upstream call nor the others") {
    // write_timeout is far longer than the others need (under TSan they took 5 s): had they
    // waited for the stuck one to be dropped, they would finish after it was, and long after
    // the upstream call.
    mock_and_proxy env({},
                       "limits: {write_timeout: 15s}\ncoalesce: {max_response_bytes: 64MiB, "
                       "max_cache_bytes: 256MiB}\n");
    const auto admin = env.proxy->admin_port();
    const auto body = chat_body("big", false, R"({"body_bytes":12000000,"latency_ms":1000})");
    stuck_reader stuck(env.proxy->port(), body);  // the leader, and it never reads
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
    const auto started = steady::now();
    // When the provider has sent its last byte, as seen from here.
    std::atomic<bool> stop_watch{false};
    std::optional<steady::time_point> upstream_done;
    std::thread watch([&] {
        while (!stop_watch && !upstream_done) {
            if (env.mock->stats().completed == 1)
                upstream_done = steady::now();
            std::this_thread::sleep_for(2ms);
        }
    });
    // Generous read time: under ThreadSanitizer moving 12 MB to each reader takes a while.
    const auto others = burst(env.proxy->port(), 2, body, {}, 180s);
    const auto others_done = steady::now();
    const auto dropped_meanwhile = metric_value(admin, "coalescer_slow_subscribers_dropped_total");
    stop_watch = true;
    watch.join();
    for (const auto& r : others) {
        CHECK(r.status == 200);
        CHECK(r.complete);
        CHECK(r.header("x-coalesce") == "follower");
        CHECK(r.body.size() >= 12000000);
    }
    CHECK(dropped_meanwhile == 0);  // done before the stuck one was dropped
    REQUIRE(upstream_done.has_value());
    // The provider's pace, not the stuck client's, set the call's length, and the others were
    // done soon after it: within as long again as the call took, plus 2 s.
    const auto upstream_took = *upstream_done - started;
    CHECK(others_done - *upstream_done <= upstream_took + 2s);

    // Then the stuck one is cut at its bound, and counted once.
    CHECK(eventually(
        [&] { return metric_value(admin, "coalescer_slow_subscribers_dropped_total") == 1; }, 60s));
    const auto late = stuck.read_until_closed(30s);
    CHECK(late.closed);
    CHECK(late.bytes < 12000000);  // it was cut, not served whole
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE(
    "orphans: finish keeps the call and retains the result, and cancel aborts the upstream call") {
    SUBCASE("finish") {
        mock::mock_options options;
        options.latency_ms = 500;
        mock_and_proxy env(options);
        const auto body = chat_body("orphan finish");
        {
            client c(env.proxy->port());
            c.send("POST", "/chat/completions", body);
            // The call has reached the provider: now its only client leaves.
            REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
        }
        CHECK(eventually([&] { return env.mock->stats().completed == 1; }, 10s));
        CHECK(env.mock->stats().aborted == 0);
        CHECK(request(env.proxy->port(), "POST", "/chat/completions", body).header("x-coalesce") ==
              "hit");
        CHECK(env.mock->stats().calls == 1);
    }
    SUBCASE("cancel") {
        mock::mock_options options;
        options.latency_ms = 3000;
        mock_and_proxy env(options, "coalesce: {orphan: cancel}\n");
        const auto body = chat_body("orphan cancel");
        {
            client a(env.proxy->port());
            client b(env.proxy->port());
            a.send("POST", "/chat/completions", body);
            b.send("POST", "/chat/completions", body);
            REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
        }
        // Nothing tells from outside when b has joined a's flight: should b's request be read
        // only after a's flight was cancelled, it starts a call of its own, cancelled in turn.
        // Either way every call is aborted and none completes.
        CHECK(eventually(
            [&] {
                const auto st = env.mock->stats();
                return st.calls >= 1 && st.in_flight == 0 && st.aborted == st.calls;
            },
            10s));
        CHECK(env.mock->stats().completed == 0);
    }
}

TEST_CASE("max_subscribers_per_flight answers 503 with Retry-After and never makes a second call") {
    mock::mock_options options;
    options.latency_ms = 600;
    mock_and_proxy env(options, "coalesce: {max_subscribers_per_flight: 3}\n");
    const auto responses = burst(env.proxy->port(), 8, chat_body("crowded"));
    int ok = 0;
    int refused = 0;
    for (const auto& r : responses) {
        if (r.status == 200)
            ++ok;
        if (r.status == 503) {
            ++refused;
            CHECK(r.header("retry-after") == "1");
        }
    }
    CHECK(ok == 3);
    CHECK(refused == 5);
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE(
    "every subscriber gets each streamed event in one HTTP chunk, events past 512 bytes too") {
    // An event's bytes are one wake-up and one write per subscriber only if the upstream read
    // takes the whole event at once; the growing Perplexity-style events pass 512 bytes.
    mock::mock_options options;
    options.latency_ms = 200;
    options.chunks = 40;
    options.chunk_interval_ms = 5;
    mock_and_proxy env(options);
    const auto body = chat_body("events in one piece", true);
    const auto request =
        "POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    std::vector<std::vector<std::string>> seen(3);
    std::vector<std::thread> clients;
    for (auto& chunks : seen) {
        clients.emplace_back(
            [&, out = &chunks] { *out = chunks_on_the_wire(env.proxy->port(), request); });
    }
    for (auto& t : clients)
        t.join();
    CHECK(env.mock->stats().calls == 1);
    for (const auto& chunks : seen) {
        REQUIRE(chunks.size() >= 40);
        std::size_t largest = 0;
        for (const auto& chunk : chunks) {
            CHECK(chunk.starts_with("data: "));
            CHECK(chunk.ends_with("\n\n"));
            largest = std::max(largest, chunk.size());
        }
        CHECK(largest > 600);
        CHECK(chunks == seen.front());
    }
}

TEST_CASE("hits do not extend the result window: it ends result_ttl after the answer completed") {
    mock_and_proxy env({}, "coalesce: {result_ttl: 2s}\n");
    const auto port = env.proxy->port();
    const auto body = chat_body("the window");
    const auto first = request(port, "POST", "/chat/completions", body);
    const auto answered = steady::now();  // the answer completed a little before this
    REQUIRE(first.header("x-coalesce") == "leader");
    // Hits through the first half of the window (a request would have to wait a whole second
    // to fall out of it)...
    int hits = 0;
    while (steady::now() < answered + 1s) {
        const auto r = request(port, "POST", "/chat/completions", body);
        CHECK(r.header("x-coalesce") == "hit");
        CHECK(r.body == first.body);
        ++hits;
        std::this_thread::sleep_for(100ms);
    }
    CHECK(hits >= 2);
    CHECK(env.mock->stats().calls == 1);
    // ...and yet 2 s after the answer, not 2 s after the last hit, the window is over.
    std::this_thread::sleep_until(answered + 2100ms);
    const auto after = request(port, "POST", "/chat/completions", body);
    CHECK(after.header("x-coalesce") == "leader");
    CHECK(env.mock->stats().calls == 2);
}

TEST_CASE("past max_cache_bytes the least recently used answer is evicted, and counted") {
    // Three answers of about 40,000 bytes; the cache holds two.
    mock_and_proxy env({},
                       "coalesce: {result_ttl: 60s, max_response_bytes: 64KiB, "
                       "max_cache_bytes: 100KiB}\n");
    const auto port = env.proxy->port();
    const auto admin = env.proxy->admin_port();
    auto body = [](const char* name) {
        return chat_body(std::string("cached ") + name, false, R"({"body_bytes":40000})");
    };
    auto ask = [&](const char* name) {
        const auto r = request(port, "POST", "/chat/completions", body(name));
        CHECK(r.status == 200);
        CHECK(r.complete);
        return r;
    };
    auto gauge = [&](const std::string& series) { return metric_value(admin, series); };
    // An answer is retained (or evicts another) just after its last byte went out: the tests
    // wait for the counters to move before the next step relies on them.
    const auto a = ask("a");
    REQUIRE(a.header("x-coalesce") == "leader");
    REQUIRE(eventually([&] { return gauge("coalescer_retained_entries") == 1; }));
    const auto b = ask("b");
    REQUIRE(b.header("x-coalesce") == "leader");
    REQUIRE(eventually([&] { return gauge("coalescer_retained_entries") == 2; }));
    CHECK(gauge("coalescer_evictions_total") == 0);
    // Retained bytes count the bodies and a little bookkeeping per entry.
    const double bodies = static_cast<double>(a.body.size() + b.body.size());
    const double retained = gauge("coalescer_retained_bytes");
    CHECK(retained >= bodies);
    CHECK(retained <= bodies + 2 * 8192);

    CHECK(ask("a").header("x-coalesce") == "hit");  // a is now used more recently than b
    CHECK(ask("c").header("x-coalesce") == "leader");
    REQUIRE(eventually([&] { return gauge("coalescer_evictions_total") == 1; }));
    CHECK(gauge("coalescer_retained_entries") == 2);
    CHECK(env.mock->stats().calls == 3);

    // b went, a stayed.
    CHECK(ask("a").header("x-coalesce") == "hit");
    CHECK(env.mock->stats().calls == 3);
    CHECK(ask("b").header("x-coalesce") == "leader");
    CHECK(env.mock->stats().calls == 4);
    // b's return evicts c, now the least recently used (a was asked for after c).
    REQUIRE(eventually([&] { return gauge("coalescer_evictions_total") == 2; }));
    CHECK(ask("a").header("x-coalesce") == "hit");
    CHECK(ask("b").header("x-coalesce") == "hit");
    CHECK(env.mock->stats().calls == 4);
    CHECK(ask("c").header("x-coalesce") == "leader");
    CHECK(env.mock->stats().calls == 5);
    REQUIRE(eventually([&] { return gauge("coalescer_evictions_total") == 3; }));
    CHECK(gauge("coalescer_retained_entries") == 2);
}

TEST_CASE("an answer over max_response_bytes is served whole to its clients but never a hit") {
    mock::mock_options options;
    options.latency_ms = 1000;
    mock_and_proxy env(options,
                       "coalesce: {result_ttl: 60s, max_response_bytes: 64KiB, "
                       "max_cache_bytes: 1MiB}\n");
    const auto port = env.proxy->port();
    const auto admin = env.proxy->admin_port();
    const auto big = chat_body("too big to keep", false, R"({"body_bytes":200000})");
    // A leader and a follower share the call (the follower joins while the provider thinks).
    client leader(port);
    leader.send("POST", "/chat/completions", big);
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 1; }));
    client follower(port);
    follower.send("POST", "/chat/completions", big);
    const auto l = leader.read(30s);
    const auto f = follower.read(30s);
    CHECK(l.status == 200);
    CHECK(l.complete);
    CHECK(l.body.size() >= 200000);
    CHECK(l.header("x-coalesce") == "leader");
    CHECK(f.complete);
    CHECK(f.header("x-coalesce") == "follower");
    CHECK(f.body == l.body);
    CHECK(env.mock->stats().calls == 1);
    REQUIRE(eventually([&] { return metric_value(admin, "coalescer_flights_in_flight") == 0; }));
    CHECK(metric_value(admin, "coalescer_retained_entries") == 0);
    CHECK(metric_value(admin, "coalescer_retained_bytes") == 0);
    // Not kept: the same request again is a new call.
    const auto again = request(port, "POST", "/chat/completions", big);
    CHECK(again.header("x-coalesce") == "leader");
    CHECK(again.body.size() == l.body.size());
    CHECK(env.mock->stats().calls == 2);

    // Under the bound, the same route keeps it.
    const auto small = chat_body("small enough", false, R"({"body_bytes":30000})");
    CHECK(request(port, "POST", "/chat/completions", small).header("x-coalesce") == "leader");
    CHECK(request(port, "POST", "/chat/completions", small).header("x-coalesce") == "hit");
    CHECK(env.mock->stats().calls == 3);
    CHECK(eventually([&] { return metric_value(admin, "coalescer_retained_entries") == 1; }));
}
