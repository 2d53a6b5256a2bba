// A flight's producer: one upstream exchange whose head and body bytes are published into the
// flight as they arrive, never waiting for a client; a failure before the head fails the flight
// (every subscriber gets the same error), one after it cuts every subscriber's response.
#pragma once

#include "coalesce/flight.hpp"
#include "upstream/exchange.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>

namespace coalescer::coalesce {

// Runs until the flight completes or fails; never throws. Waits for a pacer slot, retries
// before the head where the provider cannot have done the work, then streams the body.
boost::asio::awaitable<void> fetch(std::shared_ptr<flight> flight,
                                   upstream::upstream_request request, upstream::client& context);

}  // namespace coalescer::coalesce
