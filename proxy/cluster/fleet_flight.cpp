#include "cluster/fleet_flight.hpp"

#include "cluster/stream_follower.hpp"
#include "cluster/stream_relay.hpp"

#include <string>
#include <vector>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;
using coalesce::flight;
using std::chrono::milliseconds;

namespace {

enum class claim_kind { won, taken, unavailable };
struct claim {
    claim_kind kind = claim_kind::unavailable;
    std::string holder;  // taken: the flight id the lease holds
};

// One round trip: SET NX GET answers nil when it set the key, or the value it found.
asio::awaitable<claim> claim_lease(redis_pool& pool, const redis_keys& keys,
                                   const std::string& id) {
    const auto lease = ms_text(pool.config().lease);
    // No braced list inside a co_await expression: GCC 12 rejects its array.
    const std::vector<std::string_view> set{"SET", keys.lease, id, "NX", "GET", "PX", lease};
    const auto r = co_await pool.run(set);
    if (r.ec || r.value.is_error())
        co_return claim{};
    if (r.value.is_nil())
        co_return claim{claim_kind::won, {}};
    if (!r.value.is_string())
        co_return claim{};
    co_return claim{claim_kind::taken, r.value.text};
}

}  // namespace

asio::awaitable<void> run_in_fleet(fleet& shared, std::shared_ptr<flight> f,
                                   coalesce::production local) {
    auto& pool = *shared.pools.at(local.worker);
    const auto keys = keys_for(f->key());
    bool taking_over = false;
    for (int attempt = 0; attempt < 3 && shared.health.allows(); ++attempt) {
        const auto claimed = co_await claim_lease(pool, keys, f->id());
        if (claimed.kind == claim_kind::unavailable)
            break;
        if (claimed.kind == claim_kind::won) {
            shared.counters.leases.fetch_add(1, std::memory_order_relaxed);
            if (taking_over)
                shared.counters.takeovers.fetch_add(1, std::memory_order_relaxed);
            co_await produce_here(shared, pool, f, keys, std::move(local));
            co_return;
        }
        const auto outcome = co_await follow(shared, pool, f, keys, claimed.holder);
        if (outcome == follow_outcome::ended)
            co_return;
        if (outcome == follow_outcome::unavailable)
            break;
        taking_over = true;  // the producer's lease lapsed before any byte reached a client here
        f->adopt_id(shared.ids.next());
    }
    shared.counters.fallbacks.fetch_add(1, std::memory_order_relaxed);
    co_await std::move(local.run);
}

}  // namespace coalescer::cluster
