// Cluster mode from outside: several coalescer processes ("pods") share one real redis-server
// and the in-process mock provider, and clients spread over the pods. What is asserted is what a
// user sees: the mock's call count, the status, content type, bytes, x-coalesce role and
// x-coalesce-flight id each client received, and the pods' /metrics and exit codes.
#include "child_process.hpp"
#include "harness.hpp"
#include "redis_server.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;
using header_list = std::vector<std::pair<std::string, std::string>>;

std::string mock_url(const mock::mock_server& mock) {
    return "http://127.0.0.1:" + std::to_string(mock.port());
}

// The credential-HMAC secret every pod of a fleet shares, in a file of its own.
struct secret_file : temp_file {
    explicit secret_file(const std::string& tag,
                         const std::string& text = "cluster-test-secret-6f1d0c9a52e84b7f\n")
        : temp_file(tag + ".key-secret", text) {}
};

// The `cluster:` section every pod of a fleet is given.
std::string cluster_section(const std::string& redis_url, const std::string& key_secret_file,
                            const std::string& lease = "5s") {
    std::string yaml = "cluster:\n";
    yaml += "  redis: " + redis_url + "\n";
    yaml += "  key_secret_file: " + key_secret_file + "\n";
    yaml += "  lease: " + lease + "\n";
    yaml += "  timeouts: {connect: 500ms, command: 250ms}\n";
    return yaml;
}

// A pod's whole config: in front of `mock`, one attempt per upstream call (so the mock's count
// is the number of flights), the access log and start-up lines at info.
std::string pod_yaml(const mock::mock_server& mock, const std::string& cluster,
                     const std::string& more = "") {
    return proxy_yaml(mock_url(mock), cluster + more + "log: {level: info}\n",
                      "    retries: {max_attempts: 1}\n");
}

// The ports of a started pod, from its "listening on" line; a pod that exits first fails the
// test at once with its stderr (today's binary refuses an unknown `cluster` key, for one).
std::pair<std::uint16_t, std::uint16_t> listening_ports(child& process) {
    const std::regex pattern(R"(listening on https?://[^:]+:(\d+), admin on http://[^:]+:(\d+))");
    const auto until = steady::now() + 30s;  // a sanitizer build on a busy machine starts slowly
    while (steady::now() < until) {
        std::smatch m;
        const auto text = process.err();
        if (std::regex_search(text, m, pattern)) {
            return {static_cast<std::uint16_t>(std::stoi(m[1])),
                    static_cast<std::uint16_t>(std::stoi(m[2]))};
        }
        if (const int code = process.wait_exit(20ms); code != -1) {
            FAIL("the pod exited at start-up with code " << code << ": " << process.err());
        }
    }
    FAIL("the pod never said it was listening: " << process.err());
    return {0, 0};
}

// One coalescer process.
struct pod {
    pod(const std::string& config, const std::string& tag)
        : process({COALESCER_BINARY, "--config", config}, tag) {
        std::tie(port, admin) = listening_ports(process);
    }
    // SIGKILL: the pod vanishes mid-flight, as when its node dies.
    void kill() {
        if (alive) {
            process.signal(SIGKILL);
            process.wait_exit(10s);
            alive = false;
        }
    }
    // A series of its /metrics; nullopt if absent (or the pod does not answer).
    std::optional<double> metric(const std::string& series) const {
        try {
            return find_metric(admin, series);
        } catch (const std::exception&) {
            return std::nullopt;
        }
    }
    child process;
    std::uint16_t port = 0, admin = 0;
    bool alive = true;
};

// `n` pods started with one config file.
struct fleet {
    fleet(const std::string& yaml, std::size_t n, const std::string& tag)
        : config(tag + ".yaml", yaml) {
        for (std::size_t i = 0; i < n; ++i)
            pods.push_back(std::make_unique<pod>(config.path, tag + "-pod" + std::to_string(i)));
    }
    pod& operator[](std::size_t i) { return *pods.at(i); }
    std::vector<std::uint16_t> ports() const {
        std::vector<std::uint16_t> out;
        for (const auto& p : pods)
            out.push_back(p->port);
        return out;
    }
    // The series summed over the pods in `which` (all living pods if empty). A pod without the
    // series throws (std::runtime_error naming pod and series): a missing counter is not a zero.
    double sum(const std::string& series, std::vector<std::size_t> which = {}) const {
        if (which.empty()) {
            for (std::size_t i = 0; i < pods.size(); ++i)
                if (pods[i]->alive)
                    which.push_back(i);
        }
        double total = 0;
        for (const auto i : which) {
            const auto v = pods[i]->metric(series);
            if (!v)
                throw std::runtime_error("pod " + std::to_string(i) + " exposes no " + series);
            total += v.value_or(0);
        }
        return total;
    }
    // Every pod connected to Redis (coalescer_cluster_redis_up 1) within `limit`.
    bool redis_up(std::chrono::milliseconds limit = 15s) const {
        return eventually(
            [&] {
                return std::all_of(pods.begin(), pods.end(), [](const auto& p) {
                    return !p->alive || p->metric("coalescer_cluster_redis_up") == 1.0;
                });
            },
            limit);
    }
    std::string logs() const {
        std::string out;
        for (std::size_t i = 0; i < pods.size(); ++i)
            out += "\n--- pod " + std::to_string(i) + " stderr:\n" + pods[i]->process.err();
        return out;
    }
    temp_file config;
    std::vector<std::unique_ptr<pod>> pods;
};

// What a test's fleet runs against besides its Redis: the mock's behaviour, the lease, and
// config after the cluster section.
struct fleet_setup {
    mock::mock_options mock;
    std::string lease = "5s";
    std::string more;
};

mock::mock_server& started(mock::mock_server& mock) {
    mock.start();
    return mock;
}

// A mock provider, a Redis and a key secret of the test's own, and 3 pods sharing them.
struct fleet_on_redis {
    fleet_on_redis(const std::string& tag, const fleet_setup& setup)
        : mock(setup.mock),
          secret(tag),
          pods(pod_yaml(started(mock), cluster_section(redis.url(), secret.path, setup.lease),
                        setup.more),
               3, tag) {}
    mock::mock_server mock;
    redis_server redis;
    secret_file secret;
    fleet pods;
};

// One request of a burst: where it goes and what it carries.
struct shot {
    std::uint16_t port = 0;
    std::string body;
    header_list headers;
};

// Sends every shot at once, each on its own connection (all connect first, then all send), and
// returns the responses in the order of `shots`. A connection that fails leaves status 0 and
// the reason in `error`.
std::vector<response> fire(const std::vector<shot>& shots,
                           std::chrono::milliseconds read_timeout = 40s) {
    const auto n = shots.size();
    std::vector<response> out(n);
    std::vector<std::thread> threads;
    std::atomic<std::size_t> ready{0};
    for (std::size_t i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            bool counted = false;
            try {
                client c(shots[i].port);
                ++ready;
                counted = true;
                const auto until = steady::now() + 20s;
                while (ready.load() < n && steady::now() < until)
                    std::this_thread::sleep_for(1ms);  // all connected: now race
                c.send("POST", "/chat/completions", shots[i].body, shots[i].headers);
                out[i] = c.read(read_timeout);
            } catch (const std::exception& e) {
                if (!counted)
                    ++ready;
                out[i].error = e.what();
            }
        });
    }
    for (auto& t : threads)
        t.join();
    return out;
}

// `per_pod` identical requests on each port, interleaved.
std::vector<shot> spread(const std::vector<std::uint16_t>& ports, std::size_t per_pod,
                         const std::string& body, const header_list& headers = {}) {
    std::vector<shot> shots;
    for (std::size_t i = 0; i < per_pod; ++i)
        for (const auto port : ports)
            shots.push_back({port, body, headers});
    return shots;
}

std::string role(const response& r) {
    return r.header("x-coalesce");
}

std::string joined(const std::set<std::string>& values) {
    std::string out;
    for (const auto& v : values)
        out += (out.empty() ? "" : ", ") + v;
    return out;
}

// Every response is the answer of one upstream call: 200, complete, the same bytes, content
// type, mock call (x-request-id) and flight id; exactly one `leader`, every other client a
// `follower` or a `hit`. Checked over the whole set, so that a fleet that does not share fails
// with a few lines (how many distinct answers, flights, calls), not one per client. Returns how
// many clients had each role.
std::map<std::string, int> check_one_answer(const std::vector<response>& responses) {
    REQUIRE_FALSE(responses.empty());
    std::set<std::string> bodies, types, flights, calls, unanswered;
    std::map<std::string, int> roles;
    for (std::size_t i = 0; i < responses.size(); ++i) {
        const auto& r = responses[i];
        if (r.status != 200 || !r.complete) {
            unanswered.insert("#" + std::to_string(i) + ": status " + std::to_string(r.status) +
                              (r.complete ? "" : ", incomplete") +
                              (r.error.empty() ? "" : ", " + r.error));
        }
        bodies.insert(r.body);
        types.insert(r.header("content-type"));
        flights.insert(r.header("x-coalesce-flight"));
        calls.insert(r.header("x-request-id"));
        ++roles[role(r)];
    }
    CHECK_MESSAGE(unanswered.empty(), "not answered whole with 200: " << joined(unanswered));
    CHECK_MESSAGE(bodies.size() == 1, bodies.size() << " different bodies");
    CHECK_MESSAGE(types.size() == 1, "content types: " << joined(types));
    CHECK_MESSAGE(calls.size() == 1, "answered by the mock's calls " << joined(calls));
    CHECK_MESSAGE(flights.size() == 1, "flights: " << joined(flights));
    CHECK_FALSE(responses.front().header("x-coalesce-flight").empty());
    CHECK(roles["leader"] == 1);
    CHECK(roles["leader"] + roles["follower"] + roles["hit"] == static_cast<int>(responses.size()));
    return roles;
}

// Which pod's clients include the leader (npos if none).
std::size_t leader_pod(const std::vector<shot>& shots, const std::vector<response>& responses,
                       const std::vector<std::uint16_t>& ports) {
    for (std::size_t i = 0; i < responses.size(); ++i) {
        if (role(responses[i]) == "leader") {
            return static_cast<std::size_t>(std::find(ports.begin(), ports.end(), shots[i].port) -
                                            ports.begin());
        }
    }
    return std::string::npos;
}

std::size_t lines(const std::string& text) {
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

std::string lower(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The mock's calls from now on: `since` is the count before.
std::uint64_t calls_since(const mock::mock_server& mock, std::uint64_t since) {
    return mock.stats().calls - since;
}

// Bursts of fresh identical requests over the whole fleet until one is coalesced into a single
// call again (cluster sharing came back), or `limit` passes.
bool fleet_shares_again(fleet& f, mock::mock_server& mock, const std::string& tag,
                        std::chrono::milliseconds limit) {
    const auto until = steady::now() + limit;
    for (int round = 0; steady::now() < until; ++round) {
        const auto before = mock.stats().calls;
        const auto responses =
            fire(spread(f.ports(), 2, chat_body(tag + " round " + std::to_string(round))));
        const bool all_ok = std::all_of(responses.begin(), responses.end(),
                                        [](const response& r) { return r.status == 200; });
        if (all_ok && calls_since(mock, before) == 1)
            return true;
        std::this_thread::sleep_for(500ms);
    }
    return false;
}

constexpr const char* leases = "coalescer_cluster_leases_total";
constexpr const char* remote_follows = "coalescer_cluster_remote_follows_total";
constexpr const char* remote_hits = "coalescer_cluster_remote_hits_total";
constexpr const char* takeovers = "coalescer_cluster_takeovers_total";
constexpr const char* fenced_appends = "coalescer_cluster_fenced_appends_total";
constexpr const char* fallbacks = "coalescer_cluster_fallbacks_total";
constexpr const char* redis_up_gauge = "coalescer_cluster_redis_up";

}  // namespace

TEST_CASE("cluster fixture: redis_server answers RESP, stops, restarts on its port and freezes") {
    redis_server redis;
    CHECK(redis.running());
    CHECK(redis.url() == "redis://127.0.0.1:" + std::to_string(redis.port()) + "/0");
    CHECK(redis.ping());
    CHECK(redis.command({"SET", "k", "v"}).is_ok());
    CHECK(redis.command({"GET", "k"}).text == "v");
    CHECK(redis.dbsize() == 1);
    CHECK(redis.keys() == std::vector<std::string>{"k"});
    CHECK(redis.command({"CONFIG", "GET", "save"}).elements.at(1).text.empty());
    CHECK(redis.command({"CONFIG", "GET", "appendonly"}).elements.at(1).text == "no");
    CHECK(redis.command({"NO-SUCH-COMMAND"}).is_error());
    redis.flushall();
    CHECK(redis.dbsize() == 0);

    const auto port = redis.port();
    redis.stop();
    CHECK_FALSE(redis.running());
    CHECK_FALSE(redis.ping());
    redis.restart();
    CHECK(redis.port() == port);
    CHECK(redis.ping());
    redis.kill();
    CHECK_FALSE(redis.ping());
    redis.restart();
    CHECK(redis.ping());

    redis.freeze();
    CHECK_FALSE(redis.ping(300ms));
    redis.thaw();
    CHECK(redis.ping(5s));

    redis_server secured({.password = "s3cret"});
    CHECK(secured.ping());
    CHECK(resp_connection(secured.port()).command({"GET", "k"}).is_error());  // NOAUTH
    CHECK(secured.port() != redis.port());
}

TEST_CASE(
    "cluster: a JSON burst over 3 pods makes one upstream call and every client gets its bytes") {
    fleet_on_redis shared("cluster-json", {.mock = {.latency_ms = 800}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    const auto shots = spread(f.ports(), 10, chat_body("one call for the whole fleet"));
    const auto responses = fire(shots);
    CHECK(mock.stats().calls == 1);
    const auto roles = check_one_answer(responses);
    MESSAGE("roles: leader " << roles.at("leader") << ", follower " << roles.at("follower")
                             << ", hit " << roles.at("hit"));
    CHECK(responses.front().header("content-type").starts_with("application/json"));
    CHECK(responses.front().body.find("\"chat.completion\"") != std::string::npos);

    // The pod that called won the one lease, and followed nobody; each other pod followed it
    // (or found its complete answer) through Redis.
    const auto leader = leader_pod(shots, responses, f.ports());
    REQUIRE(leader < 3);
    CHECK(f.sum(leases) == 1);
    CHECK(f.sum(leases, {leader}) == 1);
    CHECK(f.sum(remote_follows, {leader}) + f.sum(remote_hits, {leader}) == 0);
    for (std::size_t i = 0; i < 3; ++i) {
        if (i == leader)
            continue;
        CAPTURE(i);
        CHECK(f.sum(remote_follows, {i}) + f.sum(remote_hits, {i}) >= 1);
    }
    CHECK(f.sum(takeovers) == 0);
    CHECK(f.sum(fallbacks) == 0);
    CHECK(f.sum(redis_up_gauge) == 3);
    for (std::size_t i = 0; i < 3; ++i)
        CHECK(f[i].metric(fenced_appends).has_value());
    // Pods were reading the flight when its answer came whole: it went to the stream they read.
    CHECK(redis.keys("coalescer:*:s:*").size() == 1);
    CHECK(redis.keys("coalescer:*:r:*").empty());
    // Tokens: spent once, by the pod that called; saved for the 29 other clients on whichever pod
    // served them (a pod that followed through Redis reads the usage from what it followed).
    const auto output = boost::json::parse(responses.front().body)
                            .at("usage")
                            .at("completion_tokens")
                            .to_number<double>();
    const std::string output_series = R"({upstream="mock",model="sonar",kind="output"})";
    CHECK(f.sum("coalescer_tokens_spent_total" + output_series) == output);
    CHECK(f.sum("coalescer_tokens_spent_total" + output_series, {leader}) == output);
    CHECK(f.sum("coalescer_tokens_saved_total" + output_series) ==
          static_cast<double>(shots.size() - 1) * output);
    // The access log says where the call was made: by another pod, on every pod but the leader.
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        const bool remote_logged = eventually(
            [&] { return f[i].process.out().find("\"producer\":\"remote\"") != std::string::npos; },
            i == leader ? 2s : 10s);
        CHECK(remote_logged == (i != leader));
    }
}

TEST_CASE("cluster: an SSE burst over 3 pods makes one upstream call, byte-identical everywhere") {
    fleet_on_redis shared("cluster-sse",
                          {.mock = {.latency_ms = 800, .chunks = 10, .chunk_interval_ms = 100}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    const auto responses = fire(spread(f.ports(), 10, chat_body("one stream for the fleet", true)));
    CHECK(mock.stats().calls == 1);
    check_one_answer(responses);
    CHECK(responses.front().header("content-type").starts_with("text/event-stream"));
    CHECK(responses.front().body.find("data: [DONE]") != std::string::npos);
    CHECK(std::count(responses.front().body.begin(), responses.front().body.end(), '\n') >= 20);
    CHECK(mock.stats().aborted == 0);
}

TEST_CASE("cluster: an SSE answer of 400 KB arriving at once reaches every pod whole, in order") {
    // 200 growing events in one go: the producer sends its 64 KiB appends without waiting for
    // each one's reply, and the pods reading the stream must still see every byte once, in order.
    fleet_on_redis shared("cluster-big",
                          {.mock = {.latency_ms = 500, .chunks = 200, .chunk_interval_ms = 0}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    const auto responses = fire(spread(f.ports(), 4, chat_body("one big stream", true)));
    CHECK(mock.stats().calls == 1);
    check_one_answer(responses);
    CHECK(responses.front().body.size() > 300 * 1024);
    CHECK(responses.front().body.find("data: [DONE]") != std::string::npos);
    CHECK(f.sum(remote_follows) >= 2);
    CHECK(f.sum(fenced_appends) == 0);
    // More appends than may be on their way at once: the pipelining was exercised.
    const auto streams = redis.keys("coalescer:*:s:*");
    REQUIRE(streams.size() == 1);
    CHECK(redis.command({"XLEN", streams.front()}).integer >= 6);
}

TEST_CASE(
    "cluster: a client joining on another pod mid-stream gets the stream from its first byte") {
    fleet_on_redis shared("cluster-join", {.mock = {.chunks = 6, .chunk_interval_ms = 50}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    // The stream pauses 3 s after its first event: the clients on pods 1 and 2 ask while it is
    // surely in progress, with bytes already sent on pod 0.
    const auto body = chat_body("join me late", true, R"({"stall_after":1,"stall_ms":3000})");
    client first(f[0].port);
    first.send("POST", "/chat/completions", body);
    auto partial = first.read_until("\n\n");
    REQUIRE(partial.status == 200);
    CHECK(role(partial) == "leader");
    const auto late = fire({{f[1].port, body, {}}, {f[2].port, body, {}}});
    const auto whole = first.read_rest(partial);
    CHECK(whole.complete);
    CHECK(whole.body.find("data: [DONE]") != std::string::npos);
    for (const auto& r : late) {
        CAPTURE(r.error);
        CHECK(r.status == 200);
        CHECK(r.complete);
        CHECK(role(r) == "follower");
        CHECK(r.body == whole.body);
        CHECK(r.header("x-coalesce-flight") == partial.header("x-coalesce-flight"));
    }
    CHECK(mock.stats().calls == 1);
    CHECK(f.sum(remote_follows, {1, 2}) >= 2);
}

TEST_CASE(
    "cluster: within result_ttl another pod answers a hit without a call, after it a new call") {
    fleet_on_redis shared("cluster-hit",
                          {.mock = {.latency_ms = 300}, .more = "coalesce: {result_ttl: 5s}\n"});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    const auto body = chat_body("ask me again elsewhere");
    const auto original = request(f[0].port, "POST", "/chat/completions", body);
    REQUIRE(original.status == 200);
    CHECK(role(original) == "leader");
    CHECK(mock.stats().calls == 1);

    // Pod 0 may write the last bytes to its client just before it appends the end to Redis:
    // wait past timeouts.command (250 ms), by then that append is done or given up. Then, well
    // within result_ttl (5 s), pods 1 and 2, which never saw the request, find the complete
    // answer in Redis.
    std::this_thread::sleep_for(1s);
    // No pod read the flight while it ran: its answer, whole in one append, is a string, and no
    // stream was made for it.
    CHECK(redis.keys("coalescer:*:r:*").size() == 1);
    CHECK(redis.keys("coalescer:*:s:*").empty());
    for (std::size_t i : {1, 2}) {
        CAPTURE(i);
        const auto again = request(f[i].port, "POST", "/chat/completions", body);
        CHECK(again.status == 200);
        CHECK(role(again) == "hit");
        CHECK(again.body == original.body);
        CHECK(again.header("content-type") == original.header("content-type"));
        CHECK(again.header("x-coalesce-flight") == original.header("x-coalesce-flight"));
        CHECK(answered_by(again).seq == answered_by(original).seq);
    }
    CHECK(mock.stats().calls == 1);
    CHECK(f.sum(remote_hits, {1, 2}) == 2);

    // Past result_ttl everywhere (also past any copy a pod kept from its hit): a new call.
    std::this_thread::sleep_for(7s);
    const auto later = request(f[1].port, "POST", "/chat/completions", body);
    CHECK(later.status == 200);
    CHECK(role(later) == "leader");
    CHECK(later.header("x-coalesce-flight") != original.header("x-coalesce-flight"));
    CHECK(answered_by(later).seq != answered_by(original).seq);
    CHECK(mock.stats().calls == 2);
}

TEST_CASE("cluster: two tenants with the same body on shared pods make two calls, each its own") {
    fleet_on_redis shared("cluster-tenants", {.mock = {.latency_ms = 800}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    // Tenant a on pods 0 and 2, tenant b on pods 1 and 2: each shares across pods, never with
    // the other, even on pod 2 where both ask at once.
    const auto body = chat_body("same words, different payers");
    const header_list a = {{"Authorization", "Bearer tenant-a"}};
    const header_list b = {{"Authorization", "Bearer tenant-b"}};
    std::vector<shot> shots;
    for (int i = 0; i < 5; ++i) {
        shots.push_back({f[0].port, body, a});
        shots.push_back({f[1].port, body, b});
        shots.push_back({f[2].port, body, a});
        shots.push_back({f[2].port, body, b});
    }
    const auto responses = fire(shots);
    std::vector<response> of_a, of_b;
    for (std::size_t i = 0; i < shots.size(); ++i)
        (shots[i].headers == a ? of_a : of_b).push_back(responses[i]);
    CHECK(mock.stats().calls == 2);
    check_one_answer(of_a);
    check_one_answer(of_b);
    CHECK(of_a.front().header("x-coalesce-flight") != of_b.front().header("x-coalesce-flight"));
    // The mock writes the caller's tenant (first 8 hex of its credential's SHA-256) in the
    // answer: each tenant got its own.
    const auto tenant_a = "for tenant " + sha256_hex("Bearer tenant-a").substr(0, 8);
    const auto tenant_b = "for tenant " + sha256_hex("Bearer tenant-b").substr(0, 8);
    CHECK(of_a.front().body.find(tenant_a) != std::string::npos);
    CHECK(of_b.front().body.find(tenant_b) != std::string::npos);
    std::set<std::string> callers;
    for (const auto& c : mock.calls())
        callers.insert(c.auth_sha256);
    CHECK(callers ==
          std::set<std::string>{sha256_hex("Bearer tenant-a"), sha256_hex("Bearer tenant-b")});
}

TEST_CASE(
    "cluster: with Redis unreachable the pods start, are ready, answer and coalesce locally") {
    mock::mock_options options;
    options.latency_ms = 800;
    mock::mock_server mock(options);
    mock.start();
    const auto closed = free_loopback_port();  // nothing listens there
    secret_file secret("cluster-noredis");
    fleet f(pod_yaml(mock, cluster_section("redis://127.0.0.1:" + std::to_string(closed) + "/0",
                                           secret.path)),
            3, "cluster-noredis");
    INFO("pods:" << f.logs());
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(eventually([&] { return request(f[i].admin, "GET", "/readyz", "").status == 200; },
                         10s));
        CHECK(f[i].metric(redis_up_gauge).value_or(-1) == 0);  // -1: no such series
        // Said in its log, not kept silent.
        CHECK(eventually(
            [&] { return lower(f[i].process.err()).find("redis") != std::string::npos; }, 10s));
    }

    const auto responses = fire(spread({f[0].port}, 10, chat_body("alone but coalesced")));
    CHECK(mock.stats().calls == 1);
    check_one_answer(responses);
    for (std::size_t i : {1, 2}) {
        CAPTURE(i);
        CHECK(request(f[i].port, "POST", "/chat/completions", chat_body("pod " + std::to_string(i)))
                  .status == 200);
    }
    CHECK(mock.stats().calls == 3);
    CHECK(f.sum(redis_up_gauge) == 0);
    CHECK(f.sum(leases) == 0);
}

TEST_CASE(
    "cluster: the leader pod killed before the head, the other pods take over and answer all") {
    // The head is 3 s away: the kill comes well before.
    fleet_on_redis shared("cluster-takeover", {.mock = {.latency_ms = 3000}, .lease = "1s"});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    const auto body = chat_body("outlive your leader");
    client doomed(f[0].port);  // its client is cut with it: not asserted
    doomed.send("POST", "/chat/completions", body);
    REQUIRE(eventually([&] { return mock.stats().in_flight == 1; }, 10s));

    std::vector<response> responses;
    // Joined on the way out whatever happens (a failed REQUIRE must not leave it running).
    std::jthread others([&] { responses = fire(spread({f[1].port, f[2].port}, 3, body), 60s); });
    // Pods 1 and 2 follow pod 0's flight through Redis.
    CHECK(eventually(
        [&] {
            return f[1].metric(remote_follows).value_or(0) >= 1 &&
                   f[2].metric(remote_follows).value_or(0) >= 1;
        },
        2s));
    const auto calls = mock.calls();
    REQUIRE(calls.size() == 1);
    REQUIRE_MESSAGE(calls[0].status == 0, "the mock answered before the kill: too slow a machine");
    f[0].kill();
    others.join();

    // The first call died with its pod; when the 1 s lease lapsed one of the other pods made
    // the second, and every client on pods 1 and 2 got that one's answer.
    CHECK(mock.stats().calls == 2);
    const auto after = mock.calls();
    REQUIRE(after.size() == 2);
    CHECK(after[0].aborted);
    CHECK(after[1].completed);
    REQUIRE_FALSE(responses.empty());
    for (std::size_t i = 0; i < responses.size(); ++i) {
        const auto& r = responses[i];
        CAPTURE(i);
        CAPTURE(r.error);
        CHECK(r.status == 200);
        CHECK(r.complete);
        CHECK(r.body == responses.front().body);
        CHECK(answered_by(r).seq == after[1].seq);
        CHECK(r.header("x-coalesce-flight") == responses.front().header("x-coalesce-flight"));
    }
    CHECK(f.sum(takeovers, {1, 2}) == 1);
}

TEST_CASE("cluster: a missing or empty key_secret_file stops start-up with one line naming it") {
    const auto closed = free_loopback_port();
    const std::string redis_url = "redis://127.0.0.1:" + std::to_string(closed) + "/0";
    secret_file empty("cluster-empty-secret", "");
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"missing", temp_path("no-such-key-secret")},
        {"empty", empty.path},
    };
    for (const auto& [name, secret_path] : cases) {
        CAPTURE(name);
        const temp_file config(
            "cluster-secret-" + name + ".yaml",
            proxy_yaml("http://127.0.0.1:1",
                       cluster_section(redis_url, secret_path) + "log: {level: info}\n"));
        child run({COALESCER_BINARY, "--config", config.path}, "cluster-secret-" + name);
        const int code = run.wait_exit(10s);
        CHECK(code > 0);
        CHECK(code < 128);  // an exit, not a crash
        const auto err = run.err();
        CAPTURE(err);
        CHECK(lines(err) == 1);
        CHECK(err.find("key_secret_file") != std::string::npos);
        CHECK(err.find("listening on") == std::string::npos);
    }
}

TEST_CASE("cluster: Redis killed mid-run, the pods answer alone, and share again once it is back") {
    fleet_on_redis shared("cluster-restart", {.mock = {.latency_ms = 500}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());
    check_one_answer(fire(spread(f.ports(), 3, chat_body("before the outage"))));
    CHECK(mock.stats().calls == 1);

    redis.kill();
    // Each pod answers its own clients with one call of its own.
    const auto before = mock.stats().calls;
    const auto shots = spread(f.ports(), 3, chat_body("during the outage"));
    const auto responses = fire(shots);
    for (const auto port : f.ports()) {
        std::vector<response> on_pod;
        for (std::size_t i = 0; i < shots.size(); ++i)
            if (shots[i].port == port)
                on_pod.push_back(responses[i]);
        check_one_answer(on_pod);
    }
    CHECK(calls_since(mock, before) == 3);
    CHECK(eventually([&] { return f.sum(redis_up_gauge) == 0; }, 20s));

    redis.restart();
    CHECK(f.redis_up(30s));
    CHECK(fleet_shares_again(f, mock, "after the outage", 30s));
}

TEST_CASE(
    "cluster: a hung or paused Redis does not hold clients, the pods coalesce locally meanwhile") {
    fleet_on_redis shared("cluster-hung", {.mock = {.latency_ms = 800}});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    // Connections stay open and nothing answers until thaw(): had the pod waited for Redis,
    // no client would be answered within the 15 s read timeout.
    redis.freeze();
    const auto started = steady::now();
    const auto responses = fire(spread({f[0].port}, 10, chat_body("redis hangs")), 15s);
    MESSAGE(
        "answered in "
        << std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started).count()
        << " ms with Redis frozen");
    check_one_answer(responses);
    CHECK(mock.stats().calls == 1);
    CHECK(f.sum(fallbacks, {0}) >= 1);
    redis.thaw();
    CHECK(f.redis_up(30s));
    CHECK(fleet_shares_again(f, mock, "redis is back", 30s));

    // Stalled the way an operator stalls it: CLIENT PAUSE holds every command (the pods' open
    // connections included) for 6 s. Clients still get answers well inside the 5 s they allow.
    const auto fallbacks_before = f.sum(fallbacks, {0, 1, 2});
    const auto calls_before = mock.stats().calls;
    redis.pause_clients(6s);
    const auto paused = fire(spread(f.ports(), 4, chat_body("redis paused")), 5s);
    for (const auto& r : paused) {
        CHECK(r.status == 200);
        CHECK(r.complete);
    }
    CHECK(calls_since(mock, calls_before) <= 3);  // at worst one call per pod, never per client
    CHECK(f.sum(fallbacks, {0, 1, 2}) > fallbacks_before);
    CHECK(fleet_shares_again(f, mock, "redis unpaused", 30s));
}

TEST_CASE(
    "cluster: a leader stopped past its lease is taken over, and its late appends are fenced") {
    fleet_on_redis shared("cluster-fence", {.mock = {.latency_ms = 3000}, .lease = "1s"});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    const auto body = chat_body("a leader that sleeps");
    response leader_answer;
    std::jthread leader_client([&] {
        leader_answer = fire({shot{f[0].port, body, {}}}, 60s).front();
    });
    REQUIRE(eventually([&] { return mock.stats().in_flight == 1; }, 10s));
    std::vector<response> responses;
    std::jthread others([&] { responses = fire(spread({f[1].port, f[2].port}, 2, body), 60s); });
    REQUIRE(eventually([&] { return f.sum(remote_follows, {1, 2}) >= 2; }, 5s));
    f[0].process.signal(SIGSTOP);
    // Its lease (1 s) lapses unrenewed: one of the others makes the second call.
    const bool taken_over = eventually([&] { return mock.stats().calls == 2; }, 10s);
    f[0].process.signal(SIGCONT);
    REQUIRE(taken_over);
    others.join();
    leader_client.join();

    const auto calls = mock.calls();
    REQUIRE(calls.size() == 2);
    // The stopped pod's own client gets its own call's answer, whole: never the successor's.
    CHECK(leader_answer.status == 200);
    CHECK(leader_answer.complete);
    CHECK(answered_by(leader_answer).seq == calls[0].seq);
    for (const auto& r : responses) {
        CHECK(r.status == 200);
        CHECK(r.complete);
        CHECK(answered_by(r).seq == calls[1].seq);
    }
    CHECK(f.sum(takeovers, {1, 2}) == 1);
    // Woken, the old leader's appends find the lease held by another flight.
    CHECK(eventually([&] { return f[0].metric(fenced_appends).value_or(0) >= 1; }, 10s));
}

TEST_CASE("cluster: pods authenticate as a Redis ACL user, and a wrong password falls back") {
    mock::mock_options options;
    options.latency_ms = 800;
    mock::mock_server mock(options);
    mock.start();
    redis_server redis;
    const auto created = redis.command(
        {"ACL", "SETUSER", "coalescer", "on", ">s3cret-pass", "~coalescer:*", "+@all"});
    REQUIRE(created.is_ok());
    REQUIRE(redis.command({"ACL", "SETUSER", "default", "off"}).is_ok());
    secret_file secret("cluster-acl");
    temp_file password("cluster-acl.password", "s3cret-pass\n");
    temp_file wrong("cluster-acl.wrong", "not-the-password\n");
    const auto with_user = [&](const std::string& password_file) {
        return cluster_section(redis.url(), secret.path) +
               "  username: coalescer\n  password_file: " + password_file + "\n";
    };
    fleet good(pod_yaml(mock, with_user(password.path)), 2, "cluster-acl");
    INFO("pods:" << good.logs());
    REQUIRE(good.redis_up());
    check_one_answer(fire(spread(good.ports(), 4, chat_body("an ACL user's fleet"))));
    CHECK(mock.stats().calls == 1);

    fleet bad(pod_yaml(mock, with_user(wrong.path)), 1, "cluster-acl-wrong");
    INFO("wrong password:" << bad.logs());
    const auto answers = fire(spread(bad.ports(), 3, chat_body("refused by Redis")));
    for (const auto& r : answers)
        CHECK(r.status == 200);
    CHECK(mock.stats().calls == 2);  // its own call: coalesced within the pod
    CHECK(bad[0].metric(redis_up_gauge) == 0.0);
    // The password is never logged.
    CHECK(bad.logs().find("not-the-password") == std::string::npos);
    CHECK(good.logs().find("s3cret-pass") == std::string::npos);
}

TEST_CASE("cluster: pods reach Redis over TLS with the test CA, and refuse an untrusted one") {
    mock::mock_options options;
    options.latency_ms = 800;
    mock::mock_server mock(options);
    mock.start();
    const auto tls_port = free_loopback_port();
    redis_options tls;
    tls.extra_args = {"--tls-port",         std::to_string(tls_port),
                      "--tls-cert-file",    certs_dir() + "/localhost.pem",
                      "--tls-key-file",     certs_dir() + "/localhost.key",
                      "--tls-ca-cert-file", certs_dir() + "/ca.pem",
                      "--tls-auth-clients", "no"};
    redis_server redis(tls);
    secret_file secret("cluster-tls");
    const auto url = "rediss://localhost:" + std::to_string(tls_port) + "/0";
    fleet f(pod_yaml(mock, cluster_section(url, secret.path) + "  tls: {ca_file: " + certs_dir() +
                               "/ca.pem}\n"),
            2, "cluster-tls");
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());
    check_one_answer(fire(spread(f.ports(), 4, chat_body("a fleet over TLS"))));
    CHECK(mock.stats().calls == 1);
    CHECK(f.sum(leases) == 1);

    // The system's trust store does not know the test CA: no connection, local coalescing only.
    fleet untrusting(pod_yaml(mock, cluster_section(url, secret.path)), 1, "cluster-tls-untrusted");
    INFO("untrusting:" << untrusting.logs());
    for (const auto& r : fire(spread(untrusting.ports(), 3, chat_body("untrusted Redis"))))
        CHECK(r.status == 200);
    CHECK(mock.stats().calls == 2);
    CHECK(untrusting[0].metric(redis_up_gauge) == 0.0);
    CHECK(untrusting[0].metric(leases) == 0.0);
}

TEST_CASE("cluster: the leader pod killed mid-stream cuts the other pods' clients, never re-fed") {
    fleet_on_redis shared("cluster-cut",
                          {.mock = {.chunks = 6, .chunk_interval_ms = 50}, .lease = "1s"});
    auto& [mock, redis, secret, f] = shared;
    INFO("pods:" << f.logs());
    REQUIRE(f.redis_up());

    // The stream stalls after its first event: every client has bytes of it when the leader
    // pod dies.
    const auto body = chat_body("cut me cleanly", true, R"({"stall_after":1,"stall_ms":4000})");
    client first(f[0].port);
    first.send("POST", "/chat/completions", body);
    REQUIRE(first.read_until("\n\n").status == 200);
    std::vector<std::unique_ptr<client>> others;
    std::vector<response> partial;
    for (const std::size_t pod : {1, 2}) {
        others.push_back(std::make_unique<client>(f[pod].port));
        others.back()->send("POST", "/chat/completions", body);
        partial.push_back(others.back()->read_until("\n\n"));
        REQUIRE(partial.back().status == 200);
        CHECK(role(partial.back()) == "follower");
    }
    f[0].kill();
    for (std::size_t i = 0; i < others.size(); ++i) {
        const auto rest = others[i]->read_rest(partial[i]);
        CAPTURE(i);
        CHECK_FALSE(rest.complete);  // cut like a failed upstream: no terminating chunk
        CHECK(rest.body.find("data: [DONE]") == std::string::npos);
        CHECK(answered_by(rest).seq == mock.calls().front().seq);  // only the first call's bytes
    }
    // Nobody took over for clients who had bytes: one call so far.
    CHECK(mock.stats().calls == 1);
    CHECK(f.sum(takeovers, {1, 2}) == 0);
    // The next request is a new flight, answered whole.
    const auto again = fire({{f[1].port, body, {}}}).front();
    CHECK(again.status == 200);
    CHECK(again.complete);
    CHECK(mock.stats().calls == 2);
}
