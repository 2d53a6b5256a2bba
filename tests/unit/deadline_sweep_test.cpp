// The worker's deadline sweep (proxy/net/deadline_sweep.*), driven by a real io_context, real
// loopback sockets and the sweep's own periodic timer: a socket's deadline cancels its pending
// operations once it has passed (never before), a cleared, renewed or finished one does not,
// many sockets and tasks share the one sweep, and sweep tasks run once at or after their due
// time unless cancelled or destroyed first.
//
// Time: only lower bounds are exact (nothing may fire before its time). A wait for something
// to happen gives up after `patience`; a claim that something did not happen is checked after
// the sweep has provably looked at it (a sweep task due later than the deadline has run, and
// the sweep runs due tasks before it looks at the deadlines, in the same pass).
#include "net/deadline_sweep.hpp"

#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace deadline_sweep_test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using coalescer::net::deadline_sweep;
using coalescer::net::socket_deadline;
using coalescer::net::sweep_task;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How long anything that should happen may take on a shared, noisy machine.
constexpr steady::duration patience = 20s;

// A worker's loop as the server has it: one thread's io_context and its started sweep.
struct worker_loop {
    worker_loop() { sweep.start(); }
    // Runs the loop until `done` holds or `patience` passes; true if it held.
    bool run_until(const std::function<bool()>& done) {
        const auto give_up = steady::now() + patience;
        while (!done() && steady::now() < give_up) {
            if (io.stopped()) {
                io.restart();
            }
            io.run_one_for(100ms);
        }
        return done();
    }
    asio::io_context io{1};
    deadline_sweep sweep{io.get_executor()};
};

// Two ends of a loopback TCP connection.
struct connected {
    explicit connected(asio::io_context& io) : near(io), far(io) {
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        near.connect(acceptor.local_endpoint());
        acceptor.accept(far);
    }
    void send(char c) { asio::write(far, asio::buffer(&c, 1)); }
    tcp::socket near;
    tcp::socket far;
};

// A one-byte read whose error is reported the way the proxy's coroutines report it: through
// socket_deadline::finish() (or as it is, without a deadline).
struct pending_read {
    void start(tcp::socket& socket, socket_deadline* deadline) {
        socket.async_read_some(asio::buffer(&byte, 1),
                               [this, deadline](error_code ec, std::size_t) {
                                   result = deadline != nullptr ? deadline->finish(ec) : ec;
                                   completed = steady::now();
                               });
    }
    bool done() const { return result.has_value(); }
    char byte = 0;
    std::optional<error_code> result;
    steady::time_point completed{};
};

// A sweep task that counts its runs and calls `then` from on_due().
class counting_task final : public sweep_task {
  public:
    explicit counting_task(std::function<void()> then = {}) : then_(std::move(then)) {}
    int runs = 0;
    steady::time_point last_run{};
    bool scheduled_while_running = false;

  private:
    void on_due() override {
        ++runs;
        last_run = steady::now();
        scheduled_while_running = task_scheduled();
        if (then_) {
            then_();
        }
    }
    std::function<void()> then_;
};

// Once the sweep has passed `t`, runs `action` (posted: after that pass of the sweep, so after
// it has looked at every deadline due by `t`).
class after_sweep_passes {
  public:
    after_sweep_passes(worker_loop& loop, steady::time_point t, std::function<void()> action)
        : task_([&loop, action = std::move(action)] { asio::post(loop.io, action); }) {
        loop.sweep.schedule(task_, t);
    }
    bool passed() const { return task_.runs > 0; }

  private:
    counting_task task_;
};

TEST_CASE("deadline sweep: a passed deadline cancels the socket's read, which reports a timeout") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);
    CHECK_FALSE(deadline.fired());
    pending_read read;
    const auto armed = steady::now();
    deadline.expires_after(150ms);
    read.start(s.near, &deadline);
    REQUIRE(loop.run_until([&] { return read.done(); }));
    CHECK(*read.result == boost::beast::error::timeout);
    CHECK(deadline.fired());
    CHECK(read.completed - armed >= 150ms);
    CHECK(read.completed - armed < 10s);  // fired by the sweep, not by the give-up bound

    // Cancelled, not closed (a 408 can still be written): a new deadline, a new read, the
    // bytes the peer sends next.
    CHECK(s.near.is_open());
    deadline.expires_after(30s);
    CHECK_FALSE(deadline.fired());
    pending_read next;
    next.start(s.near, &deadline);
    s.send('x');
    REQUIRE(loop.run_until([&] { return next.done(); }));
    CHECK(*next.result == error_code{});
    CHECK(next.byte == 'x');
    CHECK_FALSE(deadline.fired());
}

TEST_CASE("deadline sweep: a deadline in the past fires at the sweep's next pass") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);
    pending_read read;
    deadline.expires_at(steady::now() - 1s);
    read.start(s.near, &deadline);
    REQUIRE(loop.run_until([&] { return read.done(); }));
    CHECK(*read.result == boost::beast::error::timeout);
    CHECK(deadline.fired());
}

TEST_CASE("deadline sweep: a pending write is cancelled at its deadline too") {
    worker_loop loop;
    connected s(loop.io);
    s.near.set_option(asio::socket_base::send_buffer_size(16 * 1024));
    socket_deadline deadline(loop.sweep, s.near);
    // Far more than the kernel buffers while the peer reads nothing: the write cannot finish.
    const std::string big(64 * 1024 * 1024, 'w');
    std::optional<error_code> result;
    std::size_t written = 0;
    const auto armed = steady::now();
    deadline.expires_after(150ms);
    asio::async_write(s.near, asio::buffer(big), [&](error_code ec, std::size_t n) {
        result = deadline.finish(ec);
        written = n;
    });
    REQUIRE(loop.run_until([&] { return result.has_value(); }));
    CHECK(*result == boost::beast::error::timeout);
    CHECK(written < big.size());
    CHECK(steady::now() - armed >= 150ms);
}

TEST_CASE("deadline sweep: a cleared deadline never fires") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);
    pending_read read;
    const auto armed = steady::now();
    deadline.expires_after(100ms);
    read.start(s.near, &deadline);
    deadline.clear();
    after_sweep_passes later(loop, armed + 400ms, [&] { s.send('x'); });
    REQUIRE(loop.run_until([&] { return read.done(); }));
    CHECK(later.passed());
    CHECK(*read.result == error_code{});
    CHECK(read.byte == 'x');
    CHECK_FALSE(deadline.fired());
}

TEST_CASE("deadline sweep: a renewed deadline fires at its new time, not the old one") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);
    pending_read read;
    const auto armed = steady::now();
    deadline.expires_after(100ms);
    read.start(s.near, &deadline);

    SUBCASE("renewed to a later time") {
        // Renewed by a sweep task: however late the sweep's pass, it runs due tasks before it
        // looks at deadlines, so the old deadline is gone before it could be seen.
        steady::time_point renewed{};
        counting_task renew([&] {
            renewed = steady::now();
            deadline.expires_after(400ms);
        });
        loop.sweep.schedule(renew, armed + 20ms);
        REQUIRE(loop.run_until([&] { return read.done(); }));
        REQUIRE(renew.runs == 1);
        CHECK(*read.result == boost::beast::error::timeout);
        CHECK(deadline.fired());
        CHECK(read.completed - renewed >= 400ms);
        CHECK(read.completed - armed >= 420ms);
    }
    SUBCASE("renewed to a time that does not come during the test") {
        deadline.expires_after(1h);
        after_sweep_passes later(loop, armed + 400ms, [&] { s.send('y'); });
        REQUIRE(loop.run_until([&] { return read.done(); }));
        CHECK(later.passed());
        CHECK(*read.result == error_code{});
        CHECK(read.byte == 'y');
        CHECK_FALSE(deadline.fired());
    }
}

TEST_CASE("deadline sweep: finish() after a completed operation clears the deadline") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);
    const auto armed = steady::now();
    deadline.expires_after(100ms);
    s.send('a');
    pending_read first;
    first.start(s.near, &deadline);
    REQUIRE(loop.run_until([&] { return first.done(); }));
    CHECK(*first.result == error_code{});
    CHECK(first.byte == 'a');
    // The next read has no deadline of its own: the finished one must not cancel it.
    pending_read second;
    second.start(s.near, &deadline);
    after_sweep_passes later(loop, armed + 400ms, [&] { s.send('b'); });
    REQUIRE(loop.run_until([&] { return second.done(); }));
    CHECK(later.passed());
    CHECK(*second.result == error_code{});
    CHECK(second.byte == 'b');
    CHECK_FALSE(deadline.fired());
}

TEST_CASE("deadline sweep: a cancellation that is not the deadline's is not a timeout") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);

    SUBCASE("an armed deadline, the socket cancelled by its owner") {
        deadline.expires_after(1h);
        pending_read read;
        read.start(s.near, &deadline);
        asio::post(loop.io, [&] { s.near.cancel(); });
        REQUIRE(loop.run_until([&] { return read.done(); }));
        CHECK(*read.result == asio::error::operation_aborted);
        CHECK_FALSE(deadline.fired());
    }
    SUBCASE("after a timeout, expires_after() starts afresh") {
        deadline.expires_after(50ms);
        pending_read timed_out;
        timed_out.start(s.near, &deadline);
        REQUIRE(loop.run_until([&] { return timed_out.done(); }));
        REQUIRE(*timed_out.result == boost::beast::error::timeout);
        REQUIRE(deadline.fired());

        deadline.expires_after(1h);
        CHECK_FALSE(deadline.fired());
        pending_read read;
        read.start(s.near, &deadline);
        asio::post(loop.io, [&] { s.near.cancel(); });
        REQUIRE(loop.run_until([&] { return read.done(); }));
        CHECK(*read.result == asio::error::operation_aborted);
    }
}

TEST_CASE("deadline sweep: many sockets on one sweep, each cancelled at its own deadline only") {
    worker_loop loop;
    constexpr std::size_t armed_count = 16;
    constexpr std::size_t cleared_count = 4;
    constexpr std::size_t unarmed_count = 4;
    constexpr std::size_t n = armed_count + cleared_count + unarmed_count;
    std::vector<std::unique_ptr<connected>> sockets;
    std::vector<std::unique_ptr<socket_deadline>> deadlines;
    std::vector<pending_read> reads(n);
    std::vector<steady::time_point> due(n, steady::time_point::max());
    for (std::size_t i = 0; i < n; ++i) {
        sockets.push_back(std::make_unique<connected>(loop.io));
        deadlines.push_back(std::make_unique<socket_deadline>(loop.sweep, sockets[i]->near));
    }
    const auto armed = steady::now();
    for (std::size_t i = 0; i < n; ++i) {
        if (i < armed_count) {
            due[i] = armed + 100ms + (i % 4) * 150ms;  // four waves
            deadlines[i]->expires_at(due[i]);
        } else if (i < armed_count + cleared_count) {
            deadlines[i]->expires_at(armed + 100ms);
            deadlines[i]->clear();
        }
        reads[i].start(sockets[i]->near, deadlines[i].get());
    }
    REQUIRE(loop.run_until([&] {
        for (std::size_t i = 0; i < armed_count; ++i)
            if (!reads[i].done())
                return false;
        return true;
    }));
    for (std::size_t i = 0; i < armed_count; ++i) {
        CAPTURE(i);
        CHECK(*reads[i].result == boost::beast::error::timeout);
        CHECK(deadlines[i]->fired());
        CHECK(reads[i].completed >= due[i]);
    }
    // The sockets without a deadline are untouched, past the last wave as well.
    std::size_t unfinished = 0;
    for (std::size_t i = armed_count; i < n; ++i)
        unfinished += reads[i].done() ? 0 : 1;
    CHECK(unfinished == cleared_count + unarmed_count);
    after_sweep_passes later(loop, armed + 1s, [&] {
        for (std::size_t i = armed_count; i < n; ++i)
            sockets[i]->send(static_cast<char>('a' + i));
    });
    REQUIRE(loop.run_until([&] {
        for (const auto& r : reads)
            if (!r.done())
                return false;
        return true;
    }));
    for (std::size_t i = armed_count; i < n; ++i) {
        CAPTURE(i);
        CHECK(*reads[i].result == error_code{});
        CHECK(reads[i].byte == static_cast<char>('a' + i));
        CHECK_FALSE(deadlines[i]->fired());
    }
}

TEST_CASE("deadline sweep: deadlines destroyed in any order leave the others working") {
    worker_loop loop;
    constexpr std::size_t n = 6;
    std::vector<std::unique_ptr<connected>> sockets;
    std::vector<std::unique_ptr<socket_deadline>> deadlines;
    for (std::size_t i = 0; i < n; ++i) {
        sockets.push_back(std::make_unique<connected>(loop.io));
        deadlines.push_back(std::make_unique<socket_deadline>(loop.sweep, sockets[i]->near));
    }
    const auto armed = steady::now();
    for (auto& d : deadlines)
        d->expires_at(armed + 150ms);
    // The first, one from the middle, the last: each removal moves another into its place.
    const std::vector<std::size_t> gone{0, 3, n - 1};
    std::vector<pending_read> reads(n);
    for (std::size_t i = 0; i < n; ++i) {
        const bool keeps = std::find(gone.begin(), gone.end(), i) == gone.end();
        reads[i].start(sockets[i]->near, keeps ? deadlines[i].get() : nullptr);
    }
    for (std::size_t i : gone)
        deadlines[i].reset();
    // And one made after the removals, for a socket whose deadline went.
    socket_deadline again(loop.sweep, sockets[0]->far);
    again.expires_at(armed + 150ms);
    pending_read far_read;
    far_read.start(sockets[0]->far, &again);

    REQUIRE(loop.run_until([&] {
        for (std::size_t i = 0; i < n; ++i)
            if (deadlines[i] && !reads[i].done())
                return false;
        return far_read.done();
    }));
    for (std::size_t i = 0; i < n; ++i) {
        CAPTURE(i);
        if (deadlines[i]) {
            CHECK(*reads[i].result == boost::beast::error::timeout);
            CHECK(deadlines[i]->fired());
        }
    }
    CHECK(*far_read.result == boost::beast::error::timeout);
    // The sockets whose deadlines were destroyed were never cancelled.
    after_sweep_passes later(loop, armed + 600ms, [&] {
        for (std::size_t i : gone)
            sockets[i]->send('z');
    });
    REQUIRE(loop.run_until([&] {
        for (std::size_t i : gone)
            if (!reads[i].done())
                return false;
        return true;
    }));
    for (std::size_t i : gone) {
        CAPTURE(i);
        CHECK(*reads[i].result == error_code{});
        CHECK(reads[i].byte == 'z');
    }
}

TEST_CASE("deadline sweep: a task runs once, at or after its due time, unscheduled first") {
    worker_loop loop;
    counting_task task;
    CHECK_FALSE(task.task_scheduled());
    const auto due = steady::now() + 120ms;
    loop.sweep.schedule(task, due);
    CHECK(task.task_scheduled());
    CHECK(task.runs == 0);
    REQUIRE(loop.run_until([&] { return task.runs == 1; }));
    CHECK(task.last_run >= due);
    CHECK_FALSE(task.scheduled_while_running);
    CHECK_FALSE(task.task_scheduled());
    // Later passes of the sweep leave it alone.
    counting_task marker;
    loop.sweep.schedule(marker, steady::now() + 300ms);
    REQUIRE(loop.run_until([&] { return marker.runs == 1; }));
    CHECK(task.runs == 1);
}

TEST_CASE("deadline sweep: a task due already runs at the next pass, never inside schedule()") {
    worker_loop loop;
    counting_task task;
    loop.sweep.schedule(task, steady::now() - 1s);
    CHECK(task.runs == 0);
    CHECK(task.task_scheduled());
    REQUIRE(loop.run_until([&] { return task.runs == 1; }));
}

TEST_CASE("deadline sweep: a task cancelled or destroyed before its time never runs") {
    worker_loop loop;
    const auto now = steady::now();
    counting_task cancelled;
    loop.sweep.schedule(cancelled, now + 50ms);
    cancelled.cancel_task();
    CHECK_FALSE(cancelled.task_scheduled());
    cancelled.cancel_task();  // a no-op when not scheduled
    CHECK_FALSE(cancelled.task_scheduled());

    bool destroyed_ran = false;
    auto destroyed = std::make_unique<counting_task>([&] { destroyed_ran = true; });
    loop.sweep.schedule(*destroyed, now + 50ms);
    destroyed.reset();

    counting_task kept;
    loop.sweep.schedule(kept, now + 50ms);
    counting_task marker;
    loop.sweep.schedule(marker, now + 300ms);
    REQUIRE(loop.run_until([&] { return marker.runs == 1; }));
    CHECK(cancelled.runs == 0);
    CHECK_FALSE(destroyed_ran);
    CHECK(kept.runs == 1);
}

TEST_CASE("deadline sweep: scheduling a scheduled task again replaces its due time") {
    worker_loop loop;
    const auto now = steady::now();
    counting_task later;
    loop.sweep.schedule(later, now + 50ms);
    loop.sweep.schedule(later, now + 400ms);
    counting_task sooner;
    loop.sweep.schedule(sooner, now + 1h);
    loop.sweep.schedule(sooner, now + 50ms);
    REQUIRE(loop.run_until([&] { return later.runs == 1 && sooner.runs == 1; }));
    CHECK(later.last_run >= now + 400ms);
    counting_task marker;
    loop.sweep.schedule(marker, steady::now() + 200ms);
    REQUIRE(loop.run_until([&] { return marker.runs == 1; }));
    CHECK(later.runs == 1);
    CHECK(sooner.runs == 1);
}

TEST_CASE("deadline sweep: a task may schedule itself again, and other tasks, from on_due") {
    worker_loop loop;
    std::vector<steady::time_point> dues;
    std::vector<steady::time_point> runs;
    counting_task other;
    steady::time_point other_due{};
    std::function<void()> again;
    counting_task periodic([&] { again(); });
    again = [&] {
        runs.push_back(steady::now());
        if (runs.size() == 1) {
            other_due = steady::now();
            loop.sweep.schedule(other, other_due);  // due at once: the next pass at the latest
        }
        if (runs.size() < 3) {
            dues.push_back(steady::now() + 60ms);
            loop.sweep.schedule(periodic, dues.back());
        }
    };
    dues.push_back(steady::now() + 60ms);
    loop.sweep.schedule(periodic, dues.back());
    REQUIRE(loop.run_until([&] { return periodic.runs == 3 && other.runs == 1; }));
    REQUIRE(runs.size() == 3);
    for (std::size_t i = 0; i < runs.size(); ++i) {
        CAPTURE(i);
        CHECK(runs[i] >= dues[i]);
    }
    CHECK(other.last_run >= other_due);
    CHECK_FALSE(periodic.task_scheduled());
}

TEST_CASE("deadline sweep: tasks and socket deadlines share the sweep") {
    worker_loop loop;
    connected s(loop.io);
    socket_deadline deadline(loop.sweep, s.near);
    const auto armed = steady::now();
    counting_task task;
    loop.sweep.schedule(task, armed + 100ms);
    deadline.expires_at(armed + 200ms);
    pending_read read;
    read.start(s.near, &deadline);
    REQUIRE(loop.run_until([&] { return read.done() && task.runs == 1; }));
    CHECK(task.last_run >= armed + 100ms);
    CHECK(*read.result == boost::beast::error::timeout);
    CHECK(read.completed >= armed + 200ms);
}

// A due task's on_due() may cancel or destroy another due task (the sweep's contract): the
// sweep must neither run the cancelled one nor step through its unlinked node. Run in a child
// process, so that a crash fails this test only.
TEST_CASE("deadline sweep: a task whose on_due cancels another due task") {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        std::signal(SIGSEGV, SIG_DFL);
        std::signal(SIGBUS, SIG_DFL);
        int code = 0;
        {
            worker_loop loop;
            counting_task second;
            counting_task first([&] { second.cancel_task(); });
            counting_task marker;
            const auto due = steady::now();
            loop.sweep.schedule(first, due);
            loop.sweep.schedule(second, due);
            loop.sweep.schedule(marker, due + 200ms);
            if (!loop.run_until([&] { return marker.runs == 1; })) {
                code = 2;  // the sweep stopped
            } else if (first.runs != 1) {
                code = 3;
            } else if (second.runs != 0) {
                code = 4;  // the cancelled task ran
            }
        }
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    if (WIFSIGNALED(status)) {
        FAIL_CHECK("the sweep crashed: signal " << WTERMSIG(status));
    } else {
        // 2: the sweep stopped, 3: the first task did not run once, 4: the cancelled one ran.
        CHECK(WEXITSTATUS(status) == 0);
    }
}

}  // namespace deadline_sweep_test
