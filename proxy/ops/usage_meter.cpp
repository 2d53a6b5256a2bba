#include "ops/usage_meter.hpp"

#include "ops/exposition.hpp"

namespace coalescer::ops {

usage_meter::usage_meter(std::vector<std::string> upstream_names)
    : upstream_names_(std::move(upstream_names)) {}

usage_meter::counter& usage_meter::find(std::size_t upstream, const std::string& model) {
    // A worker's answers mostly name the same model: the last lookup is remembered per thread
    // rather than taking the shared lock on every answer. The instance number (not the
    // address) tells a later meter apart.
    struct last_lookup {
        std::uint64_t instance = 0;
        std::size_t upstream = 0;
        std::string model;
        counter* found = nullptr;
    };
    thread_local last_lookup last;
    if (last.instance == instance_ && last.upstream == upstream && last.model == model) {
        return *last.found;
    }
    std::lock_guard lock(mutex_);
    auto& slot = counters_[{upstream, model}];
    if (!slot)
        slot = std::make_unique<counter>();
    last = {instance_, upstream, model, slot.get()};
    return *slot;
}

void usage_meter::spent(std::size_t upstream, const token_usage& usage) noexcept {
    if (upstream < upstream_names_.size())
        find(upstream, usage.model).spent.fetch_add(usage.tokens, std::memory_order_relaxed);
}

void usage_meter::saved(std::size_t upstream, const token_usage& usage) noexcept {
    if (upstream < upstream_names_.size())
        find(upstream, usage.model).saved.fetch_add(usage.tokens, std::memory_order_relaxed);
}

void usage_meter::render(std::string& out) const {
    std::lock_guard lock(mutex_);
    header(out, "coalescer_tokens_spent_total", "counter",
           "Provider tokens billed for upstream calls, from usage.");
    for (const auto& [key, c] : counters_)
        sample(out, "coalescer_tokens_spent_total",
               label("upstream", upstream_names_[key.first]) + "," + label("model", key.second),
               std::to_string(c->spent.load(std::memory_order_relaxed)));
    header(out, "coalescer_tokens_saved_total", "counter",
           "Provider tokens followers and hits received without a call.");
    for (const auto& [key, c] : counters_)
        sample(out, "coalescer_tokens_saved_total",
               label("upstream", upstream_names_[key.first]) + "," + label("model", key.second),
               std::to_string(c->saved.load(std::memory_order_relaxed)));
}

}  // namespace coalescer::ops
