// One worker's connections to Redis: commands borrow an idle one (or open one) and give it
// back; a blocking stream read keeps its own for as long as it follows a flight. Every
// command's latency is measured and its outcome told to the breaker.
#pragma once

#include "cluster/breaker.hpp"
#include "cluster/redis_connection.hpp"
#include "ops/cluster_counters.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string_view>
#include <vector>

namespace coalescer::cluster {

struct taken_connection {
    boost::system::error_code ec;
    std::unique_ptr<redis_connection> connection;  // set when !ec
};

class redis_pool {
  public:
    redis_pool(boost::asio::any_io_executor ex, const ops::cluster_config& config,
               boost::asio::ssl::context& tls, breaker& health, ops::cluster_counters& counters);

    boost::asio::awaitable<taken_connection> take();
    void give_back(std::unique_ptr<redis_connection> connection);
    // One command on a borrowed connection, within timeouts.command.
    boost::asio::awaitable<redis_result> run(const std::vector<std::string_view>& args);
    // The same on a connection the caller holds (a blocking read's), with its own bound.
    boost::asio::awaitable<redis_result> run_on(redis_connection& connection,
                                                const std::vector<std::string_view>& args,
                                                std::chrono::milliseconds timeout,
                                                bool measured = true);

    const ops::cluster_config& config() const noexcept { return config_; }
    breaker& health() noexcept { return health_; }
    void clear() noexcept { idle_.clear(); }

  private:
    boost::asio::any_io_executor executor_;
    const ops::cluster_config& config_;
    boost::asio::ssl::context& tls_;
    breaker& health_;
    ops::cluster_counters& counters_;
    std::vector<std::unique_ptr<redis_connection>> idle_;
};

}  // namespace coalescer::cluster
