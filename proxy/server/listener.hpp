// Accepts client connections on one port and hands each to a worker, round-robin; each
// connection then lives on that worker's thread alone, registered with that worker's reactor.
// Survives accept errors (out of descriptors: pause, never spin, warn at most every 10 s) and
// enforces max_connections.
#pragma once

#include "net/acceptor.hpp"
#include "server/proxy_context.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace coalescer::server {

class listener {
  public:
    // Binds at once (start-up errors throw with a clear message).
    listener(boost::asio::io_context& io, const ops::listen_config& cfg,
             std::vector<std::unique_ptr<worker>>& workers, proxy_context& context);
    std::uint16_t port() const;
    void start();
    void stop();  // stops accepting; open connections carry on

  private:
    boost::asio::awaitable<void> accept_loop();
    // Accepts up to a batch of queued connections; `accepted` when more may be queued.
    net::accept_status accept_some();
    void warn_accept_failed(int error);
    void refuse(net::owned_descriptor fd);  // 503 and close: over max_connections
    void hand_over(net::owned_descriptor fd, worker& target);
    void adopt(net::owned_descriptor fd, worker& target);  // on the target's thread
    void start_session(boost::asio::ip::tcp::socket socket, worker& target);

    boost::asio::io_context& home_;  // the acceptor's loop
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::ip::tcp protocol_;  // of the listening address (v4 or v6)
    std::vector<std::unique_ptr<worker>>& workers_;
    proxy_context& context_;
    std::unique_ptr<boost::asio::ssl::context> tls_;
    std::size_t next_worker_ = 0;
    // Accepted and posted to another worker, not yet counted by their session: part of
    // max_connections, so that a burst accepted in one turn cannot pass the limit.
    std::atomic<std::int64_t> in_transit_{0};
    std::chrono::steady_clock::time_point last_accept_warning_{};
    std::uint64_t accept_failures_ = 0;  // since the last warning
};

// Server TLS context for listen.tls: TLS ≥ 1.2, no renegotiation. Throws on unreadable files.
std::unique_ptr<boost::asio::ssl::context> make_server_tls_context(const ops::tls_files& files);

}  // namespace coalescer::server
