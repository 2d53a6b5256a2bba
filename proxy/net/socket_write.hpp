// Writes that usually need no wait. A response or request of a few KiB nearly always fits in
// the socket's send buffer, so it is sent straight from the caller (one sendmsg) and only a
// remainder the kernel did not take waits on the socket. Asio's own write sends at once too,
// but always completes through the scheduler: an operation object, a queued completion and a
// coroutine resumption per write, on every request and on every subscriber of a fan-out.
#pragma once

#include "net/deadline_sweep.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <span>

namespace coalescer::net {

// Sends what the socket takes now, without blocking. Returns the bytes sent; `ec` is set only
// for a real failure (a full send buffer is not one).
std::size_t send_now(boost::asio::ip::tcp::socket& socket,
                     std::span<const boost::asio::const_buffer> buffers,
                     boost::system::error_code& ec) noexcept;

// Writes every byte of `buffers` within `limit` (a duration, or a time point for callers that
// carry an overall deadline); a peer that stops reading gets beast::error::timeout. Plain TCP
// takes the no-wait path; a TLS stream always writes asynchronously.
template <class Stream, class Limit>
boost::asio::awaitable<boost::system::error_code> write_fully(
    Stream& stream, socket_deadline& deadline, std::span<const boost::asio::const_buffer> buffers,
    Limit limit);

// The same in two steps, for the paths taken on every request or delivery, where even a
// coroutine frame per write shows: what the socket takes now (nothing for TLS), then, only if
// something is left, the rest from byte `sent` on.
//
//     auto sent = write_now(stream, buffers, ec);
//     if (!ec && sent != buffer_size(buffers)) ec = co_await write_rest(..., sent, limit);
template <class Stream>
std::size_t write_now(Stream& stream, std::span<const boost::asio::const_buffer> buffers,
                      boost::system::error_code& ec) noexcept;
template <class Stream, class Limit>
boost::asio::awaitable<boost::system::error_code> write_rest(
    Stream& stream, socket_deadline& deadline, std::span<const boost::asio::const_buffer> buffers,
    std::size_t sent, Limit limit);

}  // namespace coalescer::net
