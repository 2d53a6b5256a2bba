#include "ops/price_table.hpp"

#include <utility>

namespace coalescer::ops {

price_table::price_table(std::vector<model_price> prices) : prices_(std::move(prices)) {}

const price_config* price_table::find(std::string_view model) const noexcept {
    const price_config* best = nullptr;
    std::size_t best_prefix = 0;
    for (const auto& p : prices_) {
        const std::string_view name = p.model;
        if (name == model)
            return &p.price;
        if (name.empty() || name.back() != '*')
            continue;
        const auto prefix = name.substr(0, name.size() - 1);
        if (model.starts_with(prefix) && (best == nullptr || prefix.size() > best_prefix)) {
            best = &p.price;
            best_prefix = prefix.size();
        }
    }
    return best;
}

std::optional<double> price_table::cost(std::string_view model,
                                        const priced_tokens& tokens) const noexcept {
    const auto* p = find(model);
    if (p == nullptr)
        return std::nullopt;
    const double per_token = 1e-6;
    const double cached = p->cached_input_per_mtok.value_or(p->input_per_mtok);
    const double cache_write = p->cache_write_input_per_mtok.value_or(p->input_per_mtok);
    return per_token * (static_cast<double>(tokens.input) * p->input_per_mtok +
                        static_cast<double>(tokens.cached_input) * cached +
                        static_cast<double>(tokens.cache_write_input) * cache_write +
                        static_cast<double>(tokens.output) * p->output_per_mtok) +
           p->per_request;
}

}  // namespace coalescer::ops
