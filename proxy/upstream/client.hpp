// An upstream as the workers use it. A service is what they all share for one upstream (its
// settings, its TLS context, its pacer); a client is one worker's: its own pool of idle
// connections and everything an exchange needs, built once, not per request.
#pragma once

#include "net/deadline_sweep.hpp"
#include "ops/config.hpp"
#include "ops/metrics.hpp"
#include "ops/usage_meter.hpp"
#include "upstream/budget.hpp"
#include "upstream/pacer.hpp"
#include "upstream/pool.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <vector>

namespace coalescer::upstream {

class service {
  public:
    // `loops`: every worker's executor (the pacer serves waiters on each). Throws at start-up
    // when the TLS context can't be made (an unreadable CA file).
    service(const ops::upstream_config& config, std::size_t index,
            const std::vector<boost::asio::any_io_executor>& loops);
    service(const service&) = delete;
    service& operator=(const service&) = delete;

    const ops::upstream_config& config;
    const std::size_t index;                         // in the configuration's upstreams
    std::unique_ptr<boost::asio::ssl::context> tls;  // null for http
    upstream::pacer admission;                       // the upstream's cap, for every worker
    // The fleet_limits budget, null without one: in-process unless the server's wiring puts a
    // shared one in its place before the clients are built.
    std::shared_ptr<fleet_budget> budget;
};

struct client {
    client(service& shared, ops::metrics& metrics, ops::usage_meter& usage,
           net::deadline_sweep& deadlines, std::size_t worker, std::size_t max_head_bytes);
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    const ops::upstream_config& upstream;
    boost::asio::ssl::context* tls;  // null for http
    pool connections;                // this worker's idle connections
    pacer& admission;                // the upstream's, shared by all workers
    fleet_budget* budget;            // the upstream's fleet budget, or null
    ops::metrics& metrics;
    ops::usage_meter& usage;
    std::size_t upstream_index;
    net::deadline_sweep& deadlines;  // this worker's
    std::size_t worker;              // this worker's index: its pacer lane
    std::size_t max_head_bytes;      // limits.max_header_bytes: a bigger head is a 502
};

}  // namespace coalescer::upstream
