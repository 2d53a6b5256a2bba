// The circuit breaker in front of Redis, shared by every worker. After a failure the fleet is
// not asked for `cooldown` (flights are produced locally, as without `cluster:`), so a Redis
// that is down or stalled costs one command timeout per cooldown, not one per flight.
#pragma once

#include "ops/cluster_counters.hpp"

#include <atomic>
#include <chrono>

namespace coalescer::cluster {

class breaker {
  public:
    using clock = std::chrono::steady_clock;
    breaker(ops::cluster_counters& counters, clock::duration cooldown)
        : counters_(counters), cooldown_(cooldown) {}

    bool allows() const noexcept {
        return clock::now().time_since_epoch().count() >=
               closed_from_.load(std::memory_order_relaxed);
    }
    void succeeded() noexcept { counters_.redis_up.store(1, std::memory_order_relaxed); }
    void failed() noexcept {
        counters_.redis_up.store(0, std::memory_order_relaxed);
        closed_from_.store((clock::now() + cooldown_).time_since_epoch().count(),
                           std::memory_order_relaxed);
    }

  private:
    ops::cluster_counters& counters_;
    const clock::duration cooldown_;
    std::atomic<clock::rep> closed_from_{0};
};

}  // namespace coalescer::cluster
