#include "http/socket_read.hpp"

#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>

#include <sys/socket.h>

#include <cerrno>

// The flag is a private member of Asio's epoll reactor: this file is written against Boost
// 1.81's layout and must be checked again on any other version.
static_assert(BOOST_VERSION == 108100, "socket_read.cpp reaches into Boost 1.81's epoll reactor");

namespace coalescer::http_rules {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

using reactor = asio::detail::epoll_reactor;
using flags_member = bool (reactor::descriptor_state::*)[reactor::max_ops];
using queues_member = asio::detail::op_queue<asio::detail::reactor_op> (
    reactor::descriptor_state::*)[reactor::max_ops];

// Access to two private members of reactor::descriptor_state through explicit instantiations,
// the one place C++ lets a private member be named from outside.
struct speculative_tag {
    friend flags_member member(speculative_tag);
};
struct queues_tag {
    friend queues_member member(queues_tag);
};
template <class Tag, typename Member, Member Pointer>
struct expose {
    friend Member member(Tag) { return Pointer; }
};
template struct expose<speculative_tag, flags_member, &reactor::descriptor_state::try_speculative_>;
template struct expose<queues_tag, queues_member, &reactor::descriptor_state::op_queue_>;

// basic_socket keeps its implementation protected: a derived class may name it.
struct socket_access : asio::ip::tcp::socket {
    static auto implementation() { return &socket_access::impl_; }
};

reactor::descriptor_state* state_of(asio::ip::tcp::socket& socket) noexcept {
    return (socket.*socket_access::implementation()).get_implementation().reactor_data_;
}

// Whether Asio will try a receive before waiting.
bool& try_first(reactor::descriptor_state& state) noexcept {
    return (state.*member(speculative_tag{}))[reactor::read_op];
}

// Whether another read (a hang-up watch's peek) waits on the socket: a receive queued behind
// it completes through the scheduler, not at once, and what it saw may be stale by then.
bool others_reading(reactor::descriptor_state& state) noexcept {
    return !(state.*member(queues_tag{}))[reactor::read_op].empty();
}

}  // namespace

read_attempt read_attempt::now(asio::ip::tcp::socket& socket,
                               asio::mutable_buffer buffer) noexcept {
    read_attempt a;
    a.asked_ = buffer.size();
    auto* const state = state_of(socket);
    if (state == nullptr || buffer.size() == 0 || others_reading(*state)) {
        return a;  // Asio's own read, untouched
    }
    a.state_ = state;
    if (!try_first(*state)) {
        return a;  // known empty: Asio will queue the read without trying it
    }
    // The receive and the flag it decides happen with no suspension in between, so the reactor
    // cannot take in new data between the two: an edge that comes later sets the flag again.
    const auto n =
        ::recv(socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
        try_first(*state) = static_cast<std::size_t>(n) == buffer.size();
        a.bytes_ = static_cast<std::size_t>(n);
        a.done_ = true;
    } else if (n == 0) {
        a.ec_ = asio::error::eof;
        a.done_ = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        try_first(*state) = false;
    } else if (errno == EINTR) {
        a.state_ = nullptr;  // Asio tries first and may complete later: leave its flag alone
    } else {
        a.ec_.assign(errno, boost::system::system_category());
        a.done_ = true;
    }
    return a;
}

void read_attempt::waited(asio::ip::tcp::socket& socket, outcome got) noexcept {
    std::tie(ec_, bytes_) = got;
    done_ = true;
    // The reactor performed this read (the flag was false and it was the only read queued, so
    // Asio did not try it first) and resumed the coroutine from there at once: nothing new can
    // have been taken in since.
    auto* const state = static_cast<reactor::descriptor_state*>(state_);
    if (state != nullptr && !ec_ && bytes_ < asked_ && state_of(socket) == state) {
        try_first(*state) = false;
    }
}

}  // namespace coalescer::http_rules
