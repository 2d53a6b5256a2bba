// Per-upstream admission: at most max_concurrent calls at once, the rest wait in FIFO order
// for up to queue_timeout; an optional token bucket spaces call starts. Shared by every
// worker thread; a flight takes one slot however many subscribers it has.
//
// Waiters queue on their own worker (a lane) and only that worker's thread touches its queue:
// no lock. A slot freed on a worker goes to that worker's oldest waiter, unless another
// worker's oldest has waited longer by more than `lane_preference`; then the slot is posted
// there. One queue for all workers, under one mutex, cost 11 % more CPU per request when
// every request queued (wrk -c256 against max_concurrent 64): lock hand-offs, wake-ups of the
// other thread, and memory freed on a thread other than the one that allocated it.
#pragma once

#include "net/deadline_sweep.hpp"
#include "ops/config.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace coalescer::upstream {

class pacer {
  public:
    using clock = std::chrono::steady_clock;
    // How much longer than a waiter on the releasing worker a waiter elsewhere must have waited
    // to be served first. Far below what a user could notice; long enough that the scheduler
    // briefly favouring one worker does not send every slot across threads.
    static constexpr std::chrono::milliseconds lane_preference{5};

    // One lane per worker: `lanes[i]` is worker i's executor.
    pacer(int max_concurrent, std::optional<ops::rate_limit_config> rate,
          std::vector<boost::asio::any_io_executor> lanes);
    pacer(const pacer&) = delete;
    pacer& operator=(const pacer&) = delete;

    // Takes a free slot (and a token) without waiting: no coroutine frame, no timer.
    bool try_acquire();
    // On worker `lane`, whose `sweep` enforces the deadline (up to one sweep period late):
    // waits for a slot; false when the deadline passed first (no slot held).
    boost::asio::awaitable<bool> acquire(clock::time_point deadline, std::size_t lane,
                                         net::deadline_sweep& sweep);
    // On worker `lane`: gives a slot back, to a waiter if there is one.
    void release(std::size_t lane);

    std::size_t queued() const noexcept;
    int in_use() const noexcept;

  private:
    static constexpr clock::rep never = clock::time_point::max().time_since_epoch().count();
    using queue_hook = boost::intrusive::list_member_hook<
        boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

    // A waiter in acquire()'s frame. Resumed exactly once, on its worker, by whoever takes it
    // off the queue there: a slot (granted) or the sweep at the deadline (not granted). Its
    // timer never expires by itself; cancelling it is the wake-up.
    class ticket : public net::sweep_task {
      public:
        ticket(pacer& owner, std::size_t lane, const boost::asio::any_io_executor& ex)
            : timer(ex, clock::time_point::max()), owner_(owner), lane_(lane) {}
        ~ticket() override;
        ticket(const ticket&) = delete;
        ticket& operator=(const ticket&) = delete;

        queue_hook queued_hook;
        clock::time_point enqueued{};
        boost::asio::steady_timer timer;
        bool granted = false;

      protected:
        void on_due() override;

      private:
        pacer& owner_;
        std::size_t lane_;
    };
    using ticket_queue = boost::intrusive::list<
        ticket, boost::intrusive::member_hook<ticket, queue_hook, &ticket::queued_hook>,
        boost::intrusive::constant_time_size<false>>;

    // A worker's waiters. The queue is its thread's alone; the counters are read by others.
    struct alignas(64) lane {
        boost::asio::any_io_executor executor;
        ticket_queue waiters;
        std::atomic<std::size_t> waiting{0};
        std::atomic<clock::rep> oldest{never};  // when the front waiter queued
        std::atomic<int> incoming{0};           // slots sent by other lanes, not yet received
    };
    bool take_free_slot() noexcept;
    // On `from`'s thread, holding a slot nobody there waits for less than others: passes it on.
    void hand_over(std::size_t from);
    // The lane whose front waiter the slot freed on `from` goes to, or none.
    std::optional<std::size_t> next_lane(std::size_t from) const;
    bool anyone_waiting() const noexcept;
    void grant_front(std::size_t lane);         // on that lane's thread
    void send_slot(std::size_t to);             // from another thread
    void receive_slots(std::size_t lane);       // on that lane's thread
    void dequeue(lane& l, ticket& t) noexcept;  // on the lane's thread
    bool take_token_now();                      // under tokens_mutex_
    // The start time a new call may have under the token bucket (reserves that token).
    clock::time_point reserve_token(clock::time_point now);  // under tokens_mutex_
    boost::asio::awaitable<bool> wait_for_token(clock::time_point deadline, std::size_t lane);

    const int max_concurrent_;
    const std::optional<ops::rate_limit_config> rate_;
    // Slots no call holds and no waiter is being handed. A lane increments `waiting` before it
    // looks here, a release returns a slot here before it looks at `waiting`: sequentially
    // consistent, so one of the two always sees the other and no slot sits idle beside a waiter.
    std::atomic<int> free_;
    std::vector<lane> lanes_;
    std::mutex tokens_mutex_;
    double tokens_ = 0;  // under tokens_mutex_
    clock::time_point refilled_{};
};

// A slot that is given back however the holder leaves, on the worker that took it.
class pacer_slot {
  public:
    pacer_slot() = default;
    pacer_slot(pacer& p, std::size_t lane) : pacer_(&p), lane_(lane) {}
    pacer_slot(pacer_slot&& other) noexcept
        : pacer_(std::exchange(other.pacer_, nullptr)), lane_(other.lane_) {}
    pacer_slot& operator=(pacer_slot&& other) noexcept {
        reset();
        pacer_ = std::exchange(other.pacer_, nullptr);
        lane_ = other.lane_;
        return *this;
    }
    ~pacer_slot() { reset(); }
    void reset() {
        if (pacer_ != nullptr) {
            std::exchange(pacer_, nullptr)->release(lane_);
        }
    }

  private:
    pacer* pacer_ = nullptr;
    std::size_t lane_ = 0;
};

}  // namespace coalescer::upstream
