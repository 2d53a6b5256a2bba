#include "upstream/pool.hpp"

namespace coalescer::upstream {

std::unique_ptr<connection> pool::take() {
    const auto now = std::chrono::steady_clock::now();
    while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        const auto idle_for = now - c->idle_since;
        // Probing costs a syscall per request; a connection idle for less than a second is
        // trusted (a close that raced us is retried once on a fresh connection anyway).
        if (idle_for < max_idle && !c->stale(idle_for >= trust_idle)) {
            c->reused = true;
            return c;
        }
        c->close();
    }
    return nullptr;
}

void pool::give_back(std::unique_ptr<connection> c) {
    if (idle_.size() >= max_idle_connections_) {
        idle_.front()->close();  // the oldest goes
        idle_.erase(idle_.begin());
    }
    c->idle_since = std::chrono::steady_clock::now();
    idle_.push_back(std::move(c));
}

}  // namespace coalescer::upstream
