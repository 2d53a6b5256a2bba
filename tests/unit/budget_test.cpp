#include "upstream/budget.hpp"
#include "http/traceparent.hpp"
#include "ops/price_table.hpp"
#include "upstream/gcra.hpp"
#include "upstream/local_budget.hpp"
#include "upstream/provider_limits.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>

using namespace coalescer;
using namespace std::chrono_literals;
using upstream::gcra;
using upstream::local_budget;

TEST_CASE("gcra: a burst then one unit per interval and a wait that says when") {
    gcra g(120, 2);  // 0.5 s per unit, 2 at once
    CHECK(g.take(10.0, 1) == 0);
    CHECK(g.take(10.0, 1) == 0);
    CHECK(g.take(10.0, 1) == doctest::Approx(0.5));
    CHECK(g.take(10.49, 1) == doctest::Approx(0.01));
    CHECK(g.take(10.5, 1) == 0);
    CHECK(g.take(10.5, 1) == doctest::Approx(0.5));
    // Idle for a long time: only the burst is available again, not the idle time's worth.
    CHECK(g.take(100.0, 1) == 0);
    CHECK(g.take(100.0, 1) == 0);
    CHECK(g.take(100.0, 1) > 0);
}

TEST_CASE("gcra: weighted takes settled by the difference") {
    gcra tokens(6000, 6000);  // 100 tokens a second, a minute's worth at once
    CHECK(tokens.take(0.0, 5000) == 0);
    CHECK(tokens.take(0.0, 2000) == doctest::Approx(10.0));  // 1000 over: 10 s
    tokens.adjust(-3000);                                    // the first call used 2000, not 5000
    CHECK(tokens.take(0.0, 2000) == 0);
    CHECK(tokens.take(0.0, 9000) > 0);  // larger than the burst: waits for an empty bucket
}

TEST_CASE("local_budget: requests per minute with one second of burst") {
    local_budget b(ops::fleet_limits_config{.requests_per_minute = 120});
    const auto t0 = local_budget::clock::now();
    auto first = b.admit(10, t0);
    auto second = b.admit(10, t0);
    auto third = b.admit(10, t0);
    CHECK(first.admitted);
    CHECK(second.admitted);
    CHECK_FALSE(third.admitted);
    CHECK(third.retry_in == 500ms);
    CHECK(b.admit(10, t0 + 500ms).admitted);
    CHECK(b.in_use() == 3);
    b.finish(first, 7);
    CHECK(b.in_use() == 2);
}

TEST_CASE("local_budget: tokens reserved refused with the wait settled by usage") {
    local_budget b(ops::fleet_limits_config{.tokens_per_minute = 600});  // 10 a second
    const auto t0 = local_budget::clock::now();
    auto big = b.admit(500, t0);
    REQUIRE(big.admitted);
    CHECK(big.reserved == 500);
    auto refused = b.admit(200, t0);
    CHECK_FALSE(refused.admitted);
    CHECK(refused.retry_in == 10s);  // 100 tokens over at 10 a second
    b.finish(big, 100);              // it used 100 of its 500
    CHECK(b.admit(200, t0).admitted);
    // An estimate above the whole minute is capped to it rather than never admitted.
    local_budget c(ops::fleet_limits_config{.tokens_per_minute = 600});
    CHECK(c.admit(5000, t0).reserved == 600);
}

TEST_CASE("local_budget: concurrency shares and a provider's block") {
    local_budget b(ops::fleet_limits_config{.max_concurrent = 10}, 0.25);  // 2 for this pod
    const auto t0 = local_budget::clock::now();
    auto one = b.admit(0, t0);
    auto two = b.admit(0, t0);
    CHECK(one.admitted);
    CHECK(two.admitted);
    CHECK_FALSE(b.admit(0, t0).admitted);
    b.finish(one, std::nullopt);
    CHECK(b.admit(0, t0).admitted);

    local_budget blocked(ops::fleet_limits_config{.requests_per_minute = 6000});
    blocked.block_until(std::chrono::system_clock::now() + 2s);
    const auto refused = blocked.admit(0);
    CHECK_FALSE(refused.admitted);
    CHECK(refused.retry_in > 1500ms);
    CHECK(refused.retry_in <= 2000ms);
    CHECK(blocked.admit(0, local_budget::clock::now() + 2100ms).admitted);
}

TEST_CASE("estimate_tokens: the output cap plus a quarter of the body's bytes") {
    const std::string with_cap =
        R"({"model":"sonar","max_tokens": 300,"messages":[]})";  // 51 bytes
    CHECK(upstream::estimate_tokens(with_cap) == 300 + 13);
    const std::string responses = R"({"input":"hi","max_output_tokens":64})";  // 37 bytes
    CHECK(upstream::estimate_tokens(responses) == 64 + 10);
    const std::string schema =  // a key whose value is no number, then the real one
        R"({"tools":[{"max_tokens":{"type":"integer"}}],"max_completion_tokens":9})";
    CHECK(upstream::estimate_tokens(schema) == 9 + (schema.size() + 3) / 4);
    const std::string none = R"({"messages":[{"content":"\"max_tokens\": 5"}]})";
    CHECK(upstream::estimate_tokens(none) ==
          upstream::default_output_tokens + (none.size() + 3) / 4);
}

TEST_CASE("provider limits: durations RFC 3339 times and what closes the budget") {
    using upstream::parse_go_duration;
    CHECK(parse_go_duration("1s") == 1000ms);
    CHECK(parse_go_duration("6m0s") == 360000ms);
    CHECK(parse_go_duration("20ms") == 20ms);
    CHECK(parse_go_duration("1h2m3.5s") == 3723500ms);
    CHECK_FALSE(parse_go_duration("").has_value());
    CHECK_FALSE(parse_go_duration("5").has_value());
    CHECK_FALSE(parse_go_duration("5 parsecs").has_value());

    const auto epoch = std::chrono::system_clock::from_time_t(1714564800);  // 2024-05-01T12:00:00Z
    CHECK(upstream::parse_rfc3339("2024-05-01T12:00:30Z") == epoch + 30s);
    CHECK(upstream::parse_rfc3339("2024-05-01T14:00:30.5+02:00") == epoch + 30500ms);
    CHECK_FALSE(upstream::parse_rfc3339("2024-05-01 12:00:30").has_value());

    std::map<std::string, std::string> headers;
    const upstream::header_lookup lookup = [&](std::string_view name) -> std::string_view {
        const auto it = headers.find(std::string(name));
        return it == headers.end() ? std::string_view{} : std::string_view(it->second);
    };
    CHECK_FALSE(upstream::provider_blocked_until(200, lookup, epoch).has_value());
    headers = {{"retry-after", "2"}};
    CHECK(upstream::provider_blocked_until(429, lookup, epoch) == epoch + 2s);
    CHECK_FALSE(upstream::provider_blocked_until(200, lookup, epoch).has_value());
    headers = {{"x-ratelimit-remaining-requests", "0"},
               {"x-ratelimit-reset-requests", "6m0s"},
               {"x-ratelimit-remaining-tokens", "10"},
               {"x-ratelimit-reset-tokens", "20m"}};
    CHECK(upstream::provider_blocked_until(200, lookup, epoch) == epoch + 6min);
    headers = {{"anthropic-ratelimit-tokens-remaining", "0"},
               {"anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:45Z"},
               {"retry-after", "3"}};
    CHECK(upstream::provider_blocked_until(429, lookup, epoch) == epoch + 45s);
    headers = {{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "900h"}};
    CHECK(upstream::provider_blocked_until(200, lookup, epoch) == epoch + 1h);
}

TEST_CASE("traceparent: the trace id of a valid field only") {
    using coalescer::http::trace_id_of;
    CHECK(trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") ==
          "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(trace_id_of("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more") ==
          "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(trace_id_of("").empty());
    CHECK(trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").empty());
    CHECK(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01").empty());
    CHECK(trace_id_of("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").empty());
    CHECK(trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").empty());
}

TEST_CASE("price_table: exact names first else the longest '*' prefix - hand-computed costs") {
    const auto price = [](double in, double out, double request) {
        ops::price_config p;
        p.input_per_mtok = in;
        p.output_per_mtok = out;
        p.per_request = request;
        return p;
    };
    auto claude = price(3.0, 15.0, 0);
    claude.cached_input_per_mtok = 0.30;
    claude.cache_write_input_per_mtok = 3.75;
    const ops::price_table table({{"sonar", price(1.0, 1.0, 0.005)},
                                  {"sonar-*", price(3.0, 15.0, 0.006)},
                                  {"sonar-deep-*", price(2.0, 8.0, 0)},
                                  {"claude-*", claude},
                                  {"*", price(10.0, 30.0, 0)}});
    // sonar: 1,000 in and 500 out at $1/M each, plus $0.005 a call = 0.001 + 0.0005 + 0.005.
    CHECK(*table.cost("sonar", {.input = 1000, .output = 500}) == doctest::Approx(0.0065));
    // sonar-pro by "sonar-*": 2,000 × 3/M + 1,000 × 15/M + 0.006 = 0.006 + 0.015 + 0.006.
    CHECK(*table.cost("sonar-pro", {.input = 2000, .output = 1000}) == doctest::Approx(0.027));
    // The longer prefix wins: 1M in × 2 + 0.5M out × 8 = 2 + 4.
    CHECK(*table.cost("sonar-deep-research", {.input = 1000000, .output = 500000}) ==
          doctest::Approx(6.0));
    // Cached and cache-write input at their own prices: 10,000 × 3 + 90,000 × 0.30
    // + 5,000 × 3.75 + 2,000 × 15, per million = 0.03 + 0.027 + 0.01875 + 0.03.
    CHECK(*table.cost(
              "claude-sonnet-4",
              {.input = 10000, .cached_input = 90000, .cache_write_input = 5000, .output = 2000}) ==
          doctest::Approx(0.10575));
    // Unpriced kinds cost what input costs: sonar's cached input at $1/M.
    CHECK(*table.cost("sonar", {.cached_input = 1000000}) == doctest::Approx(1.005));
    CHECK(*table.cost("gpt-4o", {.input = 100000}) == doctest::Approx(1.0));  // by "*"
    const ops::price_table exact_only({{"sonar", price(1, 1, 0)}});
    CHECK_FALSE(exact_only.cost("sonar-pro", {.input = 1}).has_value());
    CHECK(exact_only.find("sonar") != nullptr);
}
