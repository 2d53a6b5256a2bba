// The producing pod's side of a fleet flight: the upstream call made here, its lease renewed
// every lease/3, and every event of the local flight relayed into the flight's stream through
// a script that appends only while the lease still names this flight.
#pragma once

#include "cluster/fleet.hpp"
#include "coalesce/flight.hpp"
#include "coalesce/registry.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>

namespace coalescer::cluster {

// Runs the local production; the relay and the renewal run beside it until the flight ends.
boost::asio::awaitable<void> produce_here(fleet& shared, redis_pool& pool,
                                          std::shared_ptr<coalesce::flight> f,
                                          const redis_keys& keys, coalesce::production local);

}  // namespace coalescer::cluster
