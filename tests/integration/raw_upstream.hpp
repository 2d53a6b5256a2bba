// A scripted, hostile upstream for integration tests: a plain TCP server on 127.0.0.1 (an
// ephemeral port) that reads each request (head, then a Content-Length body: the sidecar always
// frames its requests that way) and answers it with whatever bytes its script says — valid or
// not — written in separate TCP segments with pauses between them, then keeps the connection,
// half-closes it, closes it, or resets it (SO_LINGER 0).
//
// It records every request it received (per connection, in order, with headers and body), so
// tests assert how many upstream calls were made, on which connection, and for which tenant.
//
// The script is a function from the received request to a step: tests answer "request N on
// connection C" or "call N" (in arrival order) or "the request with this body" as they like.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace coalescer::test {

struct recorded_request {
    std::size_t call = 0;        // 0-based, in the order requests were received (all connections)
    std::size_t connection = 0;  // 0-based, in the order connections were accepted
    std::size_t index = 0;       // 0-based position of this request on its connection
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers;  // lower-case names; repeats joined with ", "
    std::string body;
    std::string header(const std::string& name) const;
};

// What the upstream does with the connection once a step's bytes are written.
enum class ending {
    keep_open,   // read and answer the next request on it
    half_close,  // shutdown(SHUT_WR), then read (and record) until the sidecar closes
    close,       // close (FIN)
    reset,       // SO_LINGER 0, close (RST)
};

// One write: wait `delay`, then write `bytes` (TCP_NODELAY: each piece leaves as its own
// segment when a delay separates it from the previous one).
struct piece {
    std::chrono::milliseconds delay{0};
    std::string bytes;
};

struct script_step {
    bool hold = false;  // wait for raw_upstream::release() (bounded) before the first piece
    std::vector<piece> pieces;
    ending then = ending::keep_open;

    // Builders: answer("HTTP/1.1 200 OK...").after(150ms, "junk").ending_with(ending::close)
    script_step& after(std::chrono::milliseconds delay, std::string bytes);
    script_step& ending_with(ending e);
};
script_step answer(std::string bytes, ending then = ending::keep_open);

using responder = std::function<script_step(const recorded_request&)>;

// Scripts by position: `step` answers request `index` on connection `connection` (both 0-based,
// in arrival order); `otherwise` answers every other request.
responder on_request(std::size_t connection, std::size_t index, script_step step,
                     responder otherwise);
// `step` answers call `call` (0-based, in the order requests arrived on any connection).
responder on_call(std::size_t call, script_step step, responder otherwise);

class raw_upstream {
  public:
    using responder = test::responder;

    // A held step waits at most this long for release(): a forgotten release never hangs a test.
    static constexpr std::chrono::milliseconds hold_limit{5000};

    explicit raw_upstream(responder script);
    ~raw_upstream();  // stops accepting, ends every connection, joins every thread
    raw_upstream(const raw_upstream&) = delete;
    raw_upstream& operator=(const raw_upstream&) = delete;

    std::uint16_t port() const { return port_; }
    std::string url() const;

    std::size_t calls() const;        // requests received whole
    std::size_t connections() const;  // connections accepted
    std::size_t steps_done() const;   // steps whose every piece was written (or failed to be)
    std::vector<recorded_request> requests() const;
    // Whether the sidecar closed (or reset) connection `c`: the upstream read its end.
    bool closed_by_peer(std::size_t c) const;
    // Lets held steps go on.
    void release();

  private:
    struct conn_state {
        bool peer_closed = false;
    };
    void accept_loop();
    void serve(std::size_t index, int fd);
    // Appends what one receive brings; false at the end of the stream, an error or stop.
    bool read_more(int fd, std::string& buffer);
    bool wait(std::chrono::milliseconds d);  // false when stopping

    responder script_;
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    bool stopping_ = false;
    bool released_ = false;
    std::size_t steps_done_ = 0;
    std::vector<recorded_request> requests_;
    std::vector<conn_state> conns_;
    std::vector<std::thread> threads_;
    std::thread acceptor_;
};

}  // namespace coalescer::test
