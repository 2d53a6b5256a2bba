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
    static constexpr std::size_t max_idle_connections = 64;
    static constexpr std::chrono::seconds trust_idle{1};

    // An idle connection that still looks alive, or null.
    std::unique_ptr<connection> take();
    void give_back(std::unique_ptr<connection> c);
    std::size_t idle() const noexcept { return idle_.size(); }
    void clear() noexcept { idle_.clear(); }

  private:
    std::vector<std::unique_ptr<connection>> idle_;  // most recently used last
};

}  // namespace coalescer::upstream
