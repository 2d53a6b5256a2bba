#include "upstream/pool.hpp"

namespace coalescer::upstream {

std::unique_ptr<connection> pool::take(std::uint64_t tenant) {
    const auto now = std::chrono::steady_clock::now();
    for (auto i = idle_.size(); i-- > 0;) {
        auto& c = idle_[i];
        const bool expired = now - c->idle_since >= max_idle;
        if (!expired && c->tenant != tenant) {
            continue;
        }
        auto taken = std::move(c);
        idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
        // The peek costs a syscall per reuse, and nothing cheaper is sure: an upstream that
        // sends an answer nobody asked for (after a 204, past Content-Length, 150 ms later)
        // must never have it read as the next request's.
        if (!expired && !taken->stale()) {
            taken->reused = true;
            return taken;
        }
        taken->close();
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

void pool::prune() {
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(idle_, [&](std::unique_ptr<connection>& c) {
        if (now - c->idle_since < max_idle && !c->stale()) {
            return false;
        }
        c->close();
        return true;
    });
}

}  // namespace coalescer::upstream
