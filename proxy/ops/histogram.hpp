// A Prometheus histogram with fixed buckets, updated with relaxed atomics only: observing
// never takes a lock, so it can sit on the request path of every worker at once.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace coalescer::ops {

class histogram {
  public:
    explicit histogram(std::vector<double> upper_bounds);
    histogram(const histogram&) = delete;
    histogram& operator=(const histogram&) = delete;

    void observe(double value) noexcept;

    // Appends `name_bucket{labels,le="…"}`, `name_sum{labels}` and `name_count{labels}` lines.
    void render(std::string& out, std::string_view name, std::string_view labels) const;

    static std::vector<double> latency_seconds();  // 1 ms … 10 min
    static std::vector<double> counts();           // 1 … 10000

  private:
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // one per bound, plus +Inf
    std::atomic<double> sum_{0};
};

}  // namespace coalescer::ops
