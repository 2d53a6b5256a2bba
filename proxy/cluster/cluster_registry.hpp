// The flight registry of a replica in a fleet: this process's table (local_registry) decides
// who joins what here, and a flight created here is produced wherever the fleet decides
// (fleet_flight.hpp). The session and the forwarder see only the registry interface.
#pragma once

#include "cluster/breaker.hpp"
#include "cluster/fleet_flight.hpp"
#include "cluster/redis_pool.hpp"
#include "coalesce/local_registry.hpp"
#include "coalesce/registry.hpp"
#include "ops/access_log.hpp"
#include "ops/metrics.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <vector>

namespace coalescer::cluster {

class cluster_registry final : public coalesce::flight_registry {
  public:
    // `loops`: every worker's executor, by worker index. Throws at start-up when the TLS
    // settings cannot be loaded (an unreadable CA file).
    cluster_registry(const ops::config& cfg, coalesce::flight_ids& ids,
                     std::unique_ptr<coalesce::local_registry> local,
                     const std::vector<boost::asio::any_io_executor>& loops, ops::metrics& metrics,
                     const ops::access_log& log);
    ~cluster_registry() override;

    coalesce::join_result join(const coalesce::flight_key& key,
                               coalesce::flight_producer& producer) override;
    void sweep() override { local_->sweep(); }
    coalesce::registry_stats stats() const override { return local_->stats(); }
    void clear() override;

    // The fleet's Redis, for what else the fleet shares (the upstreams' fleet budgets).
    std::vector<std::unique_ptr<redis_pool>>& pools() noexcept { return pools_; }
    breaker& health() noexcept { return health_; }

  private:
    class fleet_producer;
    boost::asio::awaitable<void> watch_redis(std::size_t worker);

    const ops::cluster_config& config_;
    std::unique_ptr<coalesce::local_registry> local_;
    boost::asio::ssl::context tls_;
    breaker health_;
    std::vector<std::unique_ptr<redis_pool>> pools_;  // by worker
    fleet fleet_;
    const ops::access_log& log_;
};

}  // namespace coalescer::cluster
