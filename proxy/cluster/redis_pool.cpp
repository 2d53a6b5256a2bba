#include "cluster/redis_pool.hpp"

#include <chrono>

namespace coalescer::cluster {

namespace asio = boost::asio;

namespace {
// Idle connections a worker keeps for blocking reads, which hold one each while they follow a
// flight: enough for a burst of remote flights to start without connecting.
constexpr std::size_t max_idle = 16;
}  // namespace

redis_pool::redis_pool(asio::any_io_executor ex, const ops::cluster_config& config,
                       asio::ssl::context& tls, breaker& health, ops::cluster_counters& counters)
    : executor_(ex),
      config_(config),
      tls_(tls),
      health_(health),
      counters_(counters),
      prompt_(ex, config, tls),
      bulk_(std::move(ex), config, tls) {}

void redis_pool::clear() noexcept {
    idle_.clear();
    prompt_.close();
    bulk_.close();
}

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

redis_result redis_pool::account(redis_result result, std::chrono::steady_clock::time_point started,
                                 bool measured) noexcept {
    if (result.ec) {
        health_.failed();
    } else {
        health_.succeeded();
        if (measured) {
            const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
            counters_.command_seconds.observe(took.count());
        }
    }
    return result;
}

asio::awaitable<redis_result> redis_pool::run_on(redis_connection& connection,
                                                 const std::vector<std::string_view>& args,
                                                 std::chrono::milliseconds timeout, bool measured) {
    const auto started = std::chrono::steady_clock::now();
    auto result = co_await connection.command(args, timeout);
    co_return account(std::move(result), started, measured);
}

asio::awaitable<redis_result> redis_pool::run(const std::vector<std::string_view>& args) {
    bulk_.warm();  // a flight's first append then finds it open
    const auto started = std::chrono::steady_clock::now();
    auto result = co_await prompt_.run(args, config_.command_timeout);
    co_return account(std::move(result), started, true);
}

redis_pool::sent_script redis_pool::send_eval(const redis_script& script,
                                              const std::vector<std::string_view>& args,
                                              redis_mux::urgency u) {
    const auto started = std::chrono::steady_clock::now();
    auto& mux = u == redis_mux::urgency::awaited ? prompt_ : bulk_;
    return {mux.send_script(script, args, config_.command_timeout, u), &script, &args, started};
}

asio::awaitable<redis_result> redis_pool::eval_reply(sent_script sent) {
    auto result = account(co_await redis_mux::take_reply(std::move(sent.sent)), sent.started, true);
    if (result.ec || !result.value.is_error() || !result.value.text.starts_with("NOSCRIPT"))
        co_return result;
    std::vector<std::string_view> command{"EVAL", sent.script->text()};
    command.insert(command.end(), sent.args->begin(), sent.args->end());
    co_return co_await run(command);
}

asio::awaitable<redis_result> redis_pool::eval(const redis_script& script,
                                               const std::vector<std::string_view>& args) {
    co_return co_await eval_reply(send_eval(script, args, redis_mux::urgency::awaited));
}

}  // namespace coalescer::cluster
