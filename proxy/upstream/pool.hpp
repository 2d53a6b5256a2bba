// Idle keep-alive connections to one upstream, owned by one worker thread (no locks: a
// worker's flights only ever use its own pool).
#pragma once

#include "upstream/connection.hpp"

#include <chrono>
#include <memory>
#include <vector>

namespace coalescer::upstream {

class pool {
  public:
    // Idle connections older than this are closed instead of reused: below the usual provider
    // keep-alive timeouts, so we rarely reuse a socket the other side is about to close.
    static constexpr std::chrono::seconds max_idle{30};

    // Keeps up to `max_idle_connections`: the upstream's max_concurrent, so that a load at the
    // admission limit, all on one worker, reuses every connection instead of closing some after
    // each response and opening new ones for the next requests.
    explicit pool(std::size_t max_idle_connections) : max_idle_connections_(max_idle_connections) {}

    // An idle connection that is still open and has sent nothing since its last answer (checked
    // with a non-blocking peek, every time), or null.
    std::unique_ptr<connection> take();
    void give_back(std::unique_ptr<connection> c);
    std::size_t idle() const noexcept { return idle_.size(); }
    void clear() noexcept { idle_.clear(); }

  private:
    std::size_t max_idle_connections_;
    std::vector<std::unique_ptr<connection>> idle_;  // most recently used last
};

}  // namespace coalescer::upstream
