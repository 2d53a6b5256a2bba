// What every worker shares (config, routes, the flight registry, TLS contexts, metrics), and
// what each worker owns alone (its event loop and its upstream connection pools).
#pragma once

#include "coalesce/flight_id.hpp"
#include "coalesce/flight_key.hpp"
#include "coalesce/registry.hpp"
#include "coalesce/tenant_headers.hpp"
#include "net/deadline_sweep.hpp"
#include "ops/access_log.hpp"
#include "ops/config.hpp"
#include "ops/metrics.hpp"
#include "ops/usage_meter.hpp"
#include "server/router.hpp"
#include "upstream/client.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/intrusive/list.hpp>

#include <atomic>
#include <memory>
#include <vector>

namespace coalescer::server {

struct proxy_context {
    // `loops`: every worker's executor, by worker index.
    proxy_context(std::shared_ptr<const ops::config> cfg,
                  const std::vector<boost::asio::any_io_executor>& loops);

    std::shared_ptr<const ops::config> config;
    router routes;
    coalesce::tenant_headers tenants;
    coalesce::flight_key_builder keys;
    coalesce::flight_ids ids;  // of flights and of unshared exchanges
    std::unique_ptr<coalesce::flight_registry> flights;
    std::vector<std::unique_ptr<upstream::service>> upstreams;  // by upstream
    ops::metrics metrics;
    ops::usage_meter usage;
    ops::access_log log;
    std::atomic<bool> draining{false};  // from the signal on: /readyz 503, Connection: close
    std::atomic<bool> refusing{false};  // after drain_delay: no new requests
    std::atomic<std::size_t> relays_in_progress{0};  // pass and bypass exchanges (no flight)
    // Keys of large bodies are computed here, off the workers (forwarder.cpp).
    struct key_pool : boost::asio::thread_pool {
        key_pool() : boost::asio::thread_pool(1) {}
        using boost::asio::execution_context::shutdown;
    } key_threads;
};

// An io_context whose handlers can be destroyed before the context itself, so that objects
// that cross workers (a flight holds subscribers' timers) never outlive their loop.
struct event_loop : boost::asio::io_context {
    event_loop()
        // One thread, and socket I/O without Asio's per-descriptor locks: every socket is
        // registered and used by its own worker alone (listener::hand_over). Posting from
        // other threads stays safe.
        : boost::asio::io_context(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO) {}
    using boost::asio::io_context::shutdown;
};

// A keep-alive connection between requests, linked into its worker's idle list while it waits
// (no allocation, unlinked when destroyed).
struct idle_connection
    : boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
    explicit idle_connection(boost::asio::ip::tcp::socket& s) : socket(s) {}
    boost::asio::ip::tcp::socket& socket;
};

// Prunes a worker's upstream pools every quarter second, on its own thread.
class pool_pruning final : public net::sweep_task {
  public:
    pool_pruning(net::deadline_sweep& sweep,
                 std::vector<std::unique_ptr<upstream::client>>& upstreams)
        : sweep_(sweep), upstreams_(upstreams) {}
    void start() { sweep_.schedule(*this, std::chrono::steady_clock::now() + period); }

  private:
    static constexpr std::chrono::milliseconds period{250};
    void on_due() override {
        for (auto& u : upstreams_)
            u->connections.prune();
        start();
    }
    net::deadline_sweep& sweep_;
    std::vector<std::unique_ptr<upstream::client>>& upstreams_;
};

struct worker {
    explicit worker(std::size_t position) : index(position) {}
    // This worker's client of each upstream, once the services exist.
    void connect(proxy_context& context);
    std::size_t index;  // in the server's workers
    event_loop io;
    net::deadline_sweep deadlines{io.get_executor()};          // of every socket on this loop
    std::vector<std::unique_ptr<upstream::client>> upstreams;  // by upstream
    pool_pruning pruning{deadlines, upstreams};
    // Connections waiting for their next request: closed at once when a drain starts.
    boost::intrusive::list<idle_connection, boost::intrusive::constant_time_size<false>> idle;
};

}  // namespace coalescer::server
