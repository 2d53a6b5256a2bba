#include "cluster/redis_mux.hpp"

#include "net/use_tuple.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <deque>
#include <string>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// A command waiting for its reply: the reader (or a failure) fills `result` and wakes `wake`.
struct pending {
    explicit pending(const asio::any_io_executor& ex) : wake(ex) {}
    asio::steady_timer wake;
    std::string command;  // RESP, until written
    redis_result result;
    bool written = false;
    bool done = false;
};

}  // namespace

struct redis_mux::link {
    link(const asio::any_io_executor& ex, const ops::cluster_config& config,
         asio::ssl::context& tls)
        : connection(ex, config, tls), writer_wake(ex) {}

    enum class state { opening, open, broken };
    state now = state::opening;
    redis_connection connection;
    std::deque<std::shared_ptr<pending>> queue;  // every unanswered command, in order
    std::size_t unwritten = 0;                   // how many at the queue's end are not written
    asio::steady_timer writer_wake;              // the writer sleeps on it while nothing queues

    void fail(error_code ec) noexcept {
        if (now == state::broken)
            return;
        now = state::broken;
        connection.close();
        writer_wake.cancel();
        for (const auto& p : queue) {
            p->result.ec = ec;
            p->done = true;
            p->wake.cancel();
        }
        queue.clear();
        unwritten = 0;
    }

    // A command that timed out before it was written goes unsent: nothing waits for it now.
    void drop_unwritten(const std::shared_ptr<pending>& p) {
        const auto first = queue.end() - static_cast<std::ptrdiff_t>(unwritten);
        const auto at = std::find(first, queue.end(), p);
        if (at != queue.end()) {
            queue.erase(at);
            --unwritten;
        }
    }
};

namespace {

using link_ptr = std::shared_ptr<redis_mux::link>;

// Everything queued since the last write goes out in one.
asio::awaitable<void> write_loop(link_ptr l) {
    std::string writing;
    while (l->now == redis_mux::link::state::open) {
        if (l->unwritten == 0) {
            l->writer_wake.expires_at(asio::steady_timer::time_point::max());
            co_await l->writer_wake.async_wait(use_tuple);
            continue;
        }
        writing.clear();
        for (auto at = l->queue.end() - static_cast<std::ptrdiff_t>(l->unwritten);
             at != l->queue.end(); ++at) {
            writing += (*at)->command;
            (*at)->command = std::string();
            (*at)->written = true;
        }
        l->unwritten = 0;
        if (auto ec = co_await l->connection.write(writing)) {
            l->fail(ec);
            co_return;
        }
    }
}

asio::awaitable<void> read_loop(link_ptr l) {
    while (l->now == redis_mux::link::state::open) {
        reply r;
        if (auto ec = co_await l->connection.receive(r)) {
            l->fail(ec);
            co_return;
        }
        if (l->queue.empty()) {  // a reply nobody asked for: the stream cannot be trusted
            l->fail(make_error_code(boost::system::errc::protocol_error));
            co_return;
        }
        auto p = std::move(l->queue.front());
        l->queue.pop_front();
        p->result.value = std::move(r);
        p->done = true;
        p->wake.cancel();
    }
}

// Connecting is bounded by timeouts.connect; commands queued meanwhile that time out first
// are dropped unsent, and the connection goes on opening for the ones that come after.
asio::awaitable<void> open_and_serve(link_ptr l) {
    const auto ec = co_await l->connection.open();
    if (ec) {
        l->fail(ec);
        co_return;
    }
    if (l->now == redis_mux::link::state::broken)
        co_return;
    l->now = redis_mux::link::state::open;
    asio::co_spawn(l->writer_wake.get_executor(), write_loop(l), asio::detached);
    co_await read_loop(l);
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
        link_->fail(asio::error::operation_aborted);
    link_.reset();
}

std::shared_ptr<redis_mux::link> redis_mux::current() {
    if (!link_ || link_->now == link::state::broken) {
        link_ = std::make_shared<link>(executor_, config_, tls_);
        asio::co_spawn(executor_, open_and_serve(link_), asio::detached);
    }
    return link_;
}

asio::awaitable<redis_result> redis_mux::run(const std::vector<std::string_view>& args,
                                             std::chrono::milliseconds timeout) {
    auto l = current();
    auto p = std::make_shared<pending>(executor_);
    append_command(p->command, args);
    l->queue.push_back(p);
    ++l->unwritten;
    if (l->now == link::state::open)
        l->writer_wake.cancel();
    p->wake.expires_after(timeout);
    co_await p->wake.async_wait(use_tuple);
    if (!p->done) {
        p->result.ec = asio::error::timed_out;
        if (p->written)  // its reply would be taken for the next command's: the link is done
            l->fail(asio::error::timed_out);
        else
            l->drop_unwritten(p);
    }
    co_return std::move(p->result);
}

}  // namespace coalescer::cluster
