#include "cluster/redis_mux.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// The suspended caller of a command: its completion handler, kept by type erasure of our own
// (Boost 1.81's any_completion_handler recurses without end when moved around).
struct caller_base {
    virtual ~caller_base() = default;
    virtual void resume() = 0;
};
template <typename Handler>
struct caller final : caller_base {
    explicit caller(Handler h) : handler(std::move(h)) {}
    void resume() override { std::move(handler)(); }
    Handler handler;
};

// A turn of the event loop longer than this means other work is queued.
constexpr std::chrono::microseconds busy_turn{100};
// How often handling requests looks at the socket while replies are awaited: a loopback
// Redis answers in about 50 us, and a look that finds nothing costs a system call.
constexpr std::chrono::microseconds look_interval{100};

}  // namespace

// A command waiting for its reply. Whoever settles it (the reader, a failure, its deadline)
// resumes the caller at once, on the worker's thread: under a burst of requests a further trip
// through the event loop's queue would cost the time it takes to drain it.
struct redis_mux::pending {
    std::chrono::steady_clock::time_point deadline;
    std::unique_ptr<caller_base> waiting;  // set while the caller waits
    std::string command;                   // RESP, until written
    redis_result result;
    bool urgent = true;  // urgency::awaited
    bool written = false;
    bool done = false;

    // `resume_caller` false: the event loops are gone (shutdown); the caller's coroutine is
    // destroyed where it waits instead.
    void settle(bool resume_caller = true) {
        if (done)
            return;
        done = true;
        auto c = std::move(waiting);
        if (c && resume_caller)
            c->resume();
    }
};

struct redis_mux::link : std::enable_shared_from_this<link> {
    link(const asio::any_io_executor& ex, const ops::cluster_config& config,
         asio::ssl::context& tls)
        : connection(ex, config, tls), clock(ex) {}

    enum class state { opening, open, broken };
    state now = state::opening;
    redis_connection connection;
    std::deque<std::shared_ptr<pending>> queue;  // every unanswered command, in order
    std::size_t unwritten = 0;                   // how many at the queue's end are not written
    std::size_t urgent_written = 0;              // written awaited commands not answered yet
    std::string writing;                         // what the write under way sends
    bool write_busy = false;
    std::set<std::string, std::less<>> scripts;  // SHA1s this connection loaded (or asked to)
    // One timer for every command's deadline, armed for the earliest: a command costs the
    // event loop no timer of its own to set and cancel.
    asio::steady_timer clock;
    std::optional<std::chrono::steady_clock::time_point> clock_at;     // while armed
    std::optional<std::chrono::steady_clock::time_point> look_posted;  // while a look is queued
    std::chrono::steady_clock::time_point last_look;

    void fail(error_code ec, bool resume_callers = true) {
        if (now == state::broken)
            return;
        now = state::broken;
        connection.close();
        clock.cancel();
        clock_at.reset();
        auto settling = std::move(queue);  // a resumed caller may already queue on a new link
        queue.clear();
        unwritten = 0;
        urgent_written = 0;
        for (const auto& p : settling) {
            p->result.ec = ec;
            p->settle(resume_callers);
        }
    }

    // Sends everything queued since the last write, in one write, unless one is under way
    // (its completion sends the rest). Called by the command itself: the bytes leave at once.
    void flush() {
        if (now != state::open || write_busy || unwritten == 0)
            return;
        writing.clear();
        for (auto at = queue.end() - static_cast<std::ptrdiff_t>(unwritten); at != queue.end();
             ++at) {
            if (unwritten == 1)
                writing.swap((*at)->command);  // the usual case: nothing to copy
            else
                writing += (*at)->command;
            (*at)->command = std::string();
            (*at)->written = true;
            urgent_written += (*at)->urgent ? 1 : 0;
        }
        unwritten = 0;
        look_soon();
        // What the socket takes now is sent now: a write completed through the event loop
        // would hold every command queued meanwhile for a turn of it.
        error_code sent_ec;
        const auto sent = connection.write_now(writing, sent_ec);
        if (!sent_ec && sent == writing.size())
            return;
        writing.erase(0, sent);  // the rest, or a failure, through the reactor
        write_busy = true;
        connection.start_write(writing, [self = shared_from_this()](error_code ec) {
            self->write_busy = false;
            if (ec)
                return self->fail(ec);
            self->flush();
        });
    }

    // Whether a reply someone waits on now is due: only those are worth a receive of our own.
    bool awaiting() const noexcept { return urgent_written > 0; }

    // A reply Redis sent at once waits, in the reactor, behind every socket that became ready
    // before it: under a burst that is every other client's request, tens of milliseconds for
    // a claim that took Redis 50 us. So the link also looks at its socket itself: after each
    // turn of the event loop while replies are awaited (a look queued behind the work at hand)
    // and whenever a request is handled (tend), at most every `look_interval`.
    void look_soon() {
        if (look_posted || now != state::open || !awaiting() || !connection.reads_now())
            return;
        look_posted = std::chrono::steady_clock::now();
        asio::post(clock.get_executor(), [self = shared_from_this()] { self->look(); });
    }

    void look() {
        const auto at = std::chrono::steady_clock::now();
        const auto turn = at - *look_posted;
        look_posted.reset();
        // An idle loop came round at once: its reactor takes the reply as soon as it arrives,
        // and a receive now would most likely find nothing.
        if (turn < busy_turn || now != state::open || !awaiting() || !take_now(at))
            return;
        if (awaiting())
            look_soon();  // a turn that took this long will again
    }

    void tend() {
        if (now != state::open || !awaiting() || !connection.reads_now())
            return;
        const auto at = std::chrono::steady_clock::now();
        if (at - last_look >= look_interval)
            take_now(at);
    }

    // Takes the replies the socket holds; false once the link is done.
    bool take_now(std::chrono::steady_clock::time_point at) {
        last_look = at;
        error_code ec;
        connection.read_now(ec);
        if (ec == asio::error::would_block)
            return true;
        if (ec) {
            fail(ec);
            return false;
        }
        return take_replies();
    }

    void read() {
        connection.start_read([self = shared_from_this()](error_code ec) {
            if (ec)
                return self->fail(ec);
            if (self->take_replies())
                self->read();
        });
    }

    // Hands every whole reply read so far to its command; false once the link is done.
    bool take_replies() {
        for (;;) {
            reply r;
            const auto got = connection.next_reply(r);
            if (got == reply_reader::status::more)
                return now == state::open;
            if (got == reply_reader::status::broken || queue.empty() || !queue.front()->written) {
                fail(make_error_code(boost::system::errc::protocol_error));  // not ours to trust
                return false;
            }
            auto p = std::move(queue.front());
            queue.pop_front();
            urgent_written -= p->urgent ? 1 : 0;
            p->result.value = std::move(r);
            p->settle();
        }
    }

    // Arms the clock for the earliest deadline in the queue, unless it is armed for an earlier one.
    void watch(std::chrono::steady_clock::time_point deadline) {
        if (clock_at && *clock_at <= deadline)
            return;
        clock_at = deadline;
        clock.expires_at(deadline);
        clock.async_wait([self = shared_from_this(), deadline](error_code ec) {
            if (!ec && self->clock_at == deadline)
                self->on_clock();
        });
    }

    void on_clock() {
        clock_at.reset();
        if (now == state::broken)
            return;
        const auto at = std::chrono::steady_clock::now();
        // A written command past its deadline breaks the link: its reply would answer the next.
        for (const auto& p : queue) {
            if (p->written && p->deadline <= at)
                return fail(asio::error::timed_out);
        }
        // Unwritten ones past theirs leave the queue unsent: nothing waits for them now.
        std::vector<std::shared_ptr<pending>> expired;
        const auto first = queue.end() - static_cast<std::ptrdiff_t>(unwritten);
        const auto kept = std::stable_partition(first, queue.end(),
                                                [at](const auto& p) { return p->deadline > at; });
        expired.assign(std::make_move_iterator(kept), std::make_move_iterator(queue.end()));
        unwritten -= expired.size();
        queue.erase(kept, queue.end());
        if (!queue.empty()) {
            auto earliest = queue.front()->deadline;
            for (const auto& p : queue)
                earliest = std::min(earliest, p->deadline);
            watch(earliest);
        }
        for (const auto& p : expired) {  // last: a resumed caller may queue again
            p->result.ec = asio::error::timed_out;
            p->settle();
        }
    }
};

namespace {

using link_ptr = std::shared_ptr<redis_mux::link>;

// Connecting is bounded by timeouts.connect; commands queued meanwhile that time out first
// are dropped unsent, and the connection goes on opening for the ones that come after.
asio::awaitable<void> open_link(link_ptr l) {
    const auto ec = co_await l->connection.open();
    if (ec) {
        l->fail(ec);
        co_return;
    }
    if (l->now == redis_mux::link::state::broken)
        co_return;
    l->now = redis_mux::link::state::open;
    l->read();
    l->flush();
}

}  // namespace

redis_mux::redis_mux(asio::any_io_executor ex, const ops::cluster_config& config,
                     asio::ssl::context& tls)
    : executor_(std::move(ex)), config_(config), tls_(tls) {}

redis_mux::~redis_mux() {
    close();
}

void redis_mux::close() noexcept {
    if (link_)
        link_->fail(asio::error::operation_aborted, false);
    link_.reset();
}

std::shared_ptr<redis_mux::link> redis_mux::current() {
    if (!link_ || link_->now == link::state::broken) {
        link_ = std::make_shared<link>(executor_, config_, tls_);
        asio::co_spawn(executor_, open_link(link_), asio::detached);
    }
    return link_;
}

namespace {

redis_mux::ticket enqueue(redis_mux::link& l, const std::vector<std::string_view>& args,
                          std::chrono::milliseconds timeout, redis_mux::urgency u) {
    auto p = std::make_shared<redis_mux::pending>();
    p->deadline = std::chrono::steady_clock::now() + timeout;
    p->urgent = u == redis_mux::urgency::awaited;
    append_command(p->command, args);
    l.queue.push_back(p);
    ++l.unwritten;
    l.watch(p->deadline);
    return p;
}

}  // namespace

redis_mux::ticket redis_mux::send(const std::vector<std::string_view>& args,
                                  std::chrono::milliseconds timeout, urgency u) {
    auto l = current();
    auto p = enqueue(*l, args, timeout, u);
    l->flush();
    return p;
}

redis_mux::ticket redis_mux::send_script(const redis_script& script,
                                         const std::vector<std::string_view>& args,
                                         std::chrono::milliseconds timeout, urgency u) {
    auto l = current();
    if (l->scripts.insert(script.sha1()).second) {
        // Its reply is not read: a failed load shows as NOSCRIPT on the command that follows.
        const std::vector<std::string_view> load{"SCRIPT", "LOAD", script.text()};
        enqueue(*l, load, timeout, u);
    }
    std::vector<std::string_view> command{"EVALSHA", script.sha1()};
    command.insert(command.end(), args.begin(), args.end());
    auto p = enqueue(*l, command, timeout, u);
    l->flush();
    return p;
}

asio::awaitable<redis_result> redis_mux::take_reply(ticket sent) {
    if (!sent->done) {
        co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
            [&sent](auto handler) {
                sent->waiting = std::make_unique<caller<decltype(handler)>>(std::move(handler));
            },
            asio::use_awaitable);
    }
    co_return std::move(sent->result);
}

bool redis_mux::answered(const ticket& sent) noexcept {
    return sent->done;
}

void redis_mux::warm() {
    current();
}

void redis_mux::tend() {
    if (auto l = link_)  // a caller resumed may replace the link
        l->tend();
}

asio::awaitable<redis_result> redis_mux::run(const std::vector<std::string_view>& args,
                                             std::chrono::milliseconds timeout) {
    co_return co_await take_reply(send(args, timeout));
}

}  // namespace coalescer::cluster
