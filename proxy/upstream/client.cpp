#include "upstream/client.hpp"

#include "upstream/connection.hpp"

namespace coalescer::upstream {

service::service(const ops::upstream_config& cfg, std::size_t position,
                 const std::vector<boost::asio::any_io_executor>& loops)
    : config(cfg),
      index(position),
      tls(cfg.https ? std::make_unique<boost::asio::ssl::context>(make_client_tls_context(cfg))
                    : nullptr),
      admission(cfg.max_concurrent, cfg.rate_limit, loops) {}

client::client(service& shared, ops::metrics& m, ops::usage_meter& u, net::deadline_sweep& d,
               std::size_t w, std::size_t head_bytes)
    : upstream(shared.config),
      tls(shared.tls.get()),
      connections(static_cast<std::size_t>(shared.config.max_concurrent)),
      admission(shared.admission),
      metrics(m),
      usage(u),
      upstream_index(shared.index),
      deadlines(d),
      worker(w),
      max_head_bytes(head_bytes) {}

}  // namespace coalescer::upstream
