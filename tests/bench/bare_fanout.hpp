// The fan-out floor: what this machine can do with no proxy at all. A bare server accepts N
// connections, reads one request from each, then writes one chunked SSE response to all of them
// from two threads with plain blocking send() calls: the head and the events pre-built (the
// same sizes as the mock's), each event stamped with the time it was due, and every connection
// sent everything due so far in one call (a client that fell behind gets its backlog at once).
// No parsing, no coroutines, no shared log: the delay it shows is the kernel's and the client's.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace coalescer::bench {

struct bare_fanout_plan {
    int subscribers = 0;
    std::size_t request_bytes = 0;  // each client's whole request, head and body
    int chunks = 20;
    int interval_ms = 50;
    int latency_ms = 300;  // after the last request is read, like the mock's latency
};

class bare_fanout {
  public:
    explicit bare_fanout(bare_fanout_plan plan);  // listens on 127.0.0.1, an ephemeral port
    ~bare_fanout();
    bare_fanout(const bare_fanout&) = delete;
    bare_fanout& operator=(const bare_fanout&) = delete;

    std::uint16_t port() const { return port_; }
    std::int64_t accepted() const { return accepted_.load(); }

  private:
    void run();
    bool read_requests();
    void stream(std::size_t begin, std::size_t end, std::int64_t start_us);

    bare_fanout_plan plan_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::vector<int> sockets_;
    std::atomic<std::int64_t> accepted_{0};
    std::vector<std::string> events_;  // each one chunk-framed, stamped with its due time
    std::thread thread_;
};

}  // namespace coalescer::bench
