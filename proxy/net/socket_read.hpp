// Reads that do not try the socket when it is known to be empty.
//
// Before it waits for epoll, Asio always tries a receive first ("speculative"), and it stops
// trying only after a receive that saw the end of the stream. On a keep-alive connection that
// try fails on nearly every request: the next request (or the upstream's answer) cannot be there
// yet when the previous exchange has just ended. That was one wasted recv() per read, 1.6 per
// proxied request. A read_attempt keeps Asio's "try first" flag false after a receive that
// emptied the socket (fewer bytes than asked for), as nginx does with its ready flag, so the
// next read goes straight to epoll; any new data sets the flag again. Like nginx, it watches
// for EPOLLRDHUP (added to the socket's registration on its first read) and leaves the flag
// alone once the reactor has seen the stream's end or urgent data: a FIN or reset that came
// with the last bytes, or bytes queued behind an urgent mark, bring no edge of their own.
//
//     auto attempt = net::read_attempt::now(socket, buffer);
//     if (!attempt.done()) {
//         const auto got = co_await socket.async_read_some(buffer, use_tuple);
//         attempt.waited(socket, got);
//     }
//     auto [ec, n] = attempt.result();
//
// Not a coroutine of its own: a nested coroutine per read cost more than the recv it saves.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <tuple>

namespace coalescer::net {

// Cancels a read still queued on the socket from an earlier owner (a hang-up watch's peek that
// outlived its watch). Queued ahead of a new read, it would take the peer's close for itself:
// the reactor stops at a receive that sees the end of the stream, leaving the reads behind it
// waiting for an edge that never comes. Costs nothing when nothing is queued.
void drop_stale_reads(boost::asio::ip::tcp::socket& socket) noexcept;

class read_attempt {
  public:
    using outcome = std::tuple<boost::system::error_code, std::size_t>;

    // Receives what the socket holds now, unless Asio knows it holds nothing. Runs on the
    // socket's worker; the caller starts async_read_some right after a !done() attempt, with
    // no suspension in between.
    static read_attempt now(boost::asio::ip::tcp::socket& socket,
                            boost::asio::mutable_buffer buffer) noexcept;
    bool done() const noexcept { return done_; }
    // Records the awaited read's outcome; called as the coroutine resumes from it.
    void waited(boost::asio::ip::tcp::socket& socket, outcome got) noexcept;
    outcome result() const noexcept { return {ec_, bytes_}; }

  private:
    void* state_ = nullptr;  // the socket's reactor entry, if the flag may be cleared after a wait
    std::size_t asked_ = 0;
    std::size_t bytes_ = 0;
    boost::system::error_code ec_;
    bool done_ = false;
};

}  // namespace coalescer::net
