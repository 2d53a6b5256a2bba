// Coarse deadlines for socket operations. One periodic timer per worker looks at every armed
// deadline and cancels the operations of each socket past its own. Arming or clearing one is a
// store; an Asio timer per operation (what Beast's stream timeouts use) costs a timer-queue
// insert, a cancel and a posted completion on every read and write. Deadlines fire up to one
// period late, which is far below any timeout a proxy is configured with.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <chrono>
#include <vector>

namespace coalescer::net {

class socket_deadline;

// Work the sweep runs once, at or after `due` (up to one period late). Unlinks itself when
// destroyed or cancelled; owned by the caller, on the sweep's worker thread.
class sweep_task : public boost::intrusive::list_base_hook<
                       boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
  public:
    virtual ~sweep_task() = default;
    void cancel_task() noexcept { unlink(); }  // a no-op when not scheduled
    bool task_scheduled() const noexcept { return is_linked(); }

  protected:
    virtual void on_due() = 0;

  private:
    friend class deadline_sweep;
    std::chrono::steady_clock::time_point due_{};
};

class deadline_sweep {
  public:
    using clock = std::chrono::steady_clock;
    static constexpr std::chrono::milliseconds period{50};

    explicit deadline_sweep(const boost::asio::any_io_executor& ex) : timer_(ex) {}
    deadline_sweep(const deadline_sweep&) = delete;
    deadline_sweep& operator=(const deadline_sweep&) = delete;

    void start();  // on the worker's executor; runs until the worker's loop stops
    // Runs `task` at `due` unless it is cancelled or destroyed first. No timer, no allocation.
    void schedule(sweep_task& task, clock::time_point due);

  private:
    friend class socket_deadline;
    void check();

    std::vector<socket_deadline*> deadlines_;  // every socket of this worker; unordered
    boost::intrusive::list<sweep_task, boost::intrusive::constant_time_size<false>> tasks_;
    boost::asio::steady_timer timer_;
};

// The deadline of one socket's current operation. Owned by whoever owns the socket, on the
// socket's worker thread.
class socket_deadline {
  public:
    using clock = deadline_sweep::clock;

    socket_deadline(deadline_sweep& sweep, boost::asio::ip::tcp::socket& socket);
    ~socket_deadline();
    socket_deadline(const socket_deadline&) = delete;
    socket_deadline& operator=(const socket_deadline&) = delete;

    void expires_at(clock::time_point t) noexcept {
        at_ = t;
        fired_ = false;
    }
    void expires_after(clock::duration d) noexcept { expires_at(clock::now() + d); }
    void clear() noexcept { at_ = clock::time_point::max(); }
    // Clears the deadline after an operation; one it aborted reports beast::error::timeout.
    boost::system::error_code finish(boost::system::error_code ec) noexcept;
    deadline_sweep& sweep() const noexcept { return sweep_; }
    // The deadline passed and the socket's pending operations were cancelled: an
    // operation_aborted since the last expires_at() is a timeout.
    bool fired() const noexcept { return fired_; }

  private:
    friend class deadline_sweep;
    deadline_sweep& sweep_;
    boost::asio::ip::tcp::socket& socket_;
    clock::time_point at_ = clock::time_point::max();
    bool fired_ = false;
    std::size_t index_;  // in sweep_.deadlines_
};

}  // namespace coalescer::net
