// The worker's shared Redis connection against a real redis-server: many commands from one
// loop at once each get their own reply, a stalled Redis fails them all within the command
// timeout, and the next command after that finds a fresh connection.
#include "cluster/redis_mux.hpp"
#include "cluster/redis_pool.hpp"
#include "cluster/redis_script.hpp"
#include "redis_server.hpp"

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace coalescer::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

ops::cluster_config config_for(const redis_server& redis) {
    ops::cluster_config c;
    c.url = redis.url();
    c.host = "127.0.0.1";
    c.port = redis.port();
    c.command_timeout = 250ms;
    return c;
}

// A worker's shared connection to a Redis of its own.
struct mux_on_redis {
    redis_server redis;
    ops::cluster_config cfg = config_for(redis);
    asio::io_context io;
    asio::ssl::context tls{asio::ssl::context::tls_client};
    cluster::redis_mux mux{io.get_executor(), cfg, tls};
};

// A worker's connections to a Redis of their own; the pool let go of before the loop is.
struct pool_on_redis {
    ~pool_on_redis() { pool.clear(); }
    redis_server redis;
    ops::cluster_config cfg = config_for(redis);
    asio::io_context io;
    asio::ssl::context tls{asio::ssl::context::tls_client};
    ops::cluster_counters counters;
    cluster::breaker health{counters, 1s};
    cluster::redis_pool pool{io.get_executor(), cfg, tls, health, counters};
};

// Runs the loop until `done` holds or `limit` passes; whether it holds.
bool run_until(asio::io_context& io, const std::function<bool()>& done,
               std::chrono::milliseconds limit = 10s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < until)
        io.run_one_for(20ms);
    return done();
}

// A count from INFO `section`.
long long info_count(const redis_server& redis, const std::string& section,
                     const std::string& name) {
    const auto info = redis.command({"INFO", section}).text;
    const auto field = name + ":";
    return std::stoll(info.substr(info.find(field) + field.size()));
}

long long connected_clients(const redis_server& redis) {
    return info_count(redis, "clients", "connected_clients");
}

long long connections_received(const redis_server& redis) {
    return info_count(redis, "stats", "total_connections_received");
}

std::string numbered(std::size_t i) {
    return "value-" + std::to_string(i);
}

struct burst_options {
    std::function<std::string(std::size_t)> value_of = numbered;
    std::chrono::milliseconds timeout = 250ms;  // each command's
    bool tend = false;  // also call tend() from a handler of its own on every turn of the loop
};

// `count` ECHOs of distinct values, all issued before any reply can arrive; what each got back.
std::vector<cluster::redis_result> echo_burst(cluster::redis_mux& mux, asio::io_context& io,
                                              std::size_t count, const burst_options& o = {}) {
    std::vector<cluster::redis_result> results(count);
    std::size_t done = 0;
    for (std::size_t i = 0; i < count; ++i) {
        asio::co_spawn(
            io,
            [&mux, &results, &done, &o, i]() -> asio::awaitable<void> {
                const auto value = o.value_of(i);
                const std::vector<std::string_view> echo{"ECHO", value};
                results[i] = co_await mux.run(echo, o.timeout);
                ++done;
            },
            asio::detached);
    }
    std::function<void()> tender = [&] {
        mux.tend();
        if (done < count)
            asio::post(io, tender);
    };
    if (o.tend)
        asio::post(io, tender);
    // The connection's reader keeps the loop busy: run it until every command has its answer.
    REQUIRE(run_until(
        io, [&] { return done == count; }, 20s));
    return results;
}

// Every command of an echo_burst answered with its own value.
void check_echoes(const std::vector<cluster::redis_result>& results,
                  const std::function<std::string(std::size_t)>& value_of = numbered) {
    for (std::size_t i = 0; i < results.size(); ++i) {
        INFO("command " << i);
        REQUIRE_FALSE(results[i].ec);
        CHECK(results[i].value.text == value_of(i));
    }
}

TEST_CASE_FIXTURE(mux_on_redis,
                  "redis_mux: a burst of commands shares one connection, each gets its own reply") {
    const auto results = echo_burst(mux, io, 500);
    check_echoes(results);
    // One connection served all 500: one client of Redis's last ran ECHO.
    const auto clients = redis.command({"CLIENT", "LIST"}).text;
    std::size_t echoing = 0;
    for (auto at = clients.find("cmd=echo"); at != std::string::npos;
         at = clients.find("cmd=echo", at + 1))
        ++echoing;
    CHECK(echoing == 1);

    // Stalled: every queued command fails within the timeout, none hangs.
    redis.pause_clients(1500ms);
    const auto stalled = echo_burst(mux, io, 50);
    for (const auto& r : stalled)
        CHECK(r.ec == asio::error::timed_out);
    // After the pause, a fresh connection answers again (the broken one is never reused).
    std::this_thread::sleep_for(1600ms);
    const auto again = echo_burst(mux, io, 20);
    check_echoes(again);
}

// Under a burst the event loop reaches the Redis socket only after every client socket that
// became ready before it; tend() takes the reply there and then, from the request handling.
TEST_CASE_FIXTURE(mux_on_redis,
                  "redis_mux: tend() takes a reply already on the socket without the event loop") {
    REQUIRE_FALSE(echo_burst(mux, io, 1).front().ec);  // the connection is open

    for (int round = 0; round < 3; ++round) {
        const std::string value = "tended-" + std::to_string(round);
        const std::vector<std::string_view> echo{"ECHO", value};
        const auto sent = mux.send(echo, 2s);
        std::this_thread::sleep_for(50ms);  // Redis has answered; the loop has not run
        CHECK_FALSE(cluster::redis_mux::answered(sent));
        mux.tend();
        REQUIRE(cluster::redis_mux::answered(sent));
        std::optional<cluster::redis_result> got;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> { got = co_await cluster::redis_mux::take_reply(sent); },
            asio::detached);
        REQUIRE(run_until(io, [&] { return got.has_value(); }));
        REQUIRE_FALSE(got->ec);
        CHECK(got->value.text == value);
    }
    // The reads the reactor still had queued found the socket empty and went on waiting: the
    // connection serves the next commands in order.
    const auto after = echo_burst(mux, io, 50);
    check_echoes(after);
}

// tend() from the request handling runs between any two handlers, also between the reactor
// finding the socket readable and the read's own handler: replies must still arrive whole and
// in order. Values of 20 KiB make each reply span more than one receive.
TEST_CASE_FIXTURE(mux_on_redis,
                  "redis_mux: replies stay whole and in order while tend() runs between handlers") {
    REQUIRE_FALSE(echo_burst(mux, io, 1).front().ec);

    burst_options o;
    o.value_of = [](std::size_t i) {
        return std::string(20 * 1024, static_cast<char>('a' + i % 26));
    };
    o.timeout = 5s;
    o.tend = true;
    check_echoes(echo_burst(mux, io, 400, o), o.value_of);
}

// What each sent ECHO got back, the loop run until all are answered.
std::vector<cluster::redis_result> replies_to(const std::vector<cluster::redis_mux::ticket>& sent,
                                              asio::io_context& io) {
    std::vector<cluster::redis_result> results(sent.size());
    std::size_t done = 0;
    for (std::size_t i = 0; i < sent.size(); ++i)
        asio::co_spawn(
            io,
            [&, i]() -> asio::awaitable<void> {
                results[i] = co_await cluster::redis_mux::take_reply(sent[i]);
                ++done;
            },
            asio::detached);
    REQUIRE(run_until(io, [&] { return done == sent.size(); }));
    return results;
}

// An append's reply is nobody's wait: it leaves at once like any command, but tend() leaves its
// reply to the event loop instead of spending a receive on it.
TEST_CASE_FIXTURE(mux_on_redis,
                  "redis_mux: a background command is sent at once, its reply read by the loop") {
    REQUIRE_FALSE(echo_burst(mux, io, 1).front().ec);  // the connection is open
    const std::vector<std::string_view> set{"SET", "appended", "yes", "GET"};
    const auto sent = mux.send(set, 2s, cluster::redis_mux::urgency::background);
    std::this_thread::sleep_for(50ms);  // the loop has not run
    CHECK(redis.command({"GET", "appended"}).text == "yes");
    mux.tend();
    CHECK_FALSE(cluster::redis_mux::answered(sent));
    const auto replies = replies_to({sent}, io);
    REQUIRE_FALSE(replies.front().ec);
    CHECK(replies.front().value.is_nil());
}

TEST_CASE("redis_mux: a command that times out before its connection opens is never sent") {
    redis_options options;
    options.password = "mux-secret";
    redis_server redis(options);
    auto cfg = config_for(redis);
    cfg.password = options.password;
    cfg.connect_timeout = 5s;
    asio::io_context io;
    asio::ssl::context tls(asio::ssl::context::tls_client);
    cluster::redis_mux mux(io.get_executor(), cfg, tls);

    // AUTH, the connection's first command, waits out the pause: the SET times out unsent.
    const auto connections_before = connections_received(redis);
    redis.pause_clients(1200ms);
    std::optional<cluster::redis_result> set;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            const std::vector<std::string_view> args{"SET", "given-up", "1"};
            set = co_await mux.run(args, 250ms);
        },
        asio::detached);
    REQUIRE(run_until(io, [&] { return set.has_value(); }));
    CHECK(set->ec == asio::error::timed_out);

    // The connection still opens once Redis answers, and serves what comes next; the SET never
    // reached Redis.
    std::this_thread::sleep_for(1300ms);
    std::optional<cluster::redis_result> get;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            const std::vector<std::string_view> args{"EXISTS", "given-up"};
            get = co_await mux.run(args, 2s);
        },
        asio::detached);
    REQUIRE(run_until(io, [&] { return get.has_value(); }));
    REQUIRE_FALSE(get->ec);
    CHECK(get->value.integer == 0);
    // One connection, opened across the timeout, not one per command: besides it, Redis saw
    // the pause's and this count's own.
    CHECK(connections_received(redis) - connections_before == 3);
}

long long calls_of(const redis_server& redis, const std::string& command) {
    const auto info = redis.command({"INFO", "commandstats"}).text;
    const auto field = "cmdstat_" + command + ":calls=";
    const auto at = info.find(field);
    return at == std::string::npos ? 0 : std::stoll(info.substr(at + field.size()));
}

TEST_CASE_FIXTURE(
    pool_on_redis,
    "redis_pool: a script runs by its SHA1, and by its text again once Redis forgot it") {
    const cluster::redis_script script("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    CHECK(script.sha1() == redis.command({"SCRIPT", "LOAD", script.text()}).text);
    redis.command({"SCRIPT", "FLUSH"});
    redis.command({"CONFIG", "RESETSTAT"});  // from here, the counts are the pool's alone

    const auto eval = [&](const std::string& by) {
        std::optional<cluster::redis_result> result;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                const std::vector<std::string_view> args{"1", "counted", by};
                result = co_await pool.eval(script, args);
            },
            asio::detached);
        REQUIRE(run_until(io, [&] { return result.has_value(); }));
        REQUIRE_FALSE(result->ec);
        return result->value.integer;
    };
    // Unknown to Redis: the connection loads it (SCRIPT LOAD, its text once) just ahead of the
    // first EVALSHA, which runs it once.
    CHECK(eval("2") == 2);
    CHECK(calls_of(redis, "script|load") == 1);
    CHECK(calls_of(redis, "evalsha") == 1);
    CHECK(calls_of(redis, "eval") == 0);
    // Known now: by its SHA1 alone, the text no longer sent.
    CHECK(eval("3") == 5);
    CHECK(eval("4") == 9);
    CHECK(calls_of(redis, "evalsha") == 3);
    CHECK(calls_of(redis, "eval") == 0);
    CHECK(calls_of(redis, "script|load") == 1);
    // Forgotten behind the connection's back (SCRIPT FLUSH): EVALSHA is refused (NOSCRIPT),
    // EVAL teaches it again, and it runs exactly once.
    redis.command({"SCRIPT", "FLUSH"});
    CHECK(eval("5") == 14);
    CHECK(calls_of(redis, "evalsha") == 4);
    CHECK(calls_of(redis, "eval") == 1);
    CHECK(redis.command({"GET", "counted"}).text == "14");
}

// The client of Redis whose last command was `command`, by the id CLIENT LIST gives it.
std::string client_that_ran(const redis_server& redis, const std::string& command) {
    const auto clients = redis.command({"CLIENT", "LIST"}).text;
    const auto at = clients.find(" cmd=" + command + " ");
    REQUIRE(at != std::string::npos);
    const auto line =
        clients.rfind('\n', at) == std::string::npos ? 0 : clients.rfind('\n', at) + 1;
    return clients.substr(line, clients.find(' ', line) - line);
}

// Redis answers a connection's commands in order: a claim behind an append would wait for the
// append's script to run and its reply to be read first.
TEST_CASE_FIXTURE(
    pool_on_redis,
    "redis_pool: appends go on a connection of their own, apart from what requests await") {
    const cluster::redis_script append("return redis.call('APPEND', KEYS[1], ARGV[1])");

    // The first command opens both, so a flight's first append finds its connection open.
    std::optional<cluster::redis_result> pinged;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            const std::vector<std::string_view> ping{"PING"};
            pinged = co_await pool.run(ping);
        },
        asio::detached);
    REQUIRE(run_until(io, [&] { return pinged.has_value(); }));
    REQUIRE_FALSE(pinged->ec);
    // The pool's two and this INFO's.
    CHECK(run_until(
        io, [&] { return connected_clients(redis) == 3; }, 5s));

    const std::vector<std::string_view> append_args{"1", "appended", "abc"};
    const std::vector<std::string_view> claim{"SET", "claimed", "flight", "NX", "GET"};
    std::optional<cluster::redis_result> appended, claimed;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto sent =
                pool.send_eval(append, append_args, cluster::redis_mux::urgency::background);
            claimed = co_await pool.run(claim);
            appended = co_await pool.eval_reply(std::move(sent));
        },
        asio::detached);
    REQUIRE(run_until(io, [&] { return appended && claimed; }));
    REQUIRE_FALSE(appended->ec);
    REQUIRE_FALSE(claimed->ec);
    CHECK(appended->value.integer == 3);
    CHECK(claimed->value.is_nil());
    CHECK(client_that_ran(redis, "evalsha") != client_that_ran(redis, "set"));
}

}  // namespace
}  // namespace coalescer::test
