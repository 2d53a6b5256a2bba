// The fleet budget of an upstream held in Redis, for every pod of the fleet at once. One Lua
// script admits a call atomically, on Redis's clock (pods' clocks may differ):
//  - requests per minute by GCRA (gcra.hpp): one key holding the theoretical arrival time,
//    O(1) memory whatever the rate, an exact burst allowance (one second's worth), and a
//    refusal that says how long until a call would pass: the client's Retry-After;
//  - tokens per minute by the same arithmetic weighted by the call's estimate, a minute's worth
//    of burst, settled by the difference with the answer's usage when the call ends;
//  - concurrency by leased slots: a sorted set of slot id → expiry, expired members dropped at
//    each admission, renewed by their pod every lease/3 while the call runs, so the slots of a
//    pod that died come back when their lease lapses;
//  - a provider's "no call before" time (provider_limits.hpp), which every pod obeys.
// Redis unreachable (breaker open, command failed or timed out): each pod admits from a local
// budget at fallback_share of every limit until Redis answers again.
#pragma once

#include "cluster/breaker.hpp"
#include "cluster/redis_pool.hpp"
#include "ops/config.hpp"
#include "upstream/budget.hpp"
#include "upstream/local_budget.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace coalescer::cluster {

class redis_budget final : public upstream::fleet_budget {
  public:
    // How soon a call refused for want of a concurrent slot asks Redis again.
    static constexpr std::chrono::milliseconds concurrency_poll{50};

    // `pools`: every worker's, by worker index; `loops`: their executors. Starts each worker's
    // slot renewal.
    redis_budget(const ops::upstream_config& upstream, const ops::cluster_config& cluster,
                 std::vector<std::unique_ptr<redis_pool>>& pools, breaker& health,
                 const std::vector<boost::asio::any_io_executor>& loops);

    boost::asio::awaitable<upstream::budget_decision> try_admit(std::uint64_t tokens,
                                                                std::size_t worker) override;
    void finish(const upstream::budget_decision& admitted,
                std::optional<std::uint64_t> used) override;
    void block_until(std::chrono::system_clock::time_point until) override;
    bool falling_back() const noexcept override {
        return falling_back_.load(std::memory_order_relaxed);
    }

  private:
    boost::asio::awaitable<upstream::budget_decision> admit_in_redis(std::uint64_t tokens,
                                                                     std::size_t worker, bool& ok);
    boost::asio::awaitable<void> release(upstream::budget_decision admitted,
                                         std::int64_t token_delta);
    boost::asio::awaitable<void> renew_slots(std::size_t worker);
    // Tells every pod: no call for `ms` from now (on Redis's clock).
    boost::asio::awaitable<void> publish_block(std::chrono::milliseconds ms);
    std::string slot_id(std::uint64_t lease) const;

    const ops::fleet_limits_config limits_;
    const ops::cluster_config& cluster_;
    std::vector<std::unique_ptr<redis_pool>>& pools_;
    breaker& health_;
    std::vector<boost::asio::any_io_executor> loops_;
    upstream::local_budget fallback_;
    const std::string rpm_key_, tpm_key_, slots_key_, blocked_key_;
    const std::string pod_;  // random: names this pod's slots
    std::atomic<std::uint64_t> next_lease_{1};
    std::atomic<bool> falling_back_{false};
    // By worker, each touched on its worker's thread only: the slots it holds, to renew.
    std::vector<std::set<std::uint64_t>> held_;
};

}  // namespace coalescer::cluster
