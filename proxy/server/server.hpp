// The sidecar's lifecycle: builds the shared context and the workers, binds the proxy and
// admin listeners, runs one event loop per worker thread, drains on request, stops.
#pragma once

#include "ops/admin_server.hpp"
#include "server/listener.hpp"
#include "server/proxy_context.hpp"

#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace coalescer::server {

class server {
  public:
    // Binds every port and loads every certificate now: start-up errors throw here, one line each.
    explicit server(std::shared_ptr<const ops::config> cfg);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    std::uint16_t port() const { return listener_->port(); }
    std::uint16_t admin_port() const { return admin_->port(); }
    proxy_context& context() { return *context_; }
    std::size_t workers() const { return workers_.size(); }

    void start();  // returns once every worker runs
    // Graceful drain: /readyz 503 at once; after drain_delay stop accepting and close idle
    // connections; let flights and streams finish for up to drain_timeout; then stop.
    void drain();
    void stop();  // immediate
    void wait();  // until stopped

  private:
    void begin_refusing();
    void check_drained(std::shared_ptr<boost::asio::steady_timer> timer,
                       std::chrono::steady_clock::time_point give_up);
    void pin_workers();
    void schedule_sweep();
    std::string render_metrics() const;

    std::unique_ptr<proxy_context> context_;
    std::vector<std::unique_ptr<worker>> workers_;
    std::unique_ptr<listener> listener_;
    std::unique_ptr<ops::admin_server> admin_;
    std::vector<std::thread> threads_;
    std::unique_ptr<boost::asio::steady_timer> sweep_timer_;
    std::mutex mutex_;
    std::condition_variable stopped_cv_;
    bool stopping_ = false;
    bool finished_ = false;
    std::atomic<bool> ready_{false};  // read by the admin handler on a worker thread
};

}  // namespace coalescer::server
