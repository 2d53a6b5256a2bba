#include "upstream/pool.hpp"

namespace coalescer::upstream {

std::unique_ptr<connection> pool::take() {
    const auto now = std::chrono::steady_clock::now();
    while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        // The peek costs a syscall per reuse, and nothing cheaper is sure: an upstream that
        // sends an answer nobody asked for (after a 204, past Content-Length, 150 ms later)
        // must never have it read as another tenant's.
        if (now - c->idle_since < max_idle && !c->stale()) {
            c->reused = true;
            return c;
        }
        c->close();
    }
    return nullptr;
}

void pool::give_back(std::unique_ptr<connection> c) {
    if (c->has_buffered()) {
        c->close();  // out of step: it sent more than its answer
        return;
    }
    if (idle_.size() >= max_idle_connections_) {
        idle_.front()->close();  // the oldest goes
        idle_.erase(idle_.begin());
    }
    c->idle_since = std::chrono::steady_clock::now();
    idle_.push_back(std::move(c));
}

}  // namespace coalescer::upstream
