#include "net/socket_read.hpp"

#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>

// The flag and the events are private members of Asio's epoll reactor: this file is written
// against Boost 1.81's layout and must be checked again on any other version.
static_assert(BOOST_VERSION == 108100, "socket_read.cpp reaches into Boost 1.81's epoll reactor");

namespace coalescer::net {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

using reactor = asio::detail::epoll_reactor;
using state_type = reactor::descriptor_state;
using flags_member = bool (state_type::*)[reactor::max_ops];
using queues_member =
    asio::detail::op_queue<asio::detail::reactor_op> (state_type::*)[reactor::max_ops];
using registered_member = std::uint32_t state_type::*;
using reactor_member = reactor* state_type::*;
using epoll_fd_member = int reactor::*;
using ready_member = unsigned int asio::detail::scheduler_operation::*;

// Access to private members of the reactor through explicit instantiations, the one place C++
// lets a private member be named from outside.
struct speculative_tag {
    friend flags_member member(speculative_tag);
};
struct queues_tag {
    friend queues_member member(queues_tag);
};
struct registered_tag {
    friend registered_member member(registered_tag);
};
struct reactor_tag {
    friend reactor_member member(reactor_tag);
};
struct epoll_fd_tag {
    friend epoll_fd_member member(epoll_fd_tag);
};
struct ready_tag {
    friend ready_member member(ready_tag);
};
template <class Tag, typename Member, Member Pointer>
struct expose {
    friend Member member(Tag) { return Pointer; }
};
template struct expose<speculative_tag, flags_member, &state_type::try_speculative_>;
template struct expose<queues_tag, queues_member, &state_type::op_queue_>;
template struct expose<registered_tag, registered_member, &state_type::registered_events_>;
template struct expose<reactor_tag, reactor_member, &state_type::reactor_>;
template struct expose<epoll_fd_tag, epoll_fd_member, &reactor::epoll_fd_>;
template struct expose<ready_tag, ready_member, &asio::detail::scheduler_operation::task_result_>;

// basic_socket keeps its implementation protected: a derived class may name it.
struct socket_access : asio::ip::tcp::socket {
    static auto implementation() { return &socket_access::impl_; }
};

state_type* state_of(asio::ip::tcp::socket& socket) noexcept {
    return (socket.*socket_access::implementation()).get_implementation().reactor_data_;
}

// Whether Asio will try a receive before waiting.
bool& try_first(state_type& state) noexcept {
    return (state.*member(speculative_tag{}))[reactor::read_op];
}

// Whether another read (a hang-up watch's peek) waits on the socket: a receive queued behind
// it completes through the scheduler, not at once, and what it saw may be stale by then.
bool others_reading(state_type& state) noexcept {
    return !(state.*member(queues_tag{}))[reactor::read_op].empty();
}

// A receive that returns fewer bytes than asked for has emptied the socket of data, but not of
// an end: a FIN or a reset that came with the last bytes is taken in by the same receive, and
// the next one returns it at once (0, or the error) while no new edge will ever announce it.
// Asio registers sockets without EPOLLRDHUP, so a FIN alone would not show in the events;
// this adds it, once per socket (an epoll_ctl), and says whether the socket has it.
bool reports_ends(state_type& state, int fd) noexcept {
    auto& registered = state.*member(registered_tag{});
    if ((registered & EPOLLRDHUP) != 0) {
        return true;
    }
    if (registered == 0) {
        return false;  // not in epoll at all (Asio completes such reads its own way)
    }
    epoll_event ev{};
    ev.events = registered | EPOLLRDHUP;
    ev.data.ptr = &state;
    const int epoll_fd = (state.*member(reactor_tag{}))->*member(epoll_fd_tag{});
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        return false;
    }
    registered = ev.events;
    return true;
}

// Whether the events the reactor last took in for this socket say that a short receive may
// have left something behind: the stream's end (a FIN or reset taken in with the last bytes),
// or urgent data (a receive stops short at the urgent mark, with bytes still queued behind it).
// Both stay in the polled state until read past. The reactor keeps the events in the
// descriptor's operation base (a private base: only a C-style cast may name it). Anything
// taken in later comes with a new edge, which sets the flag again.
bool more_may_wait(state_type& state) noexcept {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-cstyle-cast): the base is private
    auto& base = (asio::detail::scheduler_operation&)state;
    return ((base.*member(ready_tag{})) & (EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) != 0;
}

// Whether a receive of fewer bytes than asked may stand for "nothing more will come without
// a new edge", so that the flag may be cleared.
bool drained(state_type& state) noexcept {
    return (state.*member(registered_tag{}) & EPOLLRDHUP) != 0 && !more_may_wait(state);
}

}  // namespace

void drop_stale_reads(asio::ip::tcp::socket& socket) noexcept {
    auto* const state = state_of(socket);
    if (state != nullptr && others_reading(*state)) {
        error_code ignored;
        socket.cancel(ignored);
    }
}

read_attempt read_attempt::now(asio::ip::tcp::socket& socket,
                               asio::mutable_buffer buffer) noexcept {
    read_attempt a;
    a.asked_ = buffer.size();
    auto* const state = state_of(socket);
    if (state == nullptr || buffer.size() == 0 || others_reading(*state)) {
        return a;  // Asio's own read, untouched
    }
    if (!reports_ends(*state, socket.native_handle())) {
        return a;
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
        if (static_cast<std::size_t>(n) < buffer.size() && drained(*state)) {
            try_first(*state) = false;
        }
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
    if (state != nullptr && !ec_ && bytes_ < asked_ && state_of(socket) == state &&
        drained(*state)) {
        try_first(*state) = false;
    }
}

}  // namespace coalescer::net
