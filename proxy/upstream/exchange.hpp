// One upstream exchange feeding a flight: take or open a connection, send the request, publish
// the response head, append body bytes as they arrive, then complete or fail the flight.
#pragma once

#include "coalesce/flight.hpp"
#include "ops/config.hpp"
#include "ops/metrics.hpp"
#include "upstream/pacer.hpp"
#include "upstream/pool.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <functional>
#include <memory>
#include <string>

namespace coalescer::upstream {

struct upstream_request {
    std::string head;          // serialized request line and headers, ending in CRLF CRLF
    std::string body;          // the client's bytes, unchanged
    bool head_method = false;  // HEAD: the response has no body whatever its headers say
};

struct exchange_context {
    const ops::upstream_config& upstream;
    boost::asio::ssl::context* tls;  // null for http
    pool& connections;               // the calling worker's
    pacer& admission;                // the upstream's, shared by all workers
    ops::metrics& metrics;
    std::size_t upstream_index;
};

// Runs until the flight completes or fails; never throws. Waits for a pacer slot, retries
// before the head where the provider cannot have done the work, then streams the body.
boost::asio::awaitable<void> fetch(std::shared_ptr<coalesce::flight> flight,
                                   upstream_request request, exchange_context context);

}  // namespace coalescer::upstream
