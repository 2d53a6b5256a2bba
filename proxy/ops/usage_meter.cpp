#include "ops/usage_meter.hpp"

#include "ops/exposition.hpp"

#include <cmath>
#include <cstdio>

namespace coalescer::ops {

namespace {

constexpr std::array<std::string_view, 4> kind_names{"input", "cached_input", "cache_write_input",
                                                     "output"};
constexpr std::array<std::string_view, usage_missing_count> missing_names{"absent", "cut",
                                                                          "too_large"};

std::string usd_text(std::uint64_t nano) {
    char text[32];
    std::snprintf(text, sizeof text, "%llu.%09llu",
                  static_cast<unsigned long long>(nano / 1'000'000'000),
                  static_cast<unsigned long long>(nano % 1'000'000'000));
    return text;
}

}  // namespace

usage_meter::usage_meter(std::vector<std::string> upstream_names, std::vector<price_table> prices)
    : upstream_names_(std::move(upstream_names)),
      prices_(std::move(prices)),
      missing_(upstream_names_.size()) {}

// A figure no single call costs (negative, or a billion dollars) is no cost.
static bool plausible_usd(double usd) noexcept {
    return usd >= 0 && usd < 1e9;
}

std::optional<double> usage_meter::usd_of(std::size_t upstream,
                                          const token_usage& usage) const noexcept {
    if (usage.provider_cost_usd && plausible_usd(*usage.provider_cost_usd))
        return usage.provider_cost_usd;
    if (upstream >= prices_.size())
        return std::nullopt;
    return prices_[upstream].cost(
        usage.model,
        priced_tokens{usage.input, usage.cached_input, usage.cache_write_input, usage.output});
}

void usage_meter::tally::add(const token_usage& usage, std::optional<double> usd) noexcept {
    const std::array<std::uint64_t, kinds> by_kind{usage.input, usage.cached_input,
                                                   usage.cache_write_input, usage.output};
    for (std::size_t k = 0; k < kinds; ++k) {
        if (by_kind[k] != 0)
            tokens[k].fetch_add(by_kind[k], std::memory_order_relaxed);
    }
    if (usage.reasoning != 0)
        reasoning.fetch_add(usage.reasoning, std::memory_order_relaxed);
    if (usage.provider_cost_usd && plausible_usd(*usage.provider_cost_usd)) {
        cost_nano_usd.fetch_add(
            static_cast<std::uint64_t>(std::llround(*usage.provider_cost_usd * 1e9)),
            std::memory_order_relaxed);
        costed.store(true, std::memory_order_relaxed);
    }
    if (usd && plausible_usd(*usd)) {
        usd_nano.fetch_add(static_cast<std::uint64_t>(std::llround(*usd * 1e9)),
                           std::memory_order_relaxed);
        priced.store(true, std::memory_order_relaxed);
    }
}

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
        find(upstream, usage.model).spent.add(usage, usd_of(upstream, usage));
}

void usage_meter::saved(std::size_t upstream, const token_usage& usage,
                        std::optional<double> usd) noexcept {
    if (upstream < upstream_names_.size())
        find(upstream, usage.model).saved.add(usage, usd);
}

void usage_meter::missing(std::size_t upstream, usage_missing why) noexcept {
    if (upstream < missing_.size())
        missing_[upstream][static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
}

void usage_meter::render_tally(std::string& out, bool spent) const {
    const std::string_view tokens =
        spent ? "coalescer_tokens_spent_total" : "coalescer_tokens_saved_total";
    const std::string_view reasoning =
        spent ? "coalescer_reasoning_tokens_spent_total" : "coalescer_reasoning_tokens_saved_total";
    const std::string_view cost = spent ? "coalescer_provider_cost_spent_usd_total"
                                        : "coalescer_provider_cost_saved_usd_total";
    const auto labels_of = [this](const auto& key) {
        return label("upstream", upstream_names_[key.first]) + "," + label("model", key.second);
    };
    header(out, tokens, "counter",
           spent ? "Provider tokens billed for upstream calls, from usage, by kind (disjoint)."
                 : "Provider tokens followers and hits received without a call, by kind.");
    for (const auto& [key, c] : counters_) {
        const auto labels = labels_of(key);
        const auto& t = spent ? c->spent : c->saved;
        for (std::size_t k = 0; k < kinds; ++k)
            sample(out, tokens, labels + "," + label("kind", kind_names[k]),
                   std::to_string(t.tokens[k].load(std::memory_order_relaxed)));
    }
    header(out, reasoning, "counter",
           "Reasoning tokens reported by the provider (already counted in kind=\"output\").");
    for (const auto& [key, c] : counters_)
        sample(out, reasoning, labels_of(key),
               std::to_string(
                   (spent ? c->spent : c->saved).reasoning.load(std::memory_order_relaxed)));
    header(out, cost, "counter", "Cost the provider itself reported in its usage, in USD.");
    for (const auto& [key, c] : counters_) {
        const auto& t = spent ? c->spent : c->saved;
        if (t.costed.load(std::memory_order_relaxed))
            sample(out, cost, labels_of(key),
                   usd_text(t.cost_nano_usd.load(std::memory_order_relaxed)));
    }
    const std::string_view usd =
        spent ? "coalescer_cost_spent_usd_total" : "coalescer_cost_saved_usd_total";
    header(out, usd, "counter",
           spent ? "USD spent on upstream calls: the provider's reported cost, else the prices."
                 : "USD followers and hits saved: the provider's reported cost, else the prices.");
    for (const auto& [key, c] : counters_) {
        const auto& t = spent ? c->spent : c->saved;
        if (t.priced.load(std::memory_order_relaxed))
            sample(out, usd, labels_of(key), usd_text(t.usd_nano.load(std::memory_order_relaxed)));
    }
}

void usage_meter::render(std::string& out) const {
    std::lock_guard lock(mutex_);
    render_tally(out, true);
    render_tally(out, false);
    header(out, "coalescer_usage_missing_total", "counter",
           "Upstream calls answered 2xx whose token usage could not be read, so counted nothing.");
    for (std::size_t u = 0; u < missing_.size(); ++u) {
        for (std::size_t r = 0; r < usage_missing_count; ++r)
            sample(out, "coalescer_usage_missing_total",
                   label("upstream", upstream_names_[u]) + "," + label("reason", missing_names[r]),
                   std::to_string(missing_[u][r].load(std::memory_order_relaxed)));
    }
}

}  // namespace coalescer::ops
