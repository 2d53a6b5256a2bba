// A pod's side of a fleet flight another pod produces: the flight's whole answer, or its stream
// read from the first entry, fed into the local flight (whose clients are ordinary followers,
// or hits when the answer was complete at the first read), until it ends or its producer's
// lease lapses.
#pragma once

#include "cluster/fleet.hpp"
#include "coalesce/flight.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>

namespace coalescer::cluster {

enum class follow_outcome {
    ended,        // the local flight completed or failed
    leader_lost,  // the lease lapsed before any byte reached a client here: take over
    unavailable,  // Redis failed before any byte reached a client here: produce it here
};

// `holder`: the flight id the key's lease holds.
boost::asio::awaitable<follow_outcome> follow(fleet& shared, redis_pool& pool,
                                              std::shared_ptr<coalesce::flight> f,
                                              const redis_keys& keys, std::string holder);

}  // namespace coalescer::cluster
