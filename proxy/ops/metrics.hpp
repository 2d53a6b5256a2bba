// Counters and histograms for /metrics. Label sets are fixed at start-up (routes, upstreams,
// roles, status classes) and preallocated, so the request path only does relaxed atomic adds.
// Provider tokens are the usage meter's (usage_meter.hpp).
#pragma once

#include "ops/cluster_counters.hpp"
#include "ops/config.hpp"
#include "ops/errors.hpp"
#include "ops/histogram.hpp"
#include "ops/role.hpp"

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace coalescer::ops {

// What /metrics reads from the rest of the process when it renders.
struct gauges {
    std::size_t flights_in_flight = 0;
    std::size_t retained_entries = 0;
    std::size_t retained_bytes = 0;
    std::uint64_t evictions = 0;
    std::vector<std::size_t> pacer_queued;  // by upstream
    std::vector<int> pacer_in_use;          // by upstream
    std::vector<int> budget_fallback;       // by upstream: 1 while its fleet budget is local
};

class metrics {
  public:
    explicit metrics(const config& cfg);

    // route == cfg.routes.size() means "no route matched".
    void client_request(std::size_t route, ops::role role, unsigned status, double seconds,
                        std::optional<double> ttfb_seconds) noexcept;
    // One per attempt; status 0: no response (connect failure, timeout, reset).
    void upstream_call(std::size_t upstream, unsigned status) noexcept;
    void upstream_timing(std::size_t upstream, double ttfb_seconds, double seconds) noexcept;
    void upstream_retry(std::size_t upstream) noexcept;
    // A request sent again on a new connection after a reused one closed before answering.
    void upstream_resend(std::size_t upstream) noexcept;
    void upstream_protocol_error(std::size_t upstream, protocol_fault fault) noexcept;
    void pacer_wait(std::size_t upstream, double seconds) noexcept;
    void flight_finished(std::size_t subscribers) noexcept;
    void slow_subscriber_dropped() noexcept {
        slow_dropped_.fetch_add(1, std::memory_order_relaxed);
    }

    void connection_opened() noexcept { open_connections_.fetch_add(1, std::memory_order_relaxed); }
    void connection_closed() noexcept { open_connections_.fetch_sub(1, std::memory_order_relaxed); }
    std::int64_t open_connections() const noexcept {
        return open_connections_.load(std::memory_order_relaxed);
    }

    // Prometheus text exposition format 0.0.4.
    std::string render(const gauges& now) const;

    cluster_counters cluster;  // rendered when the config has a cluster: section

  private:
    void render_requests(std::string& out) const;
    void render_upstream_counters(std::string& out) const;
    void render_upstream_timings(std::string& out, const gauges& now) const;
    void render_process(std::string& out, const gauges& now) const;

    struct per_route {
        per_route() : duration(histogram::latency_seconds()), ttfb(histogram::latency_seconds()) {}
        histogram duration;
        histogram ttfb;
    };
    struct per_upstream {
        per_upstream()
            : ttfb(histogram::latency_seconds()),
              duration(histogram::latency_seconds()),
              pacer_wait(histogram::latency_seconds()) {}
        std::unique_ptr<std::atomic<std::uint64_t>[]> calls =
            std::make_unique<std::atomic<std::uint64_t>[]>(600);
        std::atomic<std::uint64_t> retries{0};
        std::atomic<std::uint64_t> resends{0};
        std::array<std::atomic<std::uint64_t>, protocol_fault_count> protocol_errors{};
        histogram ttfb;
        histogram duration;
        histogram pacer_wait;
    };
    static constexpr std::size_t roles = 5;
    static constexpr std::size_t classes = 6;  // 1xx..5xx, plus "other"

    std::vector<std::string> route_names_;  // prefixes, plus "none"
    std::vector<std::string> upstream_names_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> requests_;  // [route][role][class]
    std::vector<std::unique_ptr<per_route>> routes_;
    std::vector<std::unique_ptr<per_upstream>> upstreams_;
    histogram subscribers_{histogram::counts()};
    std::atomic<std::uint64_t> slow_dropped_{0};
    std::atomic<std::int64_t> open_connections_{0};
    bool clustered_ = false;
};

}  // namespace coalescer::ops
