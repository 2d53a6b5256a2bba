// One local flight's life in the fleet. The pod that creates a flight for a key asks Redis for
// the key's lease (SET NX with this flight's id): the winner produces it here and relays every
// event into the flight's Redis Stream (fenced: an append only lands while the lease still
// holds this flight's id); a pod that finds the key leased feeds its local flight from that
// stream instead, adopting the producer's flight id. When the producer's lease lapses, a pod
// whose clients have received nothing takes over; one whose clients have bytes cuts them.
// Redis unavailable: the flight is produced here, as without `cluster:`.
#pragma once

#include "cluster/fleet.hpp"
#include "coalesce/flight.hpp"
#include "coalesce/registry.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <vector>

namespace coalescer::cluster {

// Runs on the production's worker until the flight has ended here (and, when this pod produced
// it, until its last event reached Redis or was refused).
boost::asio::awaitable<void> run_in_fleet(fleet& shared, std::shared_ptr<coalesce::flight> f,
                                          coalesce::production local);

}  // namespace coalescer::cluster
