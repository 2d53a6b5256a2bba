#include "ops/histogram.hpp"

#include <algorithm>
#include <charconv>
#include <memory>

namespace coalescer::ops {

histogram::histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void histogram::observe(double value) noexcept {
    const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
    buckets_[static_cast<std::size_t>(at)].fetch_add(1, std::memory_order_relaxed);
    double current = sum_.load(std::memory_order_relaxed);
    while (!sum_.compare_exchange_weak(current, current + value, std::memory_order_relaxed)) {
    }
}

namespace {

// The shortest text that reads back as the same double: le="0.0025", not the
// "0.0025000000000000001" of %.17g, which dashboards show as a bucket name.
std::string number(double v) {
    char text[32];
    const auto end = std::to_chars(text, text + sizeof text, v).ptr;
    return std::string(text, end);
}

}  // namespace

void histogram::render(std::string& out, std::string_view name, std::string_view labels) const {
    // Appended piece by piece: GCC 12 misreads `"{" + std::string(...)` as an overflow.
    std::string prefix = "{";
    if (!labels.empty()) {
        prefix.append(labels).append(",");
    }
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        cumulative += buckets_[i].load(std::memory_order_relaxed);
        out += name;
        out += "_bucket";
        out += prefix;
        out += "le=\"";
        out += i < bounds_.size() ? number(bounds_[i]) : "+Inf";
        out += "\"} ";
        out += std::to_string(cumulative);
        out += '\n';
    }
    std::string label_set;
    if (!labels.empty()) {
        label_set.append("{").append(labels).append("}");
    }
    out += std::string(name) + "_sum" + label_set + " " +
           number(sum_.load(std::memory_order_relaxed)) + "\n";
    // _count equals the +Inf bucket as read above, so a scrape is always self-consistent.
    out += std::string(name) + "_count" + label_set + " " + std::to_string(cumulative) + "\n";
}

std::vector<double> histogram::latency_seconds() {
    return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1,     2.5,    5,     10,   30,    60,   120, 300,  600};
}

std::vector<double> histogram::counts() {
    return {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};
}

}  // namespace coalescer::ops
