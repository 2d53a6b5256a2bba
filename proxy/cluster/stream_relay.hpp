// The producing pod's side of a fleet flight: the upstream call made here, and every event of
// the local flight relayed into the flight's stream through a script that appends only while
// the lease still names this flight. Each append renews the lease; a flight quiet for lease/3
// renews it alone.
#pragma once

#include "cluster/fleet.hpp"
#include "coalesce/flight.hpp"
#include "coalesce/registry.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>

namespace coalescer::cluster {

// Runs the local production; the relay runs beside it until the flight ends.
boost::asio::awaitable<void> produce_here(fleet& shared, redis_pool& pool,
                                          std::shared_ptr<coalesce::flight> f,
                                          const redis_keys& keys, coalesce::production local);

}  // namespace coalescer::cluster
