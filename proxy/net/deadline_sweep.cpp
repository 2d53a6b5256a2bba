#include "net/deadline_sweep.hpp"

#include <boost/beast/core/error.hpp>

#include <iterator>

namespace coalescer::net {
using boost::system::error_code;

void deadline_sweep::start() {
    timer_.expires_after(period);
    timer_.async_wait([this](error_code ec) {
        if (ec) {
            return;  // the worker is shutting down
        }
        check();
        start();
    });
}

void deadline_sweep::schedule(sweep_task& task, clock::time_point due) {
    task.unlink();
    task.due_ = due;
    tasks_.push_back(task);
}

void deadline_sweep::check() {
    const auto now = clock::now();
    // The due tasks move to a list of their own first, and run from its front: a task's
    // on_due() may cancel, reschedule or destroy any other task (the hooks unlink themselves),
    // so no iterator is held across a call.
    decltype(tasks_) due;
    for (auto it = tasks_.begin(); it != tasks_.end();) {
        auto next = std::next(it);
        if (it->due_ <= now)
            due.splice(due.end(), tasks_, it);
        it = next;
    }
    while (!due.empty()) {
        auto& task = due.front();
        due.pop_front();
        task.on_due();
    }
    for (auto* d : deadlines_) {
        if (d->at_ <= now) {
            d->at_ = clock::time_point::max();
            d->fired_ = true;
            error_code ignored;
            d->socket_.cancel(ignored);
        }
    }
}

error_code socket_deadline::finish(error_code ec) noexcept {
    clear();
    if (ec == boost::asio::error::operation_aborted && fired_) {
        return boost::beast::error::timeout;
    }
    return ec;
}

socket_deadline::socket_deadline(deadline_sweep& sweep, boost::asio::ip::tcp::socket& socket)
    : sweep_(sweep), socket_(socket), index_(sweep.deadlines_.size()) {
    sweep_.deadlines_.push_back(this);
}

socket_deadline::~socket_deadline() {
    auto& all = sweep_.deadlines_;
    all[index_] = all.back();
    all[index_]->index_ = index_;
    all.pop_back();
}

}  // namespace coalescer::net
