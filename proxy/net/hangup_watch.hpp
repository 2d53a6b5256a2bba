// Notices a client that hangs up while the proxy waits on something else (upstream bytes),
// without consuming anything it sent: a pipelined next request stays in the socket for the
// session to read.
#pragma once

#include "net/deadline_sweep.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <functional>
#include <memory>

namespace coalescer::net {

class hangup_watch : public std::enable_shared_from_this<hangup_watch>, private sweep_task {
  public:
    // `on_hangup` runs on the socket's worker, once, when the peer closes or resets before
    // stop(). `sweep` is that worker's.
    hangup_watch(deadline_sweep& sweep, boost::asio::ip::tcp::socket& socket,
                 std::function<void()> on_hangup)
        : sweep_(sweep), socket_(socket), on_hangup_(std::move(on_hangup)) {}

    // Starts watching after `delay`, unless stopped, fired, or disabled by bytes from the
    // client. Most answers come sooner and never pay for a watch (a receive syscall each).
    void arm_after(std::chrono::milliseconds delay);
    // Ends the watch. A peek already queued stays queued: it completes harmlessly when the
    // client's next bytes or its close arrive, which costs nothing now (cancelling it would
    // post a completion per client at the busiest moment, a flight's fan-out).
    void stop() noexcept;
    bool gone() const noexcept { return gone_; }

  private:
    void on_due() override;

    deadline_sweep& sweep_;
    boost::asio::ip::tcp::socket& socket_;  // used only until stop()
    std::function<void()> on_hangup_;
    char probe_ = 0;
    bool armed_ = false;
    bool stopped_ = false;
    bool gone_ = false;
    bool disabled_ = false;  // the client sent more bytes: those are the session's, not ours
};

}  // namespace coalescer::net
