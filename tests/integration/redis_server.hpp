// A real redis-server as a child process, for cluster-mode tests: started on a free loopback
// port in a temporary directory with persistence off, stopped, killed, frozen and restarted on
// the same port; and a tiny blocking RESP client (plain socket, no hiredis) to prepare and
// inspect its data from the test.
#pragma once

#include "child_process.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace coalescer::test {

// A loopback port nothing listened on a moment ago (bound to port 0, then closed). Another
// process may take it meanwhile: callers that start a server on it retry with another port.
// Also a port to point a client at when nothing should answer there.
std::uint16_t free_loopback_port();

// One RESP2 reply.
struct resp_reply {
    enum class type { simple, error, integer, bulk, nil, array };
    type kind = type::nil;
    std::string text;                  // simple, error, bulk
    long long integer = 0;             // integer
    std::vector<resp_reply> elements;  // array
    bool is_error() const { return kind == type::error; }
    bool is_ok() const { return kind == type::simple && text == "OK"; }
    // The reply as redis-cli would print it, on one line (for failure messages).
    std::string describe() const;
};

// One blocking connection to 127.0.0.1:port. Every operation has `timeout`; any I/O failure,
// timeout or malformed reply throws std::runtime_error. A reply of type error is returned, not
// thrown.
class resp_connection {
  public:
    explicit resp_connection(std::uint16_t port,
                             std::chrono::milliseconds timeout = std::chrono::seconds(5));
    ~resp_connection();
    resp_connection(const resp_connection&) = delete;
    resp_connection& operator=(const resp_connection&) = delete;

    // Sends one command (an array of bulk strings) and reads its reply.
    resp_reply command(const std::vector<std::string>& args);

  private:
    resp_reply read_reply(int depth);
    std::string read_line();
    std::string read_exact(std::size_t n);
    void fill();

    int fd_ = -1;
    std::chrono::milliseconds timeout_;
    std::string buffer_;
};

struct redis_options {
    std::string binary = "/usr/bin/redis-server";  // COALESCER_REDIS_SERVER overrides it
    std::string password;                          // --requirepass; the helpers AUTH with it
    std::vector<std::string> extra_args;           // more arguments, e.g. {"--maxclients", "8"}
};

// redis-server on 127.0.0.1:port(), `--save "" --appendonly no`, in a temporary directory,
// answering PING when the constructor returns (it throws std::runtime_error if it cannot
// start one, with redis-server's own output). The destructor kills it and removes the directory.
class redis_server {
  public:
    explicit redis_server(redis_options options = {});
    ~redis_server();
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    std::uint16_t port() const { return port_; }
    // "redis://127.0.0.1:PORT/DB", what a sidecar's cluster.redis points at.
    std::string url(int db = 0) const;

    // One command on a fresh connection (AUTH first when a password is set). Throws like
    // resp_connection when Redis does not answer within `timeout`.
    resp_reply command(const std::vector<std::string>& args,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
    // PING answered with PONG within `timeout`; never throws.
    bool ping(std::chrono::milliseconds timeout = std::chrono::seconds(1)) const;
    void flushall();
    long long dbsize();
    // KEYS pattern (a test database is small).
    std::vector<std::string> keys(const std::string& pattern = "*");
    // CLIENT PAUSE for `duration`, every command (`all`) or writes only. Redis itself holds
    // CLIENT UNPAUSE back during an ALL pause, so an ALL pause lasts its whole duration; for a
    // Redis that hangs and can be released at will, use freeze() and thaw().
    void pause_clients(std::chrono::milliseconds duration, bool all = true);

    // The process is there (not stopped, killed or exited).
    bool running() const { return process_ != nullptr; }
    // SIGTERM and wait for the exit (SIGKILL after 10 s).
    void stop();
    // SIGKILL and wait: Redis vanishes without closing anything gracefully.
    void kill();
    // SIGSTOP: connections stay open, connects still complete (the kernel's backlog), nothing
    // is answered. thaw() (SIGCONT) resumes it. A hung Redis, as a client sees one.
    void freeze();
    void thaw();
    // Starts it again on the same port (after stop() or kill(); it stops it first otherwise),
    // empty, and waits for PING. Retries for a while if the port is busy; throws if it stays so.
    void restart();
    // What redis-server wrote so far (its log goes to stdout), of the current or last run.
    std::string log() const;

  private:
    bool start_on(std::uint16_t port, std::string& why);
    void reap(int signo);

    redis_options options_;
    std::string tag_;  // names the output files
    std::string dir_;
    std::uint16_t port_ = 0;
    std::unique_ptr<child> process_;
    std::string last_log_;
    bool frozen_ = false;
};

}  // namespace coalescer::test
