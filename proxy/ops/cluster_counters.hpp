// What a replica counts of its coalescing across replicas (the `cluster:` section), rendered on
// /metrics when that section is configured.
#pragma once

#include "ops/histogram.hpp"

#include <atomic>
#include <cstdint>
#include <string>

namespace coalescer::ops {

struct cluster_counters {
    std::atomic<std::uint64_t> leases{0};          // this pod produced a flight for the fleet
    std::atomic<std::uint64_t> remote_follows{0};  // a flight another pod is producing, followed
    std::atomic<std::uint64_t> remote_hits{0};     // a completed answer of another pod, replayed
    std::atomic<std::uint64_t> takeovers{0};       // a lapsed leader's flight produced here
    std::atomic<std::uint64_t> fenced_appends{0};  // appends refused: the lease was lost
    std::atomic<std::uint64_t> fallbacks{0};       // flights produced locally: Redis unavailable
    std::atomic<int> redis_up{0};
    histogram command_seconds{
        {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0}};

    void render(std::string& out) const;
};

}  // namespace coalescer::ops
