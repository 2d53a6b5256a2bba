// The flight registry through its interface, with this process's table behind it: join
// outcomes (leader, follower, hit, full, closed), the producer started once per new flight,
// retention, expiry, least-recently-used eviction, the orphan policy and the subscriber limit.
#include "coalesce/local_registry.hpp"
#include "ops/errors.hpp"

#include "doctest_main.hpp"

#include <doctest/doctest.h>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

using namespace coalescer;
using namespace coalescer::coalesce;

namespace {

flight_key key_named(std::uint32_t n) {
    flight_key k;
    std::memcpy(k.digest.data(), &n, sizeof n);
    k.digest[31] = 1;
    return k;
}

// Counts the flights it was asked to produce and keeps them, like the forwarder's fetch would.
struct recording_producer final : flight_producer {
    std::vector<std::shared_ptr<flight>> started;
    boost::asio::io_context io;  // never run: the productions are made, not run
    production make(const std::shared_ptr<flight>& f) override {
        started.push_back(f);
        return {nothing(), io.get_executor(), 0};
    }
    std::size_t worker_index() const noexcept override { return 0; }
    static boost::asio::awaitable<void> nothing() { co_return; }
};

ops::coalesce_config config(std::size_t cache_bytes = 1024 * 1024,
                            ops::duration ttl = std::chrono::seconds(10)) {
    ops::coalesce_config c;
    c.result_ttl = ttl;
    c.max_cache_bytes = cache_bytes;
    c.max_response_bytes = 1024 * 1024;
    return c;
}

// Completes `f` with a 2xx answer of `body`.
void finish(flight& f, const std::string& body) {
    http::response_head h;
    h.status = 200;
    h.reason = "OK";
    h.fields = "Content-Type: application/json\r\n";
    h.content_length = body.size();
    f.publish_head(h, true);
    f.append(body, true);
    f.complete();
}

}  // namespace

TEST_CASE("registry: a new key makes a leader and starts its producer, once") {
    flight_ids ids;
    local_registry reg(config(), ids);
    recording_producer producer;
    auto leader = reg.join(key_named(1), producer);
    CHECK(leader.status == join_status::leader);
    REQUIRE(leader.joined);
    REQUIRE(producer.started.size() == 1);
    CHECK(&leader.joined.flight() == producer.started.front().get());
    auto follower = reg.join(key_named(1), producer);
    CHECK(follower.status == join_status::follower);
    CHECK(&follower.joined.flight() == &leader.joined.flight());
    CHECK(producer.started.size() == 1);  // one producer per flight, not per client
    auto other = reg.join(key_named(2), producer);
    CHECK(other.status == join_status::leader);
    CHECK(producer.started.size() == 2);
    CHECK(reg.stats().live_flights == 2);
    for (auto& f : producer.started)
        f->fail(ops::proxy_errc::flight_cancelled);
    CHECK(reg.stats().live_flights == 0);
}

TEST_CASE("registry: a completed, retainable flight is a hit and leaving is automatic") {
    flight_ids ids;
    local_registry reg(config(), ids);
    recording_producer producer;
    {
        auto leader = reg.join(key_named(1), producer);
        finish(leader.joined.flight(), "answer");
    }  // the leader's subscription leaves here
    auto hit = reg.join(key_named(1), producer);
    CHECK(hit.status == join_status::hit);
    CHECK(producer.started.size() == 1);
    CHECK(hit.joined.flight().joined_while_live() == 1);
    CHECK(reg.stats().retained_entries == 1);
    CHECK(reg.stats().retained_bytes == hit.joined.flight().retained_bytes());
    CHECK(reg.stats().retained_bytes > 6 + 32);  // body, head and bookkeeping
}

TEST_CASE("registry: a failed flight is never joined and the next request starts another") {
    flight_ids ids;
    local_registry reg(config(), ids);
    recording_producer producer;
    auto first = reg.join(key_named(1), producer);
    first.joined.flight().fail(ops::proxy_errc::upstream_closed);
    auto second = reg.join(key_named(1), producer);
    CHECK(second.status == join_status::leader);
    CHECK(producer.started.size() == 2);
    CHECK(&second.joined.flight() != &first.joined.flight());
    second.joined.flight().fail(ops::proxy_errc::upstream_closed);
}

TEST_CASE("registry: past max_subscribers_per_flight a join is full, never a second flight") {
    flight_ids ids;
    auto c = config();
    c.max_subscribers_per_flight = 2;
    local_registry reg(c, ids);
    recording_producer producer;
    auto a = reg.join(key_named(1), producer);
    auto b = reg.join(key_named(1), producer);
    auto full = reg.join(key_named(1), producer);
    CHECK(full.status == join_status::full);
    CHECK_FALSE(full.joined);
    CHECK(producer.started.size() == 1);
    b.joined.leave();  // room again
    auto again = reg.join(key_named(1), producer);
    CHECK(again.status == join_status::follower);
    a.joined.flight().fail(ops::proxy_errc::flight_cancelled);
}

TEST_CASE("registry: orphan cancel cancels a flight its last client left, and only then") {
    flight_ids ids;
    auto c = config();
    c.orphan = ops::orphan_policy::cancel;
    local_registry reg(c, ids);
    recording_producer producer;
    int cancels = 0;
    {
        auto a = reg.join(key_named(1), producer);
        a.joined.flight().set_canceller([&] { ++cancels; });
        auto b = reg.join(key_named(1), producer);
        a.joined.leave();
        CHECK(cancels == 0);  // b still wants it
    }
    CHECK(cancels == 1);
    auto next = reg.join(key_named(1), producer);
    CHECK(next.status == join_status::leader);  // a cancelled flight is never joined
    next.joined.flight().fail(ops::proxy_errc::flight_cancelled);
}

TEST_CASE("registry: after clear() joins are refused") {
    flight_ids ids;
    local_registry reg(config(), ids);
    recording_producer producer;
    {
        auto a = reg.join(key_named(1), producer);
        finish(a.joined.flight(), "x");
    }
    reg.clear();
    CHECK(reg.stats().retained_entries == 0);
    auto late = reg.join(key_named(1), producer);
    CHECK(late.status == join_status::closed);
    CHECK_FALSE(late.joined);
    CHECK(producer.started.size() == 1);
}

TEST_CASE("registry: past max_cache_bytes the least recently used entry goes first") {
    flight_ids ids;
    const std::string body(4096, 'x');
    local_registry probe(config(), ids);
    recording_producer p0;
    {
        auto j = probe.join(key_named(100), p0);
        finish(j.joined.flight(), body);
    }
    const std::size_t entry = probe.stats().retained_bytes;

    local_registry reg(config(3 * entry + entry / 2), ids);
    recording_producer producer;
    auto make = [&](std::uint32_t n) {
        auto j = reg.join(key_named(n), producer);
        REQUIRE(j.status == join_status::leader);
        finish(j.joined.flight(), body);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // distinct last-use times
    };
    make(1);
    make(2);
    make(3);
    CHECK(reg.stats().retained_entries == 3);
    CHECK(reg.join(key_named(1), producer).status == join_status::hit);  // 2 is now the oldest
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    make(4);
    CHECK(reg.stats().retained_entries == 3);
    CHECK(reg.stats().evictions == 1);
    CHECK(reg.join(key_named(1), producer).status == join_status::hit);
    auto two = reg.join(key_named(2), producer);
    CHECK(two.status == join_status::leader);  // evicted: a new flight
    two.joined.flight().fail(ops::proxy_errc::flight_cancelled);
}

TEST_CASE("registry: many retained entries evict without scanning them all") {
    // 20,000 entries through a budget of 1,000: each insertion evicts one; quadratic work would
    // take minutes here.
    flight_ids ids;
    const std::string body(64, 'x');
    local_registry probe(config(), ids);
    recording_producer p0;
    {
        auto j = probe.join(key_named(0), p0);
        finish(j.joined.flight(), body);
    }
    local_registry reg(config(1000 * probe.stats().retained_bytes), ids);
    recording_producer producer;
    for (std::uint32_t i = 1; i <= 20000; ++i) {
        auto j = reg.join(key_named(i), producer);
        REQUIRE(j.status == join_status::leader);
        finish(j.joined.flight(), body);
    }
    // Ids grow by a digit or two over the run: entries are a few bytes larger than the probe.
    const auto stats = reg.stats();
    CHECK(stats.retained_entries <= 1000);
    CHECK(stats.retained_entries >= 990);
    CHECK(stats.evictions == 20000 - stats.retained_entries);
}

TEST_CASE("registry: entries expire after result_ttl, hits do not extend it") {
    // Times are read, not assumed: a sleep on a loaded machine may last far longer than asked,
    // so the hit is checked only when the clock proves it came within result_ttl.
    using steady = std::chrono::steady_clock;
    constexpr auto ttl = std::chrono::milliseconds(500);
    flight_ids ids;
    local_registry reg(config(1024 * 1024, ttl), ids);
    recording_producer producer;
    const auto before_completion = steady::now();
    {
        auto j = reg.join(key_named(9), producer);
        finish(j.joined.flight(), "x");
    }
    const auto completed_by = steady::now();  // the entry expires by completed_by + ttl
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    {
        auto hit = reg.join(key_named(9), producer);
        if (steady::now() >= before_completion + ttl) {
            if (hit.status == join_status::leader) {
                hit.joined.flight().fail(ops::proxy_errc::flight_cancelled);
            }
            coalescer::test::skip_test("this thread was paused past result_ttl: nothing to check");
            return;
        }
        CHECK(hit.status == join_status::hit);
    }
    // Past the expiry the entry had at completion; a hit that extended it would keep it longer.
    std::this_thread::sleep_until(completed_by + ttl + std::chrono::milliseconds(1));
    reg.sweep();
    CHECK(reg.stats().retained_entries == 0);
    auto after = reg.join(key_named(9), producer);
    CHECK(after.status == join_status::leader);
    after.joined.flight().fail(ops::proxy_errc::flight_cancelled);
}

TEST_CASE("registry: result_ttl 0 keeps nothing and a join racing completion is never a hit") {
    flight_ids ids;
    local_registry reg(config(1024 * 1024, ops::duration::zero()), ids);
    recording_producer producer;
    auto leader = reg.join(key_named(5), producer);
    finish(leader.joined.flight(), "x");
    auto after = reg.join(key_named(5), producer);
    CHECK(after.status == join_status::leader);
    CHECK(reg.stats().retained_entries == 0);
    after.joined.flight().fail(ops::proxy_errc::flight_cancelled);
}
