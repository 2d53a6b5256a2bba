#include "upstream/client.hpp"

#include "upstream/connection.hpp"
#include "upstream/local_budget.hpp"

#include <algorithm>

namespace coalescer::upstream {
namespace {

// A pod never needs more slots than the whole fleet may use: a fleet max_concurrent below the
// upstream's own caps the pacer too, so waiting for it is the pacer's FIFO queue.
int pacer_cap(const ops::upstream_config& cfg) {
    if (cfg.fleet_limits && cfg.fleet_limits->max_concurrent != 0) {
        return static_cast<int>(std::min<std::uint64_t>(
            static_cast<std::uint64_t>(cfg.max_concurrent), cfg.fleet_limits->max_concurrent));
    }
    return cfg.max_concurrent;
}

}  // namespace

service::service(const ops::upstream_config& cfg, std::size_t position,
                 const std::vector<boost::asio::any_io_executor>& loops)
    : config(cfg),
      index(position),
      tls(cfg.https ? std::make_unique<boost::asio::ssl::context>(make_client_tls_context(cfg))
                    : nullptr),
      admission(pacer_cap(cfg), cfg.rate_limit, loops),
      budget(cfg.fleet_limits ? std::make_shared<local_budget>(*cfg.fleet_limits) : nullptr) {}

client::client(service& shared, ops::metrics& m, ops::usage_meter& u, net::deadline_sweep& d,
               std::size_t w, std::size_t head_bytes)
    : upstream(shared.config),
      tls(shared.tls.get()),
      connections(static_cast<std::size_t>(shared.config.max_concurrent)),
      admission(shared.admission),
      budget(shared.budget.get()),
      metrics(m),
      usage(u),
      upstream_index(shared.index),
      deadlines(d),
      worker(w),
      max_head_bytes(head_bytes) {}

}  // namespace coalescer::upstream
