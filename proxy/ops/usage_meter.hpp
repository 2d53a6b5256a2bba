// Provider tokens from each answer's own `usage`, counted as spent (an upstream call: the
// flight's fetch and the relay report them) and saved (a follower or hit served without one:
// the forwarder reports them), by upstream and model; and their /metrics families.
#pragma once

#include "ops/token_usage.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace coalescer::ops {

class usage_meter {
  public:
    explicit usage_meter(std::vector<std::string> upstream_names);
    usage_meter(const usage_meter&) = delete;
    usage_meter& operator=(const usage_meter&) = delete;

    void spent(std::size_t upstream, const token_usage& usage) noexcept;
    void saved(std::size_t upstream, const token_usage& usage) noexcept;

    // coalescer_tokens_spent_total and coalescer_tokens_saved_total.
    void render(std::string& out) const;

  private:
    struct counter {
        std::atomic<std::uint64_t> spent{0};
        std::atomic<std::uint64_t> saved{0};
    };
    counter& find(std::size_t upstream, const std::string& model);

    std::vector<std::string> upstream_names_;
    mutable std::mutex mutex_;  // guards the map; counters are atomics, never removed
    std::map<std::pair<std::size_t, std::string>, std::unique_ptr<counter>> counters_;
    static std::uint64_t next_instance() noexcept {
        static std::atomic<std::uint64_t> n{0};
        return ++n;
    }
    const std::uint64_t instance_ = next_instance();  // never 0, never reused
};

}  // namespace coalescer::ops
