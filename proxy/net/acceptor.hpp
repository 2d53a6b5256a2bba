// Opening and closing a listening socket the same way for the proxy and admin listeners, and
// accepting connections without registering them with the accepting thread's event loop.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <string>
#include <utility>

namespace coalescer::net {

// Binds and listens; throws std::runtime_error "cannot listen on <what> ADDRESS:PORT: reason".
void bind_and_listen(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                     std::uint16_t port, const std::string& what);

// Closes the acceptor on its own executor (safe from any thread).
void close_on_executor(boost::asio::ip::tcp::acceptor& acceptor);

// A connected descriptor that no socket object owns yet: closed unless disowned.
class owned_descriptor {
  public:
    explicit owned_descriptor(int fd = -1) noexcept : fd_(fd) {}
    owned_descriptor(owned_descriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    owned_descriptor& operator=(owned_descriptor&& other) noexcept;
    owned_descriptor(const owned_descriptor&) = delete;
    owned_descriptor& operator=(const owned_descriptor&) = delete;
    ~owned_descriptor();
    int get() const noexcept { return fd_; }
    void disown() noexcept { fd_ = -1; }

  private:
    int fd_;
};

enum class accept_status {
    accepted,  // `connection` holds it
    drained,   // nothing is queued
    failed,    // out of descriptors or memory: `error` is the errno
};

// Accepts one connection queued on a listening socket that accept_now may use (see
// allow_accept_now), with TCP_NODELAY set. The descriptor is not registered with any event
// loop: whichever worker takes the connection does that, on its own thread. A connection that
// failed while it was queued is skipped, as accept(2) asks.
accept_status accept_now(boost::asio::ip::tcp::acceptor& acceptor, owned_descriptor& connection,
                         int& error) noexcept;
// Makes the listening socket non-blocking, so that accept_now never waits.
void allow_accept_now(boost::asio::ip::tcp::acceptor& acceptor);

}  // namespace coalescer::net
