#include "net/acceptor.hpp"

#include <boost/asio/post.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace coalescer::net {
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

owned_descriptor& owned_descriptor::operator=(owned_descriptor&& other) noexcept {
    if (this != &other) {
        owned_descriptor old(std::exchange(fd_, std::exchange(other.fd_, -1)));
    }
    return *this;
}

owned_descriptor::~owned_descriptor() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

void allow_accept_now(tcp::acceptor& acceptor) {
    acceptor.native_non_blocking(true);
}

namespace {

// Errors that belong to the connection being accepted, not to the listener: accept(2) asks for
// them to be treated like EAGAIN, by trying again.
bool connection_failed(int error) noexcept {
    switch (error) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
        case EPERM:  // refused by a firewall rule
            return true;
        default:
            return false;
    }
}

}  // namespace

accept_status accept_now(tcp::acceptor& acceptor, owned_descriptor& connection,
                         int& error) noexcept {
    for (;;) {
        const int fd =
            ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            connection = owned_descriptor(fd);
            const int on = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
            return accept_status::accepted;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return accept_status::drained;
        }
        if (!connection_failed(errno)) {
            error = errno;
            return accept_status::failed;
        }
    }
}

}  // namespace coalescer::net
