// Provider tokens from each answer's own `usage`, counted as spent (an upstream call: the
// flight's fetch and the relay report them) and saved (a follower or hit served without one:
// the forwarder reports them), by upstream, model and kind; reasoning tokens and the provider's
// own cost beside them; what they cost in USD (the provider's figure, else the upstream's price
// table); answers whose usage could not be read; and their /metrics families.
#pragma once

#include "ops/price_table.hpp"
#include "ops/token_usage.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace coalescer::ops {

// Why an upstream call's 2xx answer was counted as nothing.
enum class usage_missing : std::uint8_t {
    absent,     // complete, but no usage: a stream ended before it, or was never asked for it
    cut,        // the answer ended early: the upstream broke off, or it was cancelled
    too_large,  // too large to keep for reading: its start was freed while it streamed
};
inline constexpr std::size_t usage_missing_count = 3;

class usage_meter {
  public:
    // `prices`: by upstream, as `upstream_names` (none: nothing priced by a table).
    explicit usage_meter(std::vector<std::string> upstream_names,
                         std::vector<price_table> prices = {});
    usage_meter(const usage_meter&) = delete;
    usage_meter& operator=(const usage_meter&) = delete;

    void spent(std::size_t upstream, const token_usage& usage) noexcept;
    // `usd`: usd_of(upstream, usage), which the caller has already worked out for its log line.
    void saved(std::size_t upstream, const token_usage& usage, std::optional<double> usd) noexcept;
    void missing(std::size_t upstream, usage_missing why) noexcept;
    // What an answer with `usage` cost in USD: the provider's figure, else the upstream's price
    // table; nullopt when neither prices it.
    std::optional<double> usd_of(std::size_t upstream, const token_usage& usage) const noexcept;

    // coalescer_tokens_{spent,saved}_total{upstream,model,kind},
    // coalescer_reasoning_tokens_{spent,saved}_total,
    // coalescer_provider_cost_{spent,saved}_usd_total, coalescer_cost_{spent,saved}_usd_total and
    // coalescer_usage_missing_total{upstream,reason}.
    void render(std::string& out) const;

  private:
    static constexpr std::size_t kinds = 4;  // input, cached_input, cache_write_input, output
    // One direction (spent or saved) of one upstream and model.
    struct tally {
        std::array<std::atomic<std::uint64_t>, kinds> tokens{};
        std::atomic<std::uint64_t> reasoning{0};
        std::atomic<std::uint64_t> cost_nano_usd{0};  // integral: sums exactly
        std::atomic<bool> costed{false};
        std::atomic<std::uint64_t> usd_nano{0};  // provider's figure, else the price table's
        std::atomic<bool> priced{false};
        void add(const token_usage& usage, std::optional<double> usd) noexcept;
    };
    struct counter {
        tally spent, saved;
    };
    counter& find(std::size_t upstream, const std::string& model);
    void render_tally(std::string& out, bool spent) const;

    std::vector<std::string> upstream_names_;
    std::vector<price_table> prices_;
    std::vector<std::array<std::atomic<std::uint64_t>, usage_missing_count>> missing_;
    mutable std::mutex mutex_;  // guards the map; counters are atomics, never removed
    std::map<std::pair<std::size_t, std::string>, std::unique_ptr<counter>> counters_;
    static std::uint64_t next_instance() noexcept {
        static std::atomic<std::uint64_t> n{0};
        return ++n;
    }
    const std::uint64_t instance_ = next_instance();  // never 0, never reused
};

}  // namespace coalescer::ops
