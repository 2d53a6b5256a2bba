// Fleet budgets from outside: requests per minute, concurrency and a provider's own limit,
// observed as a user would check them: the mock's calls (how many, when, how many at once) and
// each client's status and Retry-After. One sidecar in this process (without `cluster:` the
// process is the fleet), then several coalescer processes sharing one real redis-server.
#include "child_process.hpp"
#include "harness.hpp"
#include "redis_server.hpp"

#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <thread>
#include <vector>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

// Named, not anonymous: the unity build puts several test files in one translation unit.
namespace fleet_budget_tests {

// Each body on its own connection at once, to ports[i % ports.size()].
std::vector<response> burst(const std::vector<std::uint16_t>& ports,
                            const std::vector<std::string>& bodies) {
    std::vector<response> out(bodies.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < bodies.size(); ++i) {
        const auto port = ports[i % ports.size()];
        threads.emplace_back(
            [&, i, port] { out[i] = request(port, "POST", "/chat/completions", bodies[i]); });
    }
    for (auto& t : threads)
        t.join();
    return out;
}

std::vector<response> burst(std::uint16_t port, const std::vector<std::string>& bodies) {
    return burst(std::vector<std::uint16_t>{port}, bodies);
}

std::vector<std::string> distinct_bodies(const std::string& tag, std::size_t n,
                                         const std::string& mock = "") {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n; ++i)
        out.push_back(chat_body(tag + " " + std::to_string(i), false, mock));
    return out;
}

// The mock's call times, in order (ms on the system clock).
std::vector<std::int64_t> call_times(const mock::mock_server& mock) {
    std::vector<std::int64_t> out;
    for (const auto& c : mock.calls())
        out.push_back(c.received_at_ms);
    std::sort(out.begin(), out.end());
    return out;
}

// The most calls any span of time held beyond what `per_minute` with `burst` allows, less
// `slack` calls for delivery jitter between the budget and the mock: <= 0 when the budget held.
double worst_excess(const std::vector<std::int64_t>& times, double per_minute, double burst,
                    double slack) {
    double worst = -1e9;
    for (std::size_t i = 0; i < times.size(); ++i) {
        for (std::size_t j = i; j < times.size(); ++j) {
            const double span = static_cast<double>(times[j] - times[i]) / 1000.0;
            const double allowed = burst + span * per_minute / 60.0 + slack;
            worst = std::max(worst, static_cast<double>(j - i + 1) - allowed);
        }
    }
    return worst;
}

// Every refused response is the budget's: 503, fleet_budget_exhausted, a Retry-After of at
// least a second. Returns how many were answered 200.
int check_refusals(const std::vector<response>& responses) {
    int ok = 0;
    for (const auto& r : responses) {
        if (r.status == 200) {
            ++ok;
            continue;
        }
        CHECK(r.status == 503);
        CHECK(r.header("x-coalesce-error") == "fleet_budget_exhausted");
        const auto retry_after = r.header("retry-after");
        REQUIRE_FALSE(retry_after.empty());
        CHECK(std::stoi(retry_after) >= 1);
    }
    return ok;
}

// Coalescer processes with one config, sharing `redis` and the mock: the fleet.
struct pods {
    pods(const mock::mock_server& mock, const redis_server& redis, std::size_t n,
         const std::string& tag, const std::string& upstream_extra, const std::string& lease = "5s")
        : secret(tag + ".key-secret", "fleet-budget-test-secret-0b5e7d21\n"),
          config(
              tag + ".yaml",
              proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                         "cluster:\n  redis: " + redis.url() +
                             "\n  key_secret_file: " + secret.path + "\n  lease: " + lease +
                             "\n  timeouts: {connect: 500ms, command: 250ms}\nlog: {level: info}\n",
                         "    retries: {max_attempts: 1}\n" + upstream_extra)) {
        for (std::size_t i = 0; i < n; ++i) {
            processes.push_back(std::make_unique<child>(
                std::vector<std::string>{COALESCER_BINARY, "--config", config.path},
                tag + "-pod" + std::to_string(i)));
            const auto [port, admin] = processes.back()->ports();
            ports.push_back(port);
            admins.push_back(admin);
        }
    }
    // A sanitizer build's pods report what they found on stderr: nothing is expected.
    ~pods() {
        for (const auto& p : processes) {
            if (p->pid() != 0) {  // 0: reaped (killed by the test); kill(0) would hit us
                p->signal(SIGTERM);
                p->wait_exit(10s);
            }
            const auto err = p->err();
            CHECK_MESSAGE(err.find("Sanitizer") == std::string::npos, err);
        }
    }
    pods(const pods&) = delete;
    pods& operator=(const pods&) = delete;
    // Every pod's budget in Redis (none falling back) within `limit`.
    bool shared(std::chrono::milliseconds limit = 10s) const {
        return eventually(
            [&] {
                return std::all_of(admins.begin(), admins.end(), [](std::uint16_t a) {
                    return find_metric(a, "coalescer_cluster_redis_up") == 1.0;
                });
            },
            limit);
    }
    temp_file secret, config;
    std::vector<std::unique_ptr<child>> processes;
    std::vector<std::uint16_t> ports, admins;
};

const std::string fallback_gauge = R"(coalescer_fleet_budget_fallback{upstream="mock"})";

TEST_CASE("fleet budget: requests per minute hold at the mock the rest get 503 + Retry-After") {
    // 120 a minute: one every 0.5 s, two at once (one second's worth of burst).
    mock_and_proxy env({}, "",
                       "    queue_timeout: 1500ms\n"
                       "    retries: {max_attempts: 1}\n"
                       "    fleet_limits: {requests_per_minute: 120}\n");
    const auto responses = burst(env.proxy->port(), distinct_bodies("rpm", 12));
    int ok = 0, refused = 0;
    for (const auto& r : responses) {
        if (r.status == 200) {
            ++ok;
        } else {
            ++refused;
            CHECK(r.status == 503);
            CHECK(r.header("x-coalesce-error") == "fleet_budget_exhausted");
            const auto retry_after = r.header("retry-after");
            REQUIRE_FALSE(retry_after.empty());
            CHECK(std::stoi(retry_after) >= 1);
            CHECK(std::stoi(retry_after) <= 6);  // 12 calls at 2 a second
        }
    }
    const auto times = call_times(*env.mock);
    CAPTURE(ok);
    CHECK(static_cast<std::size_t>(ok) == times.size());
    CHECK(refused >= 6);  // at most 2 + 1.5 s × 2 of the 12 can pass within queue_timeout
    CHECK(ok >= 2);
    CHECK(worst_excess(times, 120, 2, 1) <= 0);
}

TEST_CASE("fleet budget: max_concurrent 3 never lets a 4th call reach the mock") {
    mock::mock_options slow;
    slow.latency_ms = 200;
    slow.threads = 2;
    mock_and_proxy env(slow, "",
                       "    max_concurrent: 64\n"
                       "    retries: {max_attempts: 1}\n"
                       "    fleet_limits: {max_concurrent: 3}\n");
    const auto responses = burst(env.proxy->port(), distinct_bodies("conc", 10));
    for (const auto& r : responses)
        CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 10);
    CHECK(env.mock->stats().max_concurrency <= 3);
}

TEST_CASE("fleet budget: a provider's 429 retry-after and remaining 0 close the budget") {
    mock_and_proxy env({}, "",
                       "    queue_timeout: 10s\n"
                       "    retries: {max_attempts: 1}\n"
                       "    fleet_limits: {requests_per_minute: 6000}\n");
    const auto port = env.proxy->port();
    // The provider's 429 reaches its clients as it is (one attempt configured) ...
    const auto limited =
        request(port, "POST", "/chat/completions",
                chat_body("limited", false, R"({"status":429,"retry_after":"2"})"));
    CHECK(limited.status == 429);
    // ... and the next calls wait for its reset instead of walking into it.
    const auto after = burst(port, distinct_bodies("after 429", 3));
    for (const auto& r : after)
        CHECK(r.status == 200);
    auto times = call_times(*env.mock);
    REQUIRE(times.size() == 4);
    CHECK(times[1] - times[0] >= 1500);  // 2 s asked; generous for clock and delivery

    // OpenAI's form: nothing remains until the reset.
    env.mock->reset();
    const auto exhausted = request(
        port, "POST", "/chat/completions",
        chat_body(
            "remaining 0", false,
            R"({"headers":{"x-ratelimit-remaining-requests":"0","x-ratelimit-reset-requests":"1s"}})"));
    CHECK(exhausted.status == 200);
    CHECK(request(port, "POST", "/chat/completions", chat_body("next")).status == 200);
    times = call_times(*env.mock);
    REQUIRE(times.size() == 2);
    CHECK(times[1] - times[0] >= 700);  // 1 s asked
}

TEST_CASE("fleet budget in Redis: 40 requests over 2 pods against 120 a minute") {
    mock::mock_server mock({});
    mock.start();
    redis_server redis;
    pods fleet(mock, redis, 2, "fb-rpm",
               "    queue_timeout: 2s\n    fleet_limits: {requests_per_minute: 120}\n");
    REQUIRE(fleet.shared());
    const auto responses = burst(fleet.ports, distinct_bodies("fleet rpm", 40));
    const int ok = check_refusals(responses);
    const auto times = call_times(mock);
    CAPTURE(ok);
    CHECK(static_cast<std::size_t>(ok) == times.size());
    CHECK(ok >= 2);
    // Each pod alone would let 2 + 2 × 2 s through: the fleet's budget lets as many for both.
    CHECK(ok <= 2 + 2 * 2 + 2);
    CHECK(worst_excess(times, 120, 2, 1) <= 0);
    for (const auto admin : fleet.admins)
        CHECK(metric_value(admin, fallback_gauge) == 0);
}

TEST_CASE("fleet budget in Redis: 3 concurrent calls across 3 pods a killed pod's slots lapse") {
    mock::mock_options slow;
    slow.latency_ms = 200;
    slow.threads = 2;
    mock::mock_server mock(slow);
    mock.start();
    redis_server redis;
    pods fleet(mock, redis, 3, "fb-conc",
               "    queue_timeout: 10s\n    fleet_limits: {max_concurrent: 3}\n", "1s");
    REQUIRE(fleet.shared());
    const auto responses = burst(fleet.ports, distinct_bodies("fleet conc", 12));
    CHECK(check_refusals(responses) == 12);
    CHECK(mock.stats().max_concurrency <= 3);

    // Pod 0 holds every slot with calls that take long, and dies.
    mock.reset();
    std::vector<std::thread> slow_clients;
    for (int i = 0; i < 3; ++i) {
        slow_clients.emplace_back([&, i] {
            request(fleet.ports[0], "POST", "/chat/completions",
                    chat_body("held " + std::to_string(i), false, R"({"latency_ms":8000})"));
        });
    }
    REQUIRE(eventually([&] { return mock.stats().in_flight == 3; }));
    fleet.processes[0]->signal(SIGKILL);
    fleet.processes[0]->wait_exit(10s);
    const auto killed_at = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    for (auto& t : slow_clients)
        t.join();
    // Another pod's call waits for the dead pod's leases (1 s) to lapse, then goes.
    const auto after =
        request(fleet.ports[1], "POST", "/chat/completions", chat_body("after kill"));
    CHECK(after.status == 200);
    const auto calls = mock.calls();
    REQUIRE(calls.size() == 4);
    CHECK(calls.back().received_at_ms - killed_at >= 300);
}

TEST_CASE("fleet budget in Redis: a 429's retry-after stops every pod - Redis gone shares hold") {
    mock::mock_server mock({});
    mock.start();
    redis_server redis;
    pods fleet(mock, redis, 2, "fb-429",
               "    queue_timeout: 10s\n"
               "    fleet_limits: {requests_per_minute: 120, fallback_share: 0.5}\n");
    REQUIRE(fleet.shared());
    const auto limited =
        request(fleet.ports[0], "POST", "/chat/completions",
                chat_body("limited", false, R"({"status":429,"retry_after":"2"})"));
    CHECK(limited.status == 429);
    const auto next = request(fleet.ports[1], "POST", "/chat/completions", chat_body("pod 1"));
    CHECK(next.status == 200);
    auto times = call_times(mock);
    REQUIRE(times.size() == 2);
    CHECK(times[1] - times[0] >= 1500);  // 2 s asked, at another pod

    // Redis stops: each pod admits at half of 120 a minute (one at once, one a second).
    redis.stop();
    mock.reset();
    const auto responses = burst(fleet.ports, distinct_bodies("no redis", 16));
    const int ok = check_refusals(responses);
    times = call_times(mock);
    CAPTURE(ok);
    CHECK(static_cast<std::size_t>(ok) == times.size());
    CHECK(ok >= 2);
    CHECK(worst_excess(times, 2 * 60, 2 * 1, 2) <= 0);
    for (const auto admin : fleet.admins)
        CHECK(metric_value(admin, fallback_gauge) == 1);
}

TEST_CASE(
    "traces: the leader's traceparent goes upstream and followers log its trace id across pods") {
    mock::mock_options slow;
    slow.latency_ms = 600;
    mock::mock_server mock(slow);
    mock.start();
    redis_server redis;
    pods fleet(mock, redis, 2, "fb-trace", "");
    REQUIRE(fleet.shared());
    const std::string leader_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const std::string local_trace = "11111111111111111111111111111111";
    const std::string remote_trace = "22222222222222222222222222222222";
    const auto parent = [](const std::string& trace) {
        return std::vector<std::pair<std::string, std::string>>{
            {"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}};
    };
    const auto body = chat_body("traced");
    std::thread leader([&] {
        CHECK(request(fleet.ports[0], "POST", "/chat/completions", body, parent(leader_trace))
                  .status == 200);
    });
    REQUIRE(eventually([&] { return mock.stats().in_flight == 1; }));
    std::thread local([&] {
        CHECK(request(fleet.ports[0], "POST", "/chat/completions", body, parent(local_trace))
                  .status == 200);
    });
    const auto remote =
        request(fleet.ports[1], "POST", "/chat/completions", body, parent(remote_trace));
    leader.join();
    local.join();
    CHECK(remote.status == 200);
    CHECK(remote.header("x-coalesce") == "follower");
    const auto calls = mock.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].headers.at("traceparent") == "00-" + leader_trace + "-00f067aa0ba902b7-01");

    // The access log lines (flushed by a timer).
    const auto line_with = [&](std::size_t pod, const std::string& trace) {
        std::string found;
        eventually([&] {
            const auto out = fleet.processes[pod]->out();
            const auto at = out.find("\"trace_id\":\"" + trace + "\"");
            if (at == std::string::npos)
                return false;
            const auto start =
                out.rfind('\n', at) == std::string::npos ? 0 : out.rfind('\n', at) + 1;
            found = out.substr(start, out.find('\n', at) - start);
            return true;
        });
        return found;
    };
    const auto leader_line = line_with(0, leader_trace);
    CAPTURE(leader_line);
    CHECK(leader_line.find("\"role\":\"leader\"") != std::string::npos);
    CHECK(leader_line.find("flight_trace_id") == std::string::npos);
    const auto local_line = line_with(0, local_trace);
    CAPTURE(local_line);
    CHECK(local_line.find("\"role\":\"follower\"") != std::string::npos);
    CHECK(local_line.find("\"flight_trace_id\":\"" + leader_trace + "\"") != std::string::npos);
    const auto remote_line = line_with(1, remote_trace);
    CAPTURE(remote_line);
    CHECK(remote_line.find("\"flight_trace_id\":\"" + leader_trace + "\"") != std::string::npos);
}

}  // namespace fleet_budget_tests
