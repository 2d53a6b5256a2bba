#include "cluster/cluster_registry.hpp"

#include "net/use_tuple.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <stdexcept>

namespace coalescer::cluster {

namespace asio = boost::asio;

namespace {

asio::ssl::context make_tls(const ops::cluster_config& c) {
    asio::ssl::context tls(asio::ssl::context::tls_client);
    if (!c.tls)
        return tls;
    tls.set_verify_mode(c.tls_verify ? asio::ssl::verify_peer : asio::ssl::verify_none);
    boost::system::error_code ec;
    if (c.ca_file.empty())
        tls.set_default_verify_paths(ec);
    else
        tls.load_verify_file(c.ca_file, ec);
    if (ec)
        throw std::runtime_error("cluster: cannot load the CA bundle " + c.ca_file + ": " +
                                 ec.message());
    return tls;
}

// How long the fleet is not asked after Redis failed: long enough that a dead Redis costs
// little, short enough that the fleet is back soon after it is.
constexpr std::chrono::seconds cooldown{1};

}  // namespace

// Wraps the forwarder's producer: the production it makes runs inside the fleet's decision.
class cluster_registry::fleet_producer final : public coalesce::flight_producer {
  public:
    fleet_producer(cluster::fleet& shared, coalesce::flight_producer& inner)
        : shared_(shared), inner_(inner) {}
    coalesce::production make(const std::shared_ptr<coalesce::flight>& f) override {
        auto local = inner_.make(f);
        auto executor = local.executor;
        const auto worker = local.worker;
        return {run_in_fleet(shared_, f, std::move(local)), executor, worker};
    }
    std::size_t worker_index() const noexcept override { return inner_.worker_index(); }

  private:
    cluster::fleet& shared_;
    coalesce::flight_producer& inner_;
};

cluster_registry::cluster_registry(const ops::config& cfg, coalesce::flight_ids& ids,
                                   std::unique_ptr<coalesce::local_registry> local,
                                   const std::vector<asio::any_io_executor>& loops,
                                   ops::metrics& metrics, const ops::access_log& log)
    : config_(*cfg.cluster),
      local_(std::move(local)),
      tls_(make_tls(config_)),
      health_(metrics.cluster, cooldown),
      fleet_{config_, cfg.coalesce.result_ttl, metrics.cluster, health_, ids, pools_},
      log_(log) {
    for (const auto& loop : loops)
        pools_.push_back(
            std::make_unique<redis_pool>(loop, config_, tls_, health_, metrics.cluster));
    if (!loops.empty())
        asio::co_spawn(loops.front(), watch_redis(0), asio::detached);
}

cluster_registry::~cluster_registry() = default;

coalesce::join_result cluster_registry::join(const coalesce::flight_key& key,
                                             coalesce::flight_producer& producer) {
    // Before the join: a claim's reply on the socket lets its flight's call start now.
    pools_.at(producer.worker_index())->tend();
    fleet_producer wrapped(fleet_, producer);
    return local_->join(key, wrapped);
}

void cluster_registry::clear() {
    local_->clear();
    // The connections belong to the workers' loops, which go next.
    for (auto& pool : pools_)
        pool->clear();
}

// Pings Redis every second: /metrics says whether it answers, the log says when that changes,
// and the breaker closes again as soon as it does.
asio::awaitable<void> cluster_registry::watch_redis(std::size_t worker) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    bool was_up = false;
    bool first = true;
    for (;;) {
        // No braced list inside a co_await expression: GCC 12 rejects its array.
        const std::vector<std::string_view> ping{"PING"};
        const auto r = co_await pools_[worker]->run(ping);
        const bool up = !r.ec && !r.value.is_error();
        if (up != was_up || first) {
            log_.message(up ? ops::log_level::info : ops::log_level::warn,
                         up ? "cluster: Redis at " + config_.url + " answers"
                            : "cluster: Redis at " + config_.url +
                                  " does not answer; coalescing within this pod only");
            was_up = up;
            first = false;
        }
        timer.expires_after(std::chrono::seconds(1));
        co_await timer.async_wait(use_tuple);
    }
}

}  // namespace coalescer::cluster
