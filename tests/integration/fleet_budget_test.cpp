// Fleet budgets from outside: requests per minute, concurrency and a provider's own limit,
// observed as a user would check them: the mock's calls (how many, when, how many at once) and
// each client's status and Retry-After. One sidecar in this process here (without `cluster:` the
// process is the fleet).
#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <thread>
#include <vector>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

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

}  // namespace

TEST_CASE("fleet budget: requests per minute hold at the mock, the rest get 503 + Retry-After") {
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
