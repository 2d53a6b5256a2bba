// Opening and closing a listening socket the same way for the proxy and admin listeners.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <string>

namespace coalescer::http_rules {

// Binds and listens; throws std::runtime_error "cannot listen on <what> ADDRESS:PORT: reason".
void bind_and_listen(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                     std::uint16_t port, const std::string& what);

// Closes the acceptor on its own executor (safe from any thread).
void close_on_executor(boost::asio::ip::tcp::acceptor& acceptor);

}  // namespace coalescer::http_rules
