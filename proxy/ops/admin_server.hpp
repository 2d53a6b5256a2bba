// The admin listener, on its own port: /healthz (alive), /readyz (503 while starting or
// draining), /metrics (Prometheus text). Runs on one worker's event loop.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <string>

namespace coalescer::ops {

struct admin_handlers {
    std::function<bool()> ready;
    std::function<std::string()> metrics;
};

class admin_server {
  public:
    // Binds at once; throws with a clear message when the port is taken.
    admin_server(boost::asio::io_context& io, const std::string& address, std::uint16_t port,
                 admin_handlers handlers);
    std::uint16_t port() const;
    void start();
    void stop();

  private:
    boost::asio::awaitable<void> accept_loop();
    boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

    boost::asio::ip::tcp::acceptor acceptor_;
    admin_handlers handlers_;
};

}  // namespace coalescer::ops
