#include "net/hangup_watch.hpp"

namespace coalescer::net {
namespace asio = boost::asio;
using boost::system::error_code;

void hangup_watch::arm_after(std::chrono::milliseconds delay) {
    if (task_scheduled() || armed_ || stopped_ || gone_ || disabled_) {
        return;
    }
    sweep_.schedule(*this, deadline_sweep::clock::now() + delay);
}

void hangup_watch::on_due() {
    if (armed_ || stopped_ || gone_ || disabled_) {
        return;
    }
    armed_ = true;
    // A peeking receive, not async_wait(wait_read): Asio queues a receive on the descriptor's
    // existing epoll registration, while every async_wait re-registers it (epoll_ctl).
    auto on_probe = [self = shared_from_this()](error_code ec, std::size_t n) {
        self->armed_ = false;
        if (ec == asio::error::operation_aborted || self->stopped_) {
            return;
        }
        if (!ec && n > 0) {
            self->disabled_ = true;  // pipelining, or TLS records: stop watching
            return;
        }
        self->gone_ = true;  // eof, reset
        self->on_hangup_();
    };
    socket_.async_receive(asio::buffer(&probe_, 1), asio::socket_base::message_peek,
                          std::move(on_probe));
}

void hangup_watch::stop() noexcept {
    stopped_ = true;
    cancel_task();
}

}  // namespace coalescer::net
