// Idle keep-alive connections to one upstream, owned by one worker thread (no locks: a
// worker's flights only ever use its own pool).
#pragma once

#include "upstream/connection.hpp"

#include <chrono>
#include <cstdint>
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

    // An idle connection that last carried `tenant`'s requests, is still open and has sent
    // nothing since its last answer (checked with a non-blocking peek, every time), or null.
    // Connections are never shared between tenants: whatever an upstream sends out of step
    // (bytes that arrive after our peek) can only reach the tenant whose call it follows.
    std::unique_ptr<connection> take(std::uint64_t tenant);
    void give_back(std::unique_ptr<connection> c);
    // Closes the idle connections the upstream closed, sent bytes on, or left idle too long:
    // called every few hundred milliseconds, so such a connection is let go before any request
    // could find it (and its descriptor with it).
    void prune();
    std::size_t idle() const noexcept { return idle_.size(); }
    void clear() noexcept { idle_.clear(); }

  private:
    std::size_t max_idle_connections_;
    std::vector<std::unique_ptr<connection>> idle_;  // most recently used last
};

}  // namespace coalescer::upstream
