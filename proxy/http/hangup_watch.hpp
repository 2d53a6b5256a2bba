// Notices a client that hangs up while the proxy waits on something else (upstream bytes),
// without consuming anything it sent: a pipelined next request stays in the socket for the
// session to read.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>

namespace coalescer::http_rules {

class hangup_watch : public std::enable_shared_from_this<hangup_watch> {
  public:
    // `on_hangup` runs on the socket's executor, once, when the peer closes or resets.
    hangup_watch(boost::asio::ip::tcp::socket& socket, std::function<void()> on_hangup)
        : socket_(socket), timer_(socket.get_executor()), on_hangup_(std::move(on_hangup)) {}

    // Starts watching after `delay`, unless stopped, fired, or disabled by bytes from the
    // client. Most answers come sooner and never pay for a watch (a receive syscall each).
    void arm_after(std::chrono::milliseconds delay);
    // Ends the watch; call before the socket is read again or the watch is dropped.
    void stop();
    bool gone() const noexcept { return gone_; }

  private:
    void arm();

    boost::asio::ip::tcp::socket& socket_;  // used only until stop()
    boost::asio::steady_timer timer_;
    std::function<void()> on_hangup_;
    char probe_ = 0;
    bool scheduled_ = false;
    bool armed_ = false;
    bool stopped_ = false;
    bool gone_ = false;
    bool disabled_ = false;  // the client sent more bytes: those are the session's, not ours
};

}  // namespace coalescer::http_rules
