#include "cluster/redis_pool.hpp"

#include <chrono>

namespace coalescer::cluster {

namespace asio = boost::asio;

namespace {
// Idle connections a worker keeps: enough for the commands of its flights in progress, which
// take turns; a blocking read holds its own and gives it back when its flight ends.
constexpr std::size_t max_idle = 8;
}  // namespace

redis_pool::redis_pool(asio::any_io_executor ex, const ops::cluster_config& config,
                       asio::ssl::context& tls, breaker& health, ops::cluster_counters& counters)
    : executor_(std::move(ex)), config_(config), tls_(tls), health_(health), counters_(counters) {}

asio::awaitable<taken_connection> redis_pool::take() {
    while (!idle_.empty()) {
        auto connection = std::move(idle_.back());
        idle_.pop_back();
        if (connection->usable())
            co_return taken_connection{{}, std::move(connection)};
    }
    auto connection = std::make_unique<redis_connection>(executor_, config_, tls_);
    if (auto ec = co_await connection->open()) {
        health_.failed();
        co_return taken_connection{ec, nullptr};
    }
    co_return taken_connection{{}, std::move(connection)};
}

void redis_pool::give_back(std::unique_ptr<redis_connection> connection) {
    if (connection && connection->usable() && idle_.size() < max_idle)
        idle_.push_back(std::move(connection));
}

asio::awaitable<redis_result> redis_pool::run_on(redis_connection& connection,
                                                 const std::vector<std::string_view>& args,
                                                 std::chrono::milliseconds timeout, bool measured) {
    const auto started = std::chrono::steady_clock::now();
    auto result = co_await connection.command(args, timeout);
    if (result.ec) {
        health_.failed();
    } else {
        health_.succeeded();
        if (measured) {
            const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
            counters_.command_seconds.observe(took.count());
        }
    }
    co_return result;
}

asio::awaitable<redis_result> redis_pool::run(const std::vector<std::string_view>& args) {
    auto taken = co_await take();
    if (taken.ec)
        co_return redis_result{taken.ec, {}};
    auto result = co_await run_on(*taken.connection, args, config_.command_timeout);
    give_back(std::move(taken.connection));
    co_return result;
}

}  // namespace coalescer::cluster
