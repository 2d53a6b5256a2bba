// The fleet budget of one process: without `cluster:` it is the fleet, with it each pod falls
// back to one (at fallback_share of every limit) while Redis is unreachable. Requests per
// minute and tokens per minute are weighted GCRAs (gcra.hpp): requests with one second's worth
// of burst, tokens with a whole minute's, reserved at admission and settled by the difference
// with the answer's usage. Concurrency is a count. Shared by every worker, under one mutex held
// for a few arithmetic operations per call.
#pragma once

#include "ops/config.hpp"
#include "upstream/budget.hpp"
#include "upstream/gcra.hpp"

#include <chrono>
#include <mutex>
#include <optional>

namespace coalescer::upstream {

class local_budget final : public fleet_budget {
  public:
    using clock = std::chrono::steady_clock;
    // How soon a call refused for want of a concurrent slot asks again.
    static constexpr std::chrono::milliseconds concurrency_poll{20};

    // Every limit scaled by `share` (rounded down, at least 1).
    explicit local_budget(const ops::fleet_limits_config& limits, double share = 1.0);

    boost::asio::awaitable<budget_decision> try_admit(std::uint64_t tokens,
                                                      std::size_t worker) override;
    void finish(const budget_decision& admitted, std::optional<std::uint64_t> used) override;
    void block_until(std::chrono::system_clock::time_point until) override;

    // try_admit without a coroutine, at `now`.
    budget_decision admit(std::uint64_t tokens, clock::time_point now = clock::now());
    std::uint64_t in_use() const;
    // How long the provider's block lasts from now (0: none).
    std::chrono::milliseconds blocked_for() const;

  private:
    double seconds(clock::time_point t) const;

    const clock::time_point epoch_ = clock::now();
    mutable std::mutex mutex_;
    std::optional<gcra> requests_;
    std::optional<gcra> tokens_;
    std::uint64_t tokens_per_minute_ = 0;
    std::uint64_t max_concurrent_ = 0;  // 0 = no limit
    std::uint64_t in_use_ = 0;
    clock::time_point blocked_until_{};
    std::uint64_t next_lease_ = 1;
};

}  // namespace coalescer::upstream
