#include "upstream/pacer.hpp"

#include "net/deadline_sweep.hpp"

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using coalescer::net::deadline_sweep;
using coalescer::upstream::pacer;
using steady = std::chrono::steady_clock;

// Worker loops as the server has them: an event loop and a deadline sweep each.
struct loops {
    explicit loops(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            ios.push_back(std::make_unique<asio::io_context>(1));
            sweeps.push_back(std::make_unique<deadline_sweep>(ios.back()->get_executor()));
            sweeps.back()->start();
        }
    }
    std::vector<asio::any_io_executor> executors() const {
        std::vector<asio::any_io_executor> out;
        for (const auto& io : ios)
            out.push_back(io->get_executor());
        return out;
    }
    // Runs every loop on this thread until `done` holds or 10 s pass; true if it held.
    bool poll_until(const std::function<bool()>& done) {
        const auto give_up = steady::now() + 10s;
        while (!done() && steady::now() < give_up) {
            for (auto& io : ios) {
                io->restart();
                io->poll();
            }
        }
        return done();
    }
    std::vector<std::unique_ptr<asio::io_context>> ios;
    std::vector<std::unique_ptr<deadline_sweep>> sweeps;
};

asio::awaitable<void> yield() {
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

asio::awaitable<bool> take(pacer& p, std::size_t lane, deadline_sweep& sweep,
                           steady::duration patience = 30s) {
    if (p.try_acquire()) {  // not `co_return a || co_await b`: GCC 12 runs b whatever a is
        co_return true;
    }
    co_return co_await p.acquire(steady::now() + patience, lane, sweep);
}

}  // namespace

TEST_CASE(
    "pacer: callers racing on four worker threads never hold more than max_concurrent "
    "slots, and every one of them is served") {
    constexpr int max_concurrent = 3;
    constexpr std::size_t workers = 4;
    constexpr int callers_per_worker = 40;
    constexpr int rounds = 25;
    loops w(workers);
    pacer p(max_concurrent, std::nullopt, w.executors());
    std::atomic<int> holding{0};
    std::atomic<int> most{0};
    std::atomic<int> served{0};
    std::atomic<int> refused{0};
    std::atomic<int> finished{0};
    auto caller = [&](std::size_t lane, int seed) -> asio::awaitable<void> {
        asio::steady_timer pause(co_await asio::this_coro::executor);
        for (int r = 0; r < rounds; ++r) {
            if (!co_await take(p, lane, *w.sweeps[lane])) {
                ++refused;
                continue;
            }
            const int now = ++holding;
            int seen = most.load();
            while (now > seen && !most.compare_exchange_weak(seen, now)) {
            }
            if ((seed + r) % 3 == 0) {
                pause.expires_after(std::chrono::microseconds(50 * ((seed + r) % 5)));
                co_await pause.async_wait(asio::use_awaitable);
            } else {
                co_await yield();
            }
            --holding;
            p.release(lane);
            ++served;
        }
        ++finished;
    };
    for (std::size_t lane = 0; lane < workers; ++lane) {
        for (int c = 0; c < callers_per_worker; ++c) {
            asio::co_spawn(*w.ios[lane], caller(lane, c), asio::detached);
        }
    }
    std::vector<std::thread> threads;
    for (auto& io : w.ios) {
        threads.emplace_back([&io, &finished] {
            while (finished.load() < static_cast<int>(workers) * callers_per_worker) {
                io->restart();
                io->run_for(20ms);
            }
        });
    }
    for (auto& t : threads)
        t.join();
    w.poll_until([&] { return p.in_use() == 0; });  // a slot sent to a worker whose waiter left
    CHECK(served.load() == static_cast<int>(workers) * callers_per_worker * rounds);
    CHECK(refused.load() == 0);
    CHECK(most.load() == max_concurrent);  // the cap was reached: callers did queue
    CHECK(p.in_use() == 0);
    CHECK(p.queued() == 0);
}

TEST_CASE("pacer: waiters on one worker get slots in the order they queued") {
    loops w(1);
    pacer p(1, std::nullopt, w.executors());
    REQUIRE(p.try_acquire());
    std::vector<int> order;
    for (int i = 0; i < 5; ++i) {
        asio::co_spawn(
            *w.ios[0],
            [&, i]() -> asio::awaitable<void> {
                if (co_await p.acquire(steady::now() + 30s, 0, *w.sweeps[0])) {
                    order.push_back(i);
                    co_await yield();
                    p.release(0);
                }
            },
            asio::detached);
    }
    REQUIRE(w.poll_until([&] { return p.queued() == 5; }));
    p.release(0);
    REQUIRE(w.poll_until([&] { return order.size() == 5 && p.in_use() == 0; }));
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE(
    "pacer: a slot freed on one worker goes to a waiter on another that has waited "
    "longer, not to a newer one of its own") {
    loops w(2);
    pacer p(1, std::nullopt, w.executors());
    REQUIRE(p.try_acquire());  // held on worker 0
    std::vector<std::string> order;
    auto waiter = [&](std::size_t lane, std::string name) -> asio::awaitable<void> {
        if (co_await p.acquire(steady::now() + 30s, lane, *w.sweeps[lane])) {
            order.push_back(name);
            co_await yield();
            p.release(lane);
        }
    };
    asio::co_spawn(*w.ios[1], waiter(1, "older, on worker 1"), asio::detached);
    REQUIRE(w.poll_until([&] { return p.queued() == 1; }));
    std::this_thread::sleep_for(pacer::lane_preference * 4);
    asio::co_spawn(*w.ios[0], waiter(0, "newer, on worker 0"), asio::detached);
    REQUIRE(w.poll_until([&] { return p.queued() == 2; }));
    asio::post(*w.ios[0], [&] { p.release(0); });
    REQUIRE(w.poll_until([&] { return order.size() == 2 && p.in_use() == 0; }));
    CHECK(order == std::vector<std::string>{"older, on worker 1", "newer, on worker 0"});
}

TEST_CASE(
    "pacer: a waiter past its deadline gives up without a slot, and the slot stays "
    "usable") {
    loops w(1);
    pacer p(1, std::nullopt, w.executors());
    REQUIRE(p.try_acquire());
    std::optional<bool> got;
    steady::duration waited{};
    asio::co_spawn(
        *w.ios[0],
        [&]() -> asio::awaitable<void> {
            const auto started = steady::now();
            got = co_await p.acquire(started + 100ms, 0, *w.sweeps[0]);
            waited = steady::now() - started;
        },
        asio::detached);
    REQUIRE(w.poll_until([&] { return got.has_value(); }));
    CHECK_FALSE(*got);
    CHECK(waited >= 100ms);
    CHECK(p.queued() == 0);
    CHECK(p.in_use() == 1);  // still the holder's
    asio::post(*w.ios[0], [&] { p.release(0); });
    REQUIRE(w.poll_until([&] { return p.in_use() == 0; }));
    CHECK(p.try_acquire());
}

TEST_CASE("pacer: a worker loop destroyed with waiters in it leaves no one queued") {
    auto w = std::make_unique<loops>(2);
    pacer p(1, std::nullopt, w->executors());
    REQUIRE(p.try_acquire());
    for (std::size_t lane = 0; lane < 2; ++lane) {
        for (int i = 0; i < 3; ++i) {
            asio::co_spawn(*w->ios[lane], take(p, lane, *w->sweeps[lane]), asio::detached);
        }
    }
    REQUIRE(w->poll_until([&] { return p.queued() == 6; }));
    w.reset();
    CHECK(p.queued() == 0);
    CHECK(p.in_use() == 1);
}
