// Counters for /metrics. Label sets are fixed at start-up (routes, upstreams, roles, status
// classes), so every counter is a preallocated relaxed atomic: no lock on the request path.
#pragma once

#include "coalesce/flight.hpp"
#include "ops/config.hpp"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace coalescer::coalesce {
class registry;
}

namespace coalescer::ops {

class metrics {
public:
    explicit metrics(const config& cfg);

    // route == cfg.routes.size() means "no route matched".
    void client_request(std::size_t route, coalesce::role role, unsigned status) noexcept;
    // status 0: no response (connect failure, timeout, reset).
    void upstream_call(std::size_t upstream, unsigned status) noexcept;
    void upstream_retry(std::size_t upstream) noexcept;
    void connection_opened() noexcept { open_connections_.fetch_add(1, std::memory_order_relaxed); }
    void connection_closed() noexcept { open_connections_.fetch_sub(1, std::memory_order_relaxed); }
    std::int64_t open_connections() const noexcept { return open_connections_.load(std::memory_order_relaxed); }

    // Prometheus text exposition format 0.0.4.
    std::string render(const coalesce::registry& flights) const;

private:
    static constexpr std::size_t roles = 5;
    static constexpr std::size_t classes = 6;  // 1xx..5xx, plus "other"
    std::vector<std::string> route_names_;     // prefixes, plus "none"
    std::vector<std::string> upstream_names_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> requests_;  // [route][role][class]
    std::unique_ptr<std::atomic<std::uint64_t>[]> upstream_;  // [upstream][status 0..599]
    std::unique_ptr<std::atomic<std::uint64_t>[]> retries_;   // [upstream]
    std::atomic<std::int64_t> open_connections_{0};
};

}  // namespace coalescer::ops
