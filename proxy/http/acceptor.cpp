#include "http/acceptor.hpp"

#include <boost/asio/post.hpp>

#include <stdexcept>

namespace coalescer::http_rules {
namespace asio = boost::asio;
using asio::ip::tcp;

void bind_and_listen(tcp::acceptor& acceptor, const std::string& address, std::uint16_t port,
                     const std::string& what) {
    boost::system::error_code ec;
    const auto ip = asio::ip::make_address(address == "localhost" ? "127.0.0.1" : address, ec);
    if (ec) {
        throw std::runtime_error(what + " address " + address + ": not an IP address");
    }
    const tcp::endpoint endpoint(ip, port);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint, ec);
    if (!ec) {
        acceptor.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        throw std::runtime_error("cannot listen on " + (what.empty() ? "" : what + " ") + address +
                                 ":" + std::to_string(port) + ": " + ec.message());
    }
}

void close_on_executor(tcp::acceptor& acceptor) {
    asio::post(acceptor.get_executor(), [&acceptor] {
        boost::system::error_code ignored;
        acceptor.close(ignored);
    });
}

}  // namespace coalescer::http_rules
