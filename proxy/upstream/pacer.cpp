#include "upstream/pacer.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>

namespace coalescer::upstream {
namespace asio = boost::asio;

pacer::pacer(int max_concurrent, std::optional<ops::rate_limit_config> rate)
    : max_concurrent_(max_concurrent), rate_(rate) {
    if (rate_) {
        tokens_ = rate_->burst;
        refilled_ = clock::now();
    }
}

bool pacer::try_acquire() {
    std::lock_guard lock(mutex_);
    if (in_use_ >= max_concurrent_ || !queue_.empty()) {
        return false;
    }
    if (rate_) {
        const auto now = clock::now();
        const auto start = reserve_token(now);
        if (start > now) {
            tokens_ += 1;  // not now after all: give the token back, acquire() will wait for it
            return false;
        }
    }
    ++in_use_;
    return true;
}

asio::awaitable<bool> pacer::acquire(clock::time_point deadline) {
    std::shared_ptr<ticket> waiting;
    {
        std::lock_guard lock(mutex_);
        if (in_use_ < max_concurrent_ && queue_.empty()) {
            ++in_use_;
        } else {
            waiting = std::make_shared<ticket>(co_await asio::this_coro::executor);
            queue_.push_back(waiting);
        }
    }
    if (waiting) {
        waiting->timer.expires_at(deadline);
        co_await waiting->timer.async_wait(asio::as_tuple(asio::use_awaitable));
        std::lock_guard lock(mutex_);
        if (!waiting->granted) {
            std::erase(queue_, waiting);
            co_return false;
        }
    }
    if (rate_) {
        const auto start = [&] {
            std::lock_guard lock(mutex_);
            return reserve_token(clock::now());
        }();
        if (start > deadline) {
            release();
            co_return false;
        }
        if (start > clock::now()) {
            asio::steady_timer wait(co_await asio::this_coro::executor, start);
            co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
    co_return true;
}

void pacer::release() {
    std::shared_ptr<ticket> next;
    {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) {
            --in_use_;
            return;
        }
        next = queue_.front();  // the slot passes straight to the oldest waiter
        queue_.pop_front();
        next->granted = true;
    }
    asio::post(next->executor, [next] { next->timer.cancel(); });
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

std::size_t pacer::queued() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
}

int pacer::in_use() const {
    std::lock_guard lock(mutex_);
    return in_use_;
}

}  // namespace coalescer::upstream
