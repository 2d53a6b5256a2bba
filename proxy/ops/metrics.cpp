#include "ops/metrics.hpp"

#include "coalesce/registry.hpp"

namespace coalescer::ops {
namespace {

constexpr std::size_t statuses = 600;

std::string escape_label(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

std::size_t status_class(unsigned status) noexcept {
    return (status >= 100 && status < 600) ? status / 100 - 1 : 5;
}

constexpr std::string_view class_names[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};

}  // namespace

metrics::metrics(const config& cfg) {
    for (const auto& r : cfg.routes) route_names_.push_back(r.prefix);
    route_names_.push_back("none");
    for (const auto& u : cfg.upstreams) upstream_names_.push_back(u.name);
    requests_ = std::make_unique<std::atomic<std::uint64_t>[]>(route_names_.size() * roles * classes);
    upstream_ = std::make_unique<std::atomic<std::uint64_t>[]>(upstream_names_.size() * statuses);
    retries_ = std::make_unique<std::atomic<std::uint64_t>[]>(upstream_names_.size());
}

void metrics::client_request(std::size_t route, coalesce::role role, unsigned status) noexcept {
    route = std::min(route, route_names_.size() - 1);
    const auto i = (route * roles + static_cast<std::size_t>(role)) * classes + status_class(status);
    requests_[i].fetch_add(1, std::memory_order_relaxed);
}

void metrics::upstream_call(std::size_t upstream, unsigned status) noexcept {
    if (upstream < upstream_names_.size()) {
        upstream_[upstream * statuses + (status < statuses ? status : 0)].fetch_add(1, std::memory_order_relaxed);
    }
}

void metrics::upstream_retry(std::size_t upstream) noexcept {
    if (upstream < upstream_names_.size()) {
        retries_[upstream].fetch_add(1, std::memory_order_relaxed);
    }
}

std::string metrics::render(const coalesce::registry& flights) const {
    std::string out;
    out += "# HELP coalescer_requests_total Client requests answered, by route, role and status class.\n";
    out += "# TYPE coalescer_requests_total counter\n";
    for (std::size_t r = 0; r < route_names_.size(); ++r) {
        for (std::size_t role = 0; role < roles; ++role) {
            for (std::size_t c = 0; c < classes; ++c) {
                const auto v = requests_[(r * roles + role) * classes + c].load(std::memory_order_relaxed);
                if (v == 0) continue;
                out += "coalescer_requests_total{route=\"" + escape_label(route_names_[r]) + "\",role=\"";
                out += coalesce::to_string(static_cast<coalesce::role>(role));
                out += "\",status_class=\"";
                out += class_names[c];
                out += "\"} " + std::to_string(v) + "\n";
            }
        }
    }
    out += "# HELP coalescer_upstream_calls_total Upstream calls, by upstream and status (0: no response).\n";
    out += "# TYPE coalescer_upstream_calls_total counter\n";
    for (std::size_t u = 0; u < upstream_names_.size(); ++u) {
        for (std::size_t s = 0; s < statuses; ++s) {
            const auto v = upstream_[u * statuses + s].load(std::memory_order_relaxed);
            if (v == 0) continue;
            out += "coalescer_upstream_calls_total{upstream=\"" + escape_label(upstream_names_[u]) +
                   "\",status=\"" + std::to_string(s) + "\"} " + std::to_string(v) + "\n";
        }
    }
    out += "# HELP coalescer_upstream_retries_total Upstream attempts repeated (connect failures, 429, 503).\n";
    out += "# TYPE coalescer_upstream_retries_total counter\n";
    for (std::size_t u = 0; u < upstream_names_.size(); ++u) {
        out += "coalescer_upstream_retries_total{upstream=\"" + escape_label(upstream_names_[u]) + "\"} " +
               std::to_string(retries_[u].load(std::memory_order_relaxed)) + "\n";
    }
    out += "# HELP coalescer_flights_in_flight Upstream exchanges in progress.\n";
    out += "# TYPE coalescer_flights_in_flight gauge\n";
    out += "coalescer_flights_in_flight " + std::to_string(flights.live_flights()) + "\n";
    out += "# HELP coalescer_retained_entries Completed responses kept for result_ttl.\n";
    out += "# TYPE coalescer_retained_entries gauge\n";
    out += "coalescer_retained_entries " + std::to_string(flights.retained_entries()) + "\n";
    out += "# HELP coalescer_retained_bytes Body bytes of the retained responses.\n";
    out += "# TYPE coalescer_retained_bytes gauge\n";
    out += "coalescer_retained_bytes " + std::to_string(flights.retained_bytes()) + "\n";
    out += "# HELP coalescer_evictions_total Retained responses evicted to stay within max_cache_bytes.\n";
    out += "# TYPE coalescer_evictions_total counter\n";
    out += "coalescer_evictions_total " + std::to_string(flights.evictions()) + "\n";
    out += "# HELP coalescer_open_connections Client connections open now.\n";
    out += "# TYPE coalescer_open_connections gauge\n";
    out += "coalescer_open_connections " + std::to_string(open_connections()) + "\n";
    return out;
}

}  // namespace coalescer::ops
