// One HTTP/1.1 connection to an upstream, plain TCP or TLS (SNI + hostname verification).
// Every operation takes the caller's deadline; the connection enforces it.
#pragma once

#include "net/deadline_sweep.hpp"
#include "ops/config.hpp"
#include "upstream/response_parser.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

namespace coalescer::upstream {

using deadline = std::chrono::steady_clock::time_point;

class connection {
  public:
    // `max_buffered`: bytes read but not yet parsed may not exceed it (an endless chunk-size
    // line, a head past its limit): the read then fails instead of growing the buffer.
    connection(boost::asio::any_io_executor ex, net::deadline_sweep& deadlines,
               std::size_t max_buffered);

    // Resolves, connects and (for https) handshakes, all before `by`. Errors are proxy_errc.
    boost::asio::awaitable<boost::system::error_code> connect(const ops::upstream_config& upstream,
                                                              boost::asio::ssl::context* tls,
                                                              deadline by);
    // Operations under deadline `by`; one the deadline aborted reports beast::error::timeout.
    // A write in two steps (see http/socket_write.hpp): what the socket takes now, then the rest.
    std::size_t write_now(std::span<const boost::asio::const_buffer> buffers,
                          boost::system::error_code& ec) noexcept;
    boost::asio::awaitable<boost::system::error_code> write_rest(
        std::span<const boost::asio::const_buffer> buffers, std::size_t sent, deadline by);
    boost::asio::awaitable<boost::system::error_code> read_header(response_parser& parser,
                                                                  deadline by);
    // Parses at least one more byte (or fills the body buffer), reading when nothing is buffered.
    boost::asio::awaitable<boost::system::error_code> read_some(response_parser& parser,
                                                                deadline by);
    // Feeds the parser bytes already read (a body that came with its head) without I/O or a
    // trip through the scheduler. False when nothing could be parsed: call read_some.
    bool parse_buffered(response_parser& parser, boost::system::error_code& ec);
    bool has_buffered() const noexcept { return buffer_.size() != 0; }
    std::size_t buffered() const noexcept { return buffer_.size(); }

    void close() noexcept;
    // True when an idle pooled connection has unread bytes (read, or waiting in the socket: a
    // MSG_PEEK syscall) or has been closed by the peer. Bytes nobody asked for mean the
    // connection is out of step: read as the next answer, they would reach another request.
    bool stale() noexcept;
    bool tls() const noexcept { return tls_.has_value(); }
    int native_handle() noexcept { return socket().native_handle(); }

    bool reused = false;
    std::uint64_t tenant = 0;  // whose requests it carries (upstream_request::tenant)
    std::chrono::steady_clock::time_point idle_since{};

  private:
    boost::asio::ip::tcp::socket& socket() noexcept;
    boost::asio::awaitable<boost::system::error_code> connect_to(
        const boost::asio::ip::tcp::endpoint& endpoint, deadline by);
    // Parses what is buffered: true when the caller's read is over (`ec` says how).
    bool parse(response_parser& parser, bool header_only, boost::system::error_code& ec);
    boost::asio::awaitable<boost::system::error_code> read(response_parser& parser,
                                                           bool header_only, deadline by);
    // One receive into the buffer; end of stream is put to the parser as HTTP defines it.
    boost::asio::awaitable<boost::system::error_code> receive(response_parser& parser);

    // Plain sockets rather than Beast's tcp_stream: deadlines are the worker's sweep, and the
    // stream's per-operation wrapper was measurable on every request.
    std::optional<boost::asio::ip::tcp::socket> plain_;
    std::optional<boost::beast::ssl_stream<boost::asio::ip::tcp::socket>> tls_;
    boost::beast::flat_buffer buffer_;
    boost::asio::any_io_executor executor_;
    net::deadline_sweep& deadlines_;
    std::optional<net::socket_deadline> deadline_;  // once connected
};

// Whether `ec`, from a write or a read on a connection, says the upstream closed or reset it.
bool closed_by_peer(boost::system::error_code ec) noexcept;

// The client TLS context for one upstream: TLS ≥ 1.2, verify_peer, the system store or ca_file.
// Throws at start-up when the CA file can't be loaded.
boost::asio::ssl::context make_client_tls_context(const ops::upstream_config& upstream);

}  // namespace coalescer::upstream
