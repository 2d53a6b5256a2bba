// One connection to Redis, plain or TLS, owned by one worker's event loop: it connects,
// authenticates and selects the database within `timeouts.connect`, then runs commands one
// batch at a time, each batch bounded by a deadline after which the connection is closed (a
// reply that arrives late must never be taken for the next command's).
#pragma once

#include "cluster/resp.hpp"
#include "ops/config.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace coalescer::cluster {

struct redis_result {
    boost::system::error_code ec;  // the connection failed or timed out: no reply
    reply value;                   // may be a Redis error reply
};

class redis_connection {
  public:
    // `tls` is used for rediss:// only (a plain connection needs one to exist, not to be set up).
    redis_connection(boost::asio::any_io_executor ex, const ops::cluster_config& config,
                     boost::asio::ssl::context& tls);
    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;

    boost::asio::awaitable<boost::system::error_code> open();
    // One command, its reply within `timeout`.
    boost::asio::awaitable<redis_result> command(const std::vector<std::string_view>& args,
                                                 std::chrono::milliseconds timeout);
    // Several commands in one write; their replies, in order, within `timeout`.
    boost::asio::awaitable<boost::system::error_code> pipeline(const std::string& commands,
                                                               std::size_t count,
                                                               std::chrono::milliseconds timeout,
                                                               std::vector<reply>& replies);
    bool usable() const noexcept { return usable_; }
    void close() noexcept;

    // For a multiplexer, which keeps the connection alive until they complete: one write and
    // one read may be under way at once, neither with a deadline of its own (the caller closes
    // the connection when its deadline passes). `bytes` must live until `done` runs. A read
    // feeds what arrived to the reply reader; next_reply() then takes whole replies from it.
    void start_write(const std::string& bytes, std::function<void(boost::system::error_code)> done);
    void start_read(std::function<void(boost::system::error_code)> done);
    // What the socket holds now, fed to the reply reader without waiting, also while a read is
    // under way (plain connections only: a TLS engine takes one read at a time). Returns the
    // bytes taken; `ec` is would_block when there were none.
    std::size_t read_now(boost::system::error_code& ec);
    bool reads_now() const noexcept { return !tls_; }
    // Sends what the socket takes now, without waiting (nothing over TLS); the bytes sent.
    std::size_t write_now(const std::string& bytes, boost::system::error_code& ec) noexcept;
    reply_reader::status next_reply(reply& out) { return reader_.next(out); }

  private:
    boost::asio::awaitable<boost::system::error_code> write(const std::string& bytes);
    boost::asio::awaitable<boost::system::error_code> receive(reply& out);
    boost::asio::awaitable<boost::system::error_code> read_replies(std::size_t count,
                                                                   std::vector<reply>& out);
    boost::asio::awaitable<boost::system::error_code> handshake();
    void arm(std::chrono::milliseconds timeout);
    boost::system::error_code disarm(boost::system::error_code ec);

    const ops::cluster_config& config_;
    const bool tls_;
    boost::asio::ssl::stream<boost::asio::ip::tcp::socket> stream_;
    boost::asio::steady_timer deadline_;
    bool timed_out_ = false;
    bool usable_ = false;
    reply_reader reader_;
    std::vector<char> buffer_;
};

}  // namespace coalescer::cluster
