#include "ops/metrics.hpp"

#include "ops/exposition.hpp"

namespace coalescer::ops {
namespace {

std::size_t status_class(unsigned status) noexcept {
    return (status >= 100 && status < 600) ? status / 100 - 1 : 5;
}

constexpr std::string_view class_names[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};

}  // namespace

metrics::metrics(const config& cfg) : clustered_(cfg.cluster.has_value()) {
    for (const auto& r : cfg.routes)
        route_names_.push_back(r.prefix);
    route_names_.push_back("none");
    for (const auto& u : cfg.upstreams)
        upstream_names_.push_back(u.name);
    requests_ =
        std::make_unique<std::atomic<std::uint64_t>[]>(route_names_.size() * roles * classes);
    for (std::size_t i = 0; i < route_names_.size(); ++i)
        routes_.push_back(std::make_unique<per_route>());
    for (std::size_t i = 0; i < upstream_names_.size(); ++i)
        upstreams_.push_back(std::make_unique<per_upstream>());
}

void metrics::client_request(std::size_t route, ops::role role, unsigned status, double seconds,
                             std::optional<double> ttfb_seconds) noexcept {
    route = std::min(route, route_names_.size() - 1);
    const auto i =
        (route * roles + static_cast<std::size_t>(role)) * classes + status_class(status);
    requests_[i].fetch_add(1, std::memory_order_relaxed);
    routes_[route]->duration.observe(seconds);
    if (ttfb_seconds)
        routes_[route]->ttfb.observe(*ttfb_seconds);
}

void metrics::upstream_call(std::size_t upstream, unsigned status) noexcept {
    if (upstream < upstreams_.size()) {
        upstreams_[upstream]->calls[status < 600 ? status : 0].fetch_add(1,
                                                                         std::memory_order_relaxed);
    }
}

void metrics::upstream_timing(std::size_t upstream, double ttfb_seconds, double seconds) noexcept {
    if (upstream < upstreams_.size()) {
        upstreams_[upstream]->ttfb.observe(ttfb_seconds);
        upstreams_[upstream]->duration.observe(seconds);
    }
}

void metrics::upstream_resend(std::size_t upstream) noexcept {
    if (upstream < upstreams_.size())
        upstreams_[upstream]->resends.fetch_add(1, std::memory_order_relaxed);
}

void metrics::upstream_protocol_error(std::size_t upstream, protocol_fault fault) noexcept {
    if (upstream < upstreams_.size())
        upstreams_[upstream]->protocol_errors[static_cast<std::size_t>(fault)].fetch_add(
            1, std::memory_order_relaxed);
}

void metrics::upstream_retry(std::size_t upstream) noexcept {
    if (upstream < upstreams_.size())
        upstreams_[upstream]->retries.fetch_add(1, std::memory_order_relaxed);
}

void metrics::pacer_wait(std::size_t upstream, double seconds) noexcept {
    if (upstream < upstreams_.size())
        upstreams_[upstream]->pacer_wait.observe(seconds);
}

void metrics::flight_finished(std::size_t subscribers) noexcept {
    subscribers_.observe(static_cast<double>(subscribers));
}

std::string metrics::render(const gauges& now) const {
    std::string out;
    out.reserve(16 * 1024);
    render_requests(out);
    render_upstream_counters(out);
    render_upstream_timings(out, now);
    render_process(out, now);
    if (clustered_)
        cluster.render(out);
    return out;
}

void metrics::render_requests(std::string& out) const {
    header(out, "coalescer_requests_total", "counter",
           "Client requests answered, by route, role and status class.");
    for (std::size_t r = 0; r < route_names_.size(); ++r) {
        for (std::size_t role = 0; role < roles; ++role) {
            for (std::size_t c = 0; c < classes; ++c) {
                const auto v =
                    requests_[(r * roles + role) * classes + c].load(std::memory_order_relaxed);
                if (v == 0)
                    continue;
                sample(out, "coalescer_requests_total",
                       label("route", route_names_[r]) + "," +
                           label("role", to_string(static_cast<ops::role>(role))) + "," +
                           label("status_class", class_names[c]),
                       std::to_string(v));
            }
        }
    }
    header(out, "coalescer_request_duration_seconds", "histogram",
           "Client request duration, by route.");
    for (std::size_t r = 0; r < route_names_.size(); ++r)
        routes_[r]->duration.render(out, "coalescer_request_duration_seconds",
                                    label("route", route_names_[r]));
    header(out, "coalescer_request_ttfb_seconds", "histogram",
           "Time to the first response byte a client got, by route.");
    for (std::size_t r = 0; r < route_names_.size(); ++r)
        routes_[r]->ttfb.render(out, "coalescer_request_ttfb_seconds",
                                label("route", route_names_[r]));
}

void metrics::render_upstream_counters(std::string& out) const {
    header(out, "coalescer_upstream_calls_total", "counter",
           "Upstream attempts, by upstream and status (0: no response).");
    for (std::size_t u = 0; u < upstreams_.size(); ++u) {
        for (std::size_t s = 0; s < 600; ++s) {
            const auto v = upstreams_[u]->calls[s].load(std::memory_order_relaxed);
            if (v != 0)
                sample(out, "coalescer_upstream_calls_total",
                       label("upstream", upstream_names_[u]) + "," +
                           label("status", std::to_string(s)),
                       std::to_string(v));
        }
    }
    header(out, "coalescer_upstream_retries_total", "counter",
           "Upstream attempts repeated (connect failures, 429, 503).");
    for (std::size_t u = 0; u < upstreams_.size(); ++u)
        sample(out, "coalescer_upstream_retries_total", label("upstream", upstream_names_[u]),
               std::to_string(upstreams_[u]->retries.load(std::memory_order_relaxed)));
    header(out, "coalescer_upstream_resends_total", "counter",
           "Requests sent again on a new connection because a reused one closed before any "
           "answer, too soon for the upstream to have started on them.");
    for (std::size_t u = 0; u < upstreams_.size(); ++u)
        sample(out, "coalescer_upstream_resends_total", label("upstream", upstream_names_[u]),
               std::to_string(upstreams_[u]->resends.load(std::memory_order_relaxed)));
    header(out, "coalescer_upstream_protocol_errors_total", "counter",
           "Upstream answers that broke HTTP, by kind (trailing_bytes: bytes after a complete "
           "answer; the connection was closed, not reused).");
    for (std::size_t u = 0; u < upstreams_.size(); ++u)
        for (std::size_t k = 0; k < protocol_fault_count; ++k)
            sample(
                out, "coalescer_upstream_protocol_errors_total",
                label("upstream", upstream_names_[u]) + "," +
                    label("kind", to_string(static_cast<protocol_fault>(k))),
                std::to_string(upstreams_[u]->protocol_errors[k].load(std::memory_order_relaxed)));
}

void metrics::render_upstream_timings(std::string& out, const gauges& now) const {
    header(out, "coalescer_upstream_ttfb_seconds", "histogram",
           "Time from sending a request upstream to its response head.");
    for (std::size_t u = 0; u < upstreams_.size(); ++u)
        upstreams_[u]->ttfb.render(out, "coalescer_upstream_ttfb_seconds",
                                   label("upstream", upstream_names_[u]));
    header(out, "coalescer_upstream_duration_seconds", "histogram",
           "Upstream exchange duration, head and body.");
    for (std::size_t u = 0; u < upstreams_.size(); ++u)
        upstreams_[u]->duration.render(out, "coalescer_upstream_duration_seconds",
                                       label("upstream", upstream_names_[u]));
    header(out, "coalescer_pacer_wait_seconds", "histogram",
           "Time flights waited for an upstream slot.");
    for (std::size_t u = 0; u < upstreams_.size(); ++u)
        upstreams_[u]->pacer_wait.render(out, "coalescer_pacer_wait_seconds",
                                         label("upstream", upstream_names_[u]));
    header(out, "coalescer_pacer_queue_depth", "gauge",
           "Flights waiting for an upstream slot now.");
    for (std::size_t u = 0; u < upstreams_.size() && u < now.pacer_queued.size(); ++u)
        sample(out, "coalescer_pacer_queue_depth", label("upstream", upstream_names_[u]),
               std::to_string(now.pacer_queued[u]));
    header(out, "coalescer_pacer_in_use", "gauge", "Upstream slots taken now.");
    for (std::size_t u = 0; u < upstreams_.size() && u < now.pacer_in_use.size(); ++u)
        sample(out, "coalescer_pacer_in_use", label("upstream", upstream_names_[u]),
               std::to_string(now.pacer_in_use[u]));
    header(out, "coalescer_fleet_budget_fallback", "gauge",
           "1 while the upstream's fleet budget is enforced at this pod's fallback_share.");
    for (std::size_t u = 0; u < upstreams_.size() && u < now.budget_fallback.size(); ++u)
        sample(out, "coalescer_fleet_budget_fallback", label("upstream", upstream_names_[u]),
               std::to_string(now.budget_fallback[u]));
}

void metrics::render_process(std::string& out, const gauges& now) const {
    header(out, "coalescer_flights_in_flight", "gauge", "Upstream exchanges in progress.");
    sample(out, "coalescer_flights_in_flight", "", std::to_string(now.flights_in_flight));
    header(out, "coalescer_subscribers_per_flight", "histogram",
           "Clients that shared one coalesced upstream call while it ran.");
    subscribers_.render(out, "coalescer_subscribers_per_flight", "");
    header(out, "coalescer_retained_entries", "gauge", "Completed responses kept for result_ttl.");
    sample(out, "coalescer_retained_entries", "", std::to_string(now.retained_entries));
    header(out, "coalescer_retained_bytes", "gauge", "Body bytes of the retained responses.");
    sample(out, "coalescer_retained_bytes", "", std::to_string(now.retained_bytes));
    header(out, "coalescer_evictions_total", "counter",
           "Retained responses evicted to stay within max_cache_bytes.");
    sample(out, "coalescer_evictions_total", "", std::to_string(now.evictions));
    header(out, "coalescer_slow_subscribers_dropped_total", "counter",
           "Clients disconnected for not reading in time.");
    sample(out, "coalescer_slow_subscribers_dropped_total", "",
           std::to_string(slow_dropped_.load(std::memory_order_relaxed)));
    header(out, "coalescer_open_connections", "gauge", "Client connections open now.");
    sample(out, "coalescer_open_connections", "", std::to_string(open_connections()));
}

}  // namespace coalescer::ops
