// One worker's shared connection for short commands (claims, appends, renewals, pings): every
// flight of the worker writes into it, what queued while a write was under way goes out in the
// next single write, and replies are matched to commands in order. A burst of flights then
// costs Redis a few writes and reads, not a connection and two system calls each.
//
// A written command that outlives its timeout breaks the connection for every command behind it
// (their replies would come after the late one): they all fail at once, the breaker opens, and
// the next command opens a new connection. One that times out unwritten (the connection is
// still opening) is dropped unsent: a claim must never reach Redis after its flight gave up.
//
// Replies do not wait for the reactor's turn alone: under a burst the Redis socket's readiness
// comes after every client socket that became ready before it, and the flight's upstream call
// would start tens of milliseconds late. The link looks at its socket after each turn of the
// event loop while an awaited reply is due, and the registry lets it look as requests are
// handled (tend), so a claim answered in 50 us is taken within about as long.
#pragma once

#include "cluster/redis_connection.hpp"
#include "cluster/redis_script.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <chrono>
#include <memory>
#include <string_view>
#include <vector>

namespace coalescer::cluster {

class redis_mux {
  public:
    redis_mux(boost::asio::any_io_executor ex, const ops::cluster_config& config,
              boost::asio::ssl::context& tls);
    ~redis_mux();
    redis_mux(const redis_mux&) = delete;
    redis_mux& operator=(const redis_mux&) = delete;

    // Who waits for a command's reply. `awaited`: a request (a claim: the flight's call waits
    // for it); its reply is taken as soon as it is on the socket (look, tend). `background`:
    // nobody right now (an append); its reply is read when the event loop comes to it, and
    // costs no receive of its own. Either way the command is sent at once.
    enum class urgency { awaited, background };

    // A command queued now, its reply awaited later (within `timeout` of the send): commands
    // sent one after another reach Redis in that order, and none waits for another's reply.
    struct pending;
    using ticket = std::shared_ptr<pending>;
    ticket send(const std::vector<std::string_view>& args, std::chrono::milliseconds timeout,
                urgency u = urgency::awaited);
    // EVALSHA of `script` with `args` (the number of keys, the keys, the arguments). The first
    // use of a script on a connection sends SCRIPT LOAD just ahead of it, in the same order, so
    // scripts sent back to back run where they were sent, not after a NOSCRIPT and a resend.
    ticket send_script(const redis_script& script, const std::vector<std::string_view>& args,
                       std::chrono::milliseconds timeout, urgency u = urgency::awaited);
    static boost::asio::awaitable<redis_result> take_reply(ticket sent);
    // Whether the command's reply (or its failure) is in: take_reply will not wait.
    static bool answered(const ticket& sent) noexcept;
    // One command and its reply, within `timeout` (waiting for the connection included).
    boost::asio::awaitable<redis_result> run(const std::vector<std::string_view>& args,
                                             std::chrono::milliseconds timeout);
    // Opens the connection, if there is none, ahead of the first command that needs it.
    void warm();
    // Takes the replies already on the socket, if an awaited reply is due and the socket was not
    // looked at in the last 100 us. For the worker's request handling to call: it runs between
    // handlers, where a reply would otherwise wait for its turn in the reactor.
    void tend();
    // Drops the connection and what is pending, at shutdown: the commands' callers are not
    // resumed (their event loop is gone), their coroutines destroyed where they wait.
    void close() noexcept;

    struct link;  // one connection's life: its queue, its reader and writer

  private:
    std::shared_ptr<link> current();

    boost::asio::any_io_executor executor_;
    const ops::cluster_config& config_;
    boost::asio::ssl::context& tls_;
    std::shared_ptr<link> link_;
};

}  // namespace coalescer::cluster
