#include "upstream/pacer.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <stdexcept>

namespace coalescer::upstream {
namespace asio = boost::asio;

pacer::pacer(int max_concurrent, std::optional<ops::rate_limit_config> rate,
             std::vector<asio::any_io_executor> lanes)
    : max_concurrent_(max_concurrent), rate_(rate), free_(max_concurrent), lanes_(lanes.size()) {
    if (lanes.empty()) {
        throw std::invalid_argument("pacer: no worker to queue on");
    }
    for (std::size_t i = 0; i < lanes.size(); ++i) {
        lanes_[i].executor = lanes[i];
    }
    if (rate_) {
        tokens_ = rate_->burst;
        refilled_ = clock::now();
    }
}

bool pacer::take_free_slot() noexcept {
    int n = free_.load();
    while (n > 0) {
        if (free_.compare_exchange_weak(n, n - 1)) {
            return true;
        }
    }
    return false;
}

bool pacer::try_acquire() {
    if (!rate_) {
        return take_free_slot();
    }
    std::lock_guard lock(tokens_mutex_);
    if (!take_token_now()) {
        return false;
    }
    if (!take_free_slot()) {
        tokens_ += 1;
        return false;
    }
    return true;
}

asio::awaitable<bool> pacer::acquire(clock::time_point deadline, std::size_t lane,
                                     net::deadline_sweep& sweep) {
    auto& own = lanes_[lane];
    ticket waiting(*this, lane, co_await asio::this_coro::executor);
    waiting.enqueued = clock::now();
    if (own.waiters.empty()) {
        own.oldest.store(waiting.enqueued.time_since_epoch().count(), std::memory_order_relaxed);
    }
    own.waiters.push_back(waiting);
    own.waiting.fetch_add(1);  // then look at free_: see free_
    if (take_free_slot()) {
        grant_front(lane);  // the oldest waiter here, maybe this one
    }
    if (!waiting.granted) {
        sweep.schedule(waiting, deadline);
        co_await waiting.timer.async_wait(asio::as_tuple(asio::use_awaitable));
        waiting.cancel_task();
        if (!waiting.granted) {
            co_return false;
        }
    }
    // Not `co_return !rate_ || co_await ...`: GCC 12 runs the co_await whatever the left side.
    if (!rate_) {
        co_return true;
    }
    co_return co_await wait_for_token(deadline, lane);
}

void pacer::release(std::size_t lane) {
    hand_over(lane);
}

void pacer::hand_over(std::size_t from) {
    for (;;) {
        if (const auto to = next_lane(from)) {
            if (*to == from) {
                grant_front(from);
            } else {
                send_slot(*to);
            }
            return;
        }
        free_.fetch_add(1);  // then look at the waiters again: see free_
        if (!anyone_waiting() || !take_free_slot()) {
            return;
        }
    }
}

std::optional<std::size_t> pacer::next_lane(std::size_t from) const {
    std::optional<std::size_t> oldest;
    clock::rep oldest_at = never;
    for (std::size_t i = 0; i < lanes_.size(); ++i) {
        if (lanes_[i].waiting.load() == 0) {
            continue;
        }
        const auto at = lanes_[i].oldest.load(std::memory_order_relaxed);
        if (!oldest || at < oldest_at) {
            oldest = i;
            oldest_at = at;
        }
    }
    const auto& own = lanes_[from].waiters;
    if (oldest && !own.empty() &&
        own.front().enqueued.time_since_epoch().count() - oldest_at <=
            std::chrono::duration_cast<clock::duration>(lane_preference).count()) {
        return from;
    }
    return oldest;
}

bool pacer::anyone_waiting() const noexcept {
    return std::any_of(lanes_.begin(), lanes_.end(),
                       [](const lane& l) { return l.waiting.load() != 0; });
}

void pacer::grant_front(std::size_t lane) {
    auto& l = lanes_[lane];
    ticket& next = l.waiters.front();
    dequeue(l, next);
    next.granted = true;
    next.timer.cancel();
}

void pacer::send_slot(std::size_t to) {
    // Slots sent while the lane has not yet run the last post ride along with it.
    if (lanes_[to].incoming.fetch_add(1) == 0) {
        asio::post(lanes_[to].executor, [this, to] { receive_slots(to); });
    }
}

void pacer::receive_slots(std::size_t lane) {
    for (int n = lanes_[lane].incoming.exchange(0); n > 0; --n) {
        if (lanes_[lane].waiters.empty()) {
            hand_over(lane);  // they gave up meanwhile
        } else {
            grant_front(lane);
        }
    }
}

void pacer::dequeue(lane& l, ticket& t) noexcept {
    t.queued_hook.unlink();
    l.oldest.store(
        l.waiters.empty() ? never : l.waiters.front().enqueued.time_since_epoch().count(),
        std::memory_order_relaxed);
    l.waiting.fetch_sub(1);
}

void pacer::ticket::on_due() {
    if (!queued_hook.is_linked()) {
        return;  // granted: resumes once its timer's cancellation is delivered
    }
    owner_.dequeue(owner_.lanes_[lane_], *this);
    timer.cancel();
}

pacer::ticket::~ticket() {
    if (queued_hook.is_linked()) {
        owner_.dequeue(owner_.lanes_[lane_], *this);  // its worker's loop is being destroyed
    }
}

std::size_t pacer::queued() const noexcept {
    std::size_t n = 0;
    for (const auto& l : lanes_) {
        n += l.waiting.load(std::memory_order_relaxed);
    }
    return n;
}

int pacer::in_use() const noexcept {
    return max_concurrent_ - free_.load(std::memory_order_relaxed);
}

bool pacer::take_token_now() {
    const auto now = clock::now();
    if (reserve_token(now) > now) {
        tokens_ += 1;  // not now after all: give the token back, acquire() will wait for it
        return false;
    }
    return true;
}

asio::awaitable<bool> pacer::wait_for_token(clock::time_point deadline, std::size_t lane) {
    const auto start = [&] {
        std::lock_guard lock(tokens_mutex_);
        return reserve_token(clock::now());
    }();
    if (start > deadline) {
        release(lane);
        co_return false;
    }
    if (start > clock::now()) {
        asio::steady_timer wait(co_await asio::this_coro::executor, start);
        co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return true;
}

pacer::clock::time_point pacer::reserve_token(clock::time_point now) {
    const double rate = rate_->requests_per_second;
    tokens_ = std::min<double>(
        rate_->burst, tokens_ + std::chrono::duration<double>(now - refilled_).count() * rate);
    refilled_ = now;
    tokens_ -= 1;  // may go negative: later callers queue behind the debt
    if (tokens_ >= 0) {
        return now;
    }
    return now + std::chrono::duration_cast<clock::duration>(
                     std::chrono::duration<double>(-tokens_ / rate));
}

}  // namespace coalescer::upstream
