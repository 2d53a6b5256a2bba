// One worker's connections to Redis. Short commands share two multiplexed connections: one for
// what a request waits on (claims, admissions, a follower's first read, renewals, pings), one
// for the relays' appends (urgency::background), opened together. Redis answers a connection's
// commands in order, and an append script with its payload takes it tens of microseconds: on
// one connection a claim sent just after a flight's append waited for it, and for its reply to
// be read first. A blocking stream read takes a connection of its own (an idle one, or a new
// one) for as long as it follows a flight, and gives it back. Every command's latency is
// measured and its outcome told to the breaker.
#pragma once

#include "cluster/breaker.hpp"
#include "cluster/redis_connection.hpp"
#include "cluster/redis_mux.hpp"
#include "cluster/redis_script.hpp"
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
    // One command on the prompt connection, within timeouts.command.
    boost::asio::awaitable<redis_result> run(const std::vector<std::string_view>& args);
    // A script on the prompt connection, by its SHA1 (by its text if Redis lacks it). `args`:
    // the number of keys, the keys, then the arguments.
    boost::asio::awaitable<redis_result> eval(const redis_script& script,
                                              const std::vector<std::string_view>& args);
    // The same in two steps: scripts sent one after another with the same urgency run in that
    // order (it picks the connection, see redis_mux::urgency), and none waits for another's reply.
    // `args` must stay valid until the reply is taken (Redis lacking the script, they go again
    // with its text, on the prompt connection).
    struct sent_script {
        redis_mux::ticket sent;
        const redis_script* script;
        const std::vector<std::string_view>* args;
        std::chrono::steady_clock::time_point started;
    };
    sent_script send_eval(const redis_script& script, const std::vector<std::string_view>& args,
                          redis_mux::urgency u);
    boost::asio::awaitable<redis_result> eval_reply(sent_script sent);
    // The same on a connection the caller holds (a blocking read's), with its own bound.
    boost::asio::awaitable<redis_result> run_on(redis_connection& connection,
                                                const std::vector<std::string_view>& args,
                                                std::chrono::milliseconds timeout,
                                                bool measured = true);

    const ops::cluster_config& config() const noexcept { return config_; }
    breaker& health() noexcept { return health_; }
    void clear() noexcept;
    // Takes the replies already on the prompt connection's socket (redis_mux::tend).
    void tend() { prompt_.tend(); }

  private:
    boost::asio::any_io_executor executor_;
    const ops::cluster_config& config_;
    boost::asio::ssl::context& tls_;
    breaker& health_;
    ops::cluster_counters& counters_;
    redis_result account(redis_result result, std::chrono::steady_clock::time_point started,
                         bool measured) noexcept;

    std::vector<std::unique_ptr<redis_connection>> idle_;
    redis_mux prompt_;  // urgency::awaited
    redis_mux bulk_;    // urgency::background
};

}  // namespace coalescer::cluster
