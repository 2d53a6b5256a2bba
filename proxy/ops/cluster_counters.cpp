#include "ops/cluster_counters.hpp"

#include "ops/exposition.hpp"

namespace coalescer::ops {
namespace {

void counter(std::string& out, const char* name, const char* help,
             const std::atomic<std::uint64_t>& value) {
    header(out, name, "counter", help);
    sample(out, name, "", std::to_string(value.load(std::memory_order_relaxed)));
}

}  // namespace

void cluster_counters::render(std::string& out) const {
    counter(out, "coalescer_cluster_leases_total",
            "Flights this pod produced for the fleet (it won the key's lease).", leases);
    counter(out, "coalescer_cluster_remote_follows_total",
            "Flights another pod was producing, streamed here from Redis.", remote_follows);
    counter(out, "coalescer_cluster_remote_hits_total",
            "Completed answers of another pod, replayed here from Redis.", remote_hits);
    counter(out, "coalescer_cluster_takeovers_total",
            "Flights produced here after their leader's lease lapsed.", takeovers);
    counter(out, "coalescer_cluster_fenced_appends_total",
            "Appends (or lease renewals) Redis refused because this pod no longer held the lease.",
            fenced_appends);
    counter(out, "coalescer_cluster_fallbacks_total",
            "Flights produced without the fleet because Redis was unavailable.", fallbacks);
    header(out, "coalescer_cluster_redis_up", "gauge",
           "1 when the last exchange with Redis succeeded.");
    sample(out, "coalescer_cluster_redis_up", "",
           std::to_string(redis_up.load(std::memory_order_relaxed)));
    header(out, "coalescer_cluster_redis_command_seconds", "histogram",
           "Redis command round trips (blocking reads excluded).");
    command_seconds.render(out, "coalescer_cluster_redis_command_seconds", "");
}

}  // namespace coalescer::ops
