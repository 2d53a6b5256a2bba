// Per-upstream admission: at most max_concurrent calls at once, the rest wait in FIFO order
// for up to queue_timeout; an optional token bucket spaces call starts. Shared by every
// worker thread; a flight takes one slot however many subscribers it has.
#pragma once

#include "ops/config.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

namespace coalescer::upstream {

class pacer {
  public:
    using clock = std::chrono::steady_clock;

    pacer(int max_concurrent, std::optional<ops::rate_limit_config> rate);

    // Takes a free slot (and a token) without waiting, when there is one: the common case costs
    // no coroutine frame and no timer.
    bool try_acquire();
    // Waits for a slot until `deadline`; false when the deadline passed first (no slot held).
    boost::asio::awaitable<bool> acquire(clock::time_point deadline);
    void release();

    std::size_t queued() const;
    int in_use() const;

  private:
    struct ticket {
        explicit ticket(boost::asio::any_io_executor ex) : executor(ex), timer(ex) {}
        boost::asio::any_io_executor executor;
        boost::asio::steady_timer timer;
        bool granted = false;  // under mutex_
    };
    // The start time a new call may have under the token bucket (reserves that token).
    clock::time_point reserve_token(clock::time_point now);

    const int max_concurrent_;
    const std::optional<ops::rate_limit_config> rate_;
    mutable std::mutex mutex_;
    int in_use_ = 0;
    std::deque<std::shared_ptr<ticket>> queue_;
    double tokens_ = 0;
    clock::time_point refilled_{};
};

// A slot that is given back however the holder leaves.
class pacer_slot {
  public:
    pacer_slot() = default;
    explicit pacer_slot(pacer& p) : pacer_(&p) {}
    pacer_slot(pacer_slot&& other) noexcept : pacer_(std::exchange(other.pacer_, nullptr)) {}
    pacer_slot& operator=(pacer_slot&& other) noexcept {
        reset();
        pacer_ = std::exchange(other.pacer_, nullptr);
        return *this;
    }
    ~pacer_slot() { reset(); }
    void reset() {
        if (pacer_ != nullptr) {
            std::exchange(pacer_, nullptr)->release();
        }
    }

  private:
    pacer* pacer_ = nullptr;
};

}  // namespace coalescer::upstream
