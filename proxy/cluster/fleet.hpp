// What a pod's fleet flights share, and how a key is named in Redis.
#pragma once

#include "cluster/breaker.hpp"
#include "cluster/redis_pool.hpp"
#include "coalesce/flight_id.hpp"
#include "coalesce/flight_key.hpp"
#include "ops/cluster_counters.hpp"
#include "ops/config.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace coalescer::cluster {

// What every fleet flight of the process shares.
struct fleet {
    const ops::cluster_config& config;
    ops::duration result_ttl;
    ops::cluster_counters& counters;
    breaker& health;
    coalesce::flight_ids& ids;
    std::vector<std::unique_ptr<redis_pool>>& pools;  // by worker
};

// A key's lease and, per flight, its stream, the string holding a whole answer that needed no
// stream, and the mark of pods reading the stream. Hash tags keep them in one slot of a Redis
// Cluster.
struct redis_keys {
    std::string lease;
    std::string flight_prefix;
    std::string stream(const std::string& id) const { return flight_prefix + "s:" + id; }
    std::string whole(const std::string& id) const { return flight_prefix + "r:" + id; }
    std::string readers(const std::string& id) const { return flight_prefix + "w:" + id; }
};

inline redis_keys keys_for(const coalesce::flight_key& key) {
    const auto tag = "coalescer:{" + key.hex() + "}:";
    return {tag + "lease", tag};
}

// Milliseconds as Redis arguments want them: never 0, which PX and PEXPIRE refuse.
inline std::string ms_text(std::chrono::milliseconds d) {
    return std::to_string(std::max<long long>(d.count(), 1));
}

// How long a stream outlives its last append: pods still reading it finish.
inline std::chrono::milliseconds grace_for(const ops::cluster_config& c) {
    return std::max<std::chrono::milliseconds>(3 * c.lease, std::chrono::seconds(10));
}

}  // namespace coalescer::cluster
