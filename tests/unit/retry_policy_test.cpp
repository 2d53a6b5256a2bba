#include "upstream/retry_policy.hpp"

#include "ops/errors.hpp"

#include <doctest/doctest.h>

using namespace coalescer;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

TEST_CASE("retry hints: retry-after-ms first, then Retry-After seconds or HTTP date") {
    const auto now =
        std::chrono::system_clock::from_time_t(784111777);  // Sun, 06 Nov 1994 08:49:37 GMT
    CHECK(upstream::retry_hint("250", "9", now) == milliseconds(250));
    CHECK(upstream::retry_hint("", "2", now) == milliseconds(2000));
    CHECK(upstream::retry_hint("", "1.5", now) == milliseconds(1500));
    CHECK(upstream::retry_hint("", "Sun, 06 Nov 1994 08:49:40 GMT", now) == milliseconds(3000));
    CHECK(upstream::retry_hint("", "Sun, 06 Nov 1994 08:49:00 GMT", now) == milliseconds(0));
    CHECK_FALSE(upstream::retry_hint("", "", now));
    CHECK_FALSE(upstream::retry_hint("soon", "later", now));
    CHECK_FALSE(upstream::retry_hint("", "-3", now));
}

TEST_CASE("backoff doubles from base_delay, is capped at max_delay and never below base_delay") {
    ops::retry_config cfg{5, 200ms, 1s};
    for (double unit : {0.0, 0.5, 0.999}) {
        CAPTURE(unit);
        CHECK(upstream::backoff(cfg, 1, unit) == 200ms);
        CHECK(upstream::backoff(cfg, 2, unit) >= 200ms);
        CHECK(upstream::backoff(cfg, 2, unit) <= 400ms);
        CHECK(upstream::backoff(cfg, 3, unit) <= 800ms);
        CHECK(upstream::backoff(cfg, 10, unit) <= 1s);
        CHECK(upstream::backoff(cfg, 10, unit) >= 500ms);
    }
    CHECK(upstream::backoff(cfg, 3, 0.0) <
          upstream::backoff(cfg, 3, 0.99));  // jitter spreads retries
}

TEST_CASE("only failures before the request was sent, 429 and 503 are retryable") {
    CHECK(upstream::retryable_failure(ops::proxy_errc::upstream_connect_failed));
    CHECK(upstream::retryable_failure(ops::proxy_errc::upstream_tls_failed));
    CHECK(upstream::retryable_failure(ops::proxy_errc::upstream_connect_timeout));
    CHECK_FALSE(upstream::retryable_failure(ops::proxy_errc::upstream_head_timeout));
    CHECK_FALSE(upstream::retryable_failure(ops::proxy_errc::upstream_closed));
    CHECK(upstream::retryable_status(429));
    CHECK(upstream::retryable_status(503));
    for (unsigned s : {400u, 401u, 500u, 502u, 504u, 529u})
        CHECK_FALSE(upstream::retryable_status(s));
}
