#include "server/server.hpp"

#include "cluster/cluster_registry.hpp"
#include "cluster/redis_budget.hpp"

#include "coalesce/local_registry.hpp"
#include "server/worker_cpus.hpp"
#include "upstream/connection.hpp"

#include <boost/asio/executor_work_guard.hpp>

#include <boost/asio/post.hpp>
#include <string>

namespace coalescer::server {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

std::vector<std::string> upstream_names(const ops::config& cfg) {
    std::vector<std::string> names;
    for (const auto& up : cfg.upstreams)
        names.push_back(up.name);
    return names;
}

std::vector<ops::price_table> price_tables(const ops::config& cfg) {
    std::vector<ops::price_table> tables;
    for (const auto& u : cfg.upstreams)
        tables.emplace_back(u.prices);
    return tables;
}

}  // namespace

proxy_context::proxy_context(std::shared_ptr<const ops::config> cfg,
                             const std::vector<asio::any_io_executor>& loops)
    : config(cfg),
      routes(cfg),
      tenants(cfg->coalesce),
      keys(cfg->coalesce, cfg->cluster ? std::string_view(cfg->cluster->key_secret) : ""),
      metrics(*cfg),
      usage(upstream_names(*cfg), price_tables(*cfg)),
      log(cfg->log) {
    auto local = std::make_unique<coalesce::local_registry>(
        cfg->coalesce, ids, [this](std::size_t n) { metrics.flight_finished(n); });
    cluster::cluster_registry* fleet = nullptr;
    if (cfg->cluster) {
        auto shared = std::make_unique<cluster::cluster_registry>(*cfg, ids, std::move(local),
                                                                  loops, metrics, log);
        fleet = shared.get();
        flights = std::move(shared);
    } else {
        flights = std::move(local);
    }
    for (std::size_t i = 0; i < cfg->upstreams.size(); ++i) {
        upstreams.push_back(std::make_unique<upstream::service>(cfg->upstreams[i], i, loops));
        // With a fleet, its budget is the fleet's, in Redis (the service made a local one).
        if (fleet != nullptr && cfg->upstreams[i].fleet_limits) {
            upstreams.back()->budget = std::make_shared<cluster::redis_budget>(
                cfg->upstreams[i], *cfg->cluster, fleet->pools(), fleet->health(), loops);
        }
    }
}

void worker::connect(proxy_context& context) {
    for (auto& service : context.upstreams) {
        upstreams.push_back(
            std::make_unique<upstream::client>(*service, context.metrics, context.usage, deadlines,
                                               index, context.config->limits.max_header_bytes));
    }
}

server::server(std::shared_ptr<const ops::config> cfg) {
    const std::size_t n = cfg->workers != 0 ? cfg->workers : default_workers();
    std::vector<asio::any_io_executor> loops;
    for (std::size_t i = 0; i < n; ++i) {
        workers_.push_back(std::make_unique<worker>(i));
        loops.push_back(workers_.back()->io.get_executor());
    }
    context_ = std::make_unique<proxy_context>(cfg, loops);
    for (auto& w : workers_) {
        w->connect(*context_);
    }
    listener_ = std::make_unique<listener>(workers_.front()->io, cfg->listen, workers_, *context_);
    admin_ = std::make_unique<ops::admin_server>(
        workers_.front()->io, cfg->admin.address, cfg->admin.port,
        ops::admin_handlers{[this] { return ready_ && !context_->draining.load(); },
                            [this] { return render_metrics(); }});
    sweep_timer_ = std::make_unique<asio::steady_timer>(workers_.front()->io);
}

server::~server() {
    stop();
    // Destroy every pending handler on every loop first: objects that cross workers (a flight
    // holds other workers' timers) are then released while all loops still exist.
    admin_.reset();
    listener_.reset();
    sweep_timer_.reset();
    // A key being computed reads a request in a worker's coroutine: finish it, and drop what
    // it would resume, before the workers' loops go.
    context_->key_threads.stop();
    context_->key_threads.join();
    context_->key_threads.shutdown();
    for (auto& w : workers_) {
        w->io.shutdown();
    }
    // Flights the registry still holds (a stream cut at drain_timeout) hold parked subscribers'
    // timers of those loops: they go while the loops still exist.
    context_->flights->clear();
    workers_.clear();
}

std::string server::render_metrics() const {
    ops::gauges now;
    const auto flights = context_->flights->stats();
    now.flights_in_flight =
        flights.live_flights + context_->relays_in_progress.load(std::memory_order_relaxed);
    now.retained_entries = flights.retained_entries;
    now.retained_bytes = flights.retained_bytes;
    now.evictions = flights.evictions;
    for (const auto& u : context_->upstreams) {
        now.pacer_queued.push_back(u->admission.queued());
        now.pacer_in_use.push_back(u->admission.in_use());
        now.budget_fallback.push_back(u->budget && u->budget->falling_back() ? 1 : 0);
    }
    auto text = context_->metrics.render(now);
    context_->usage.render(text);
    return text;
}

void server::start() {
    listener_->start();
    admin_->start();
    schedule_sweep();
    for (auto& w : workers_) {
        w->deadlines.start();
        w->pruning.start();
        threads_.emplace_back([&io = w->io, pinned = context_->config->pin_workers] {
            auto guard = asio::make_work_guard(io);
            run_worker_loop(io, pinned);
        });
    }
    if (context_->config->pin_workers) {
        pin_workers();
    }
    ready_ = true;
}

void server::pin_workers() {
    // Worker i on the i-th allowed CPU: the kernel can no longer queue two busy workers on one
    // CPU. Measured on 2 cores shared with the load generator: p99 3.1-4.9 -> 1.9-2.5 ms.
    const auto cpus = allowed_cpus();
    std::vector<int> used;
    for (std::size_t i = 0; i < threads_.size(); ++i) {
        const int cpu = cpus[i % cpus.size()];
        if (const auto ec = pin(threads_[i], cpu)) {
            context_->log.message(ops::log_level::warn, "cannot pin worker " + std::to_string(i) +
                                                            " to CPU " + std::to_string(cpu) +
                                                            ": " + ec.message());
            return;
        }
        used.push_back(cpu);
    }
    context_->log.message(ops::log_level::info, "workers pinned to CPUs " + cpu_list(used));
}

void server::schedule_sweep() {
    sweep_timer_->expires_after(std::chrono::milliseconds(500));
    sweep_timer_->async_wait([this](error_code ec) {
        if (ec)
            return;
        context_->flights->sweep();
        context_->log.flush();
        schedule_sweep();
    });
}

void server::drain() {
    if (context_->draining.exchange(true)) {
        return;
    }
    // Called from the signal thread: the timers belong to worker 0, so set them up there.
    asio::post(workers_.front()->io, [this] {
        const auto& shutdown = context_->config->shutdown;
        auto timer = std::make_shared<asio::steady_timer>(workers_.front()->io);
        timer->expires_after(shutdown.drain_delay);
        timer->async_wait([this, timer, timeout = shutdown.drain_timeout](error_code) {
            begin_refusing();
            check_drained(timer, std::chrono::steady_clock::now() + timeout);
        });
    });
}

void server::begin_refusing() {
    context_->refusing.store(true);
    listener_->stop();
    for (auto& w : workers_) {
        asio::post(w->io, [&w = *w] {
            for (auto& connection : w.idle) {
                error_code ignored;
                connection.socket.cancel(ignored);
            }
        });
    }
}

void server::check_drained(std::shared_ptr<asio::steady_timer> timer,
                           std::chrono::steady_clock::time_point give_up) {
    const bool idle = context_->metrics.open_connections() == 0 &&
                      context_->flights->stats().live_flights == 0 &&
                      context_->relays_in_progress.load(std::memory_order_relaxed) == 0;
    if (idle || std::chrono::steady_clock::now() >= give_up) {
        std::thread([this] { stop(); }).detach();
        return;
    }
    timer->expires_after(std::chrono::milliseconds(50));
    timer->async_wait([this, timer, give_up](error_code) { check_drained(timer, give_up); });
}

void server::stop() {
    context_->log.flush();
    std::unique_lock lock(mutex_);
    if (stopping_) {
        stopped_cv_.wait(lock, [this] { return finished_; });
        return;
    }
    stopping_ = true;
    lock.unlock();
    for (auto& w : workers_) {
        w->io.stop();
    }
    for (auto& t : threads_) {
        t.join();
    }
    lock.lock();
    finished_ = true;
    stopped_cv_.notify_all();
}

void server::wait() {
    std::unique_lock lock(mutex_);
    stopped_cv_.wait(lock, [this] { return finished_; });
}

}  // namespace coalescer::server
