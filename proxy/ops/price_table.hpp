// An upstream's price table (its `prices:`) and what a call's tokens cost by it: the model's
// own entry when one names it exactly, else the entry with the longest prefix ending in '*'
// that matches, else none (the call is not priced).
#pragma once

#include "ops/config.hpp"

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace coalescer::ops {

// A call's tokens by the kinds prices tell apart; disjoint (cached input is not also input).
struct priced_tokens {
    std::uint64_t input = 0;
    std::uint64_t cached_input = 0;
    std::uint64_t cache_write_input = 0;
    std::uint64_t output = 0;
};

class price_table {
  public:
    explicit price_table(std::vector<model_price> prices);

    const price_config* find(std::string_view model) const noexcept;
    // USD for one upstream call of `model` with `tokens` (per_request included); nullopt when
    // the model has no price.
    std::optional<double> cost(std::string_view model, const priced_tokens& tokens) const noexcept;

  private:
    std::vector<model_price> prices_;
};

}  // namespace coalescer::ops
