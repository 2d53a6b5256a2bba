// Test harness: the mock provider and the sidecar in this process on ephemeral ports, and a
// small blocking HTTP/1.1 client over real sockets (plain or TLS) that reports exactly what a
// user would see: status, headers, body bytes, and whether the framing ended cleanly.
#pragma once

#include "mock_server.hpp"
#include "ops/config.hpp"
#include "server/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace coalescer::test {

// YAML for a sidecar in front of `upstream_url`, with `extra` appended (more top-level sections;
// `workers: 2` unless it sets workers) and `upstream_extra` inserted into the upstream's
// mapping (indented 4 spaces).
std::string proxy_yaml(const std::string& upstream_url, const std::string& extra = "",
                       const std::string& upstream_extra = "", const std::string& routes = "");

struct running_proxy {
    explicit running_proxy(const std::string& yaml);
    ~running_proxy();
    std::uint16_t port() const { return server->port(); }
    std::uint16_t admin_port() const { return server->admin_port(); }
    std::unique_ptr<server::server> server;
};

struct mock_and_proxy {
    explicit mock_and_proxy(mock::mock_options options = {}, const std::string& extra = "",
                            const std::string& upstream_extra = "", const std::string& routes = "");
    std::string mock_url() const;
    std::unique_ptr<mock::mock_server> mock;
    std::unique_ptr<running_proxy> proxy;
};

struct response {
    unsigned status = 0;
    std::map<std::string, std::string> headers;  // lower-case names; repeated ones joined with ", "
    std::string body;                            // de-framed body bytes
    bool complete = false;                       // framing ended cleanly (not cut)
    std::string error;                           // what ended the read, if not completion
    bool timed_out = false;                      // the client gave up: nothing ended it
    std::string header(const std::string& name) const;
};

// One HTTP/1.1 client connection (keep-alive), plain or TLS.
class client {
  public:
    explicit client(std::uint16_t port, boost::asio::ssl::context* tls = nullptr,
                    const std::string& sni = "localhost");
    ~client();
    void send_raw(const std::string& bytes);
    void send(const std::string& method, const std::string& target, const std::string& body,
              const std::vector<std::pair<std::string, std::string>>& headers = {});
    // Reads one whole response (up to `timeout`).
    response read(std::chrono::milliseconds timeout = std::chrono::seconds(20));
    // Reads the head, then body bytes until `body` contains `needle` (streaming checks); called
    // again on an unfinished response, it reads on.
    response read_until(const std::string& needle,
                        std::chrono::milliseconds timeout = std::chrono::seconds(20));
    // Continues a response started by read_until.
    response read_rest(response partial,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20));
    // Everything the server sends until it closes (raw bytes, for framing tests).
    std::string read_all_raw(std::chrono::milliseconds timeout = std::chrono::seconds(20));
    // The same, and whether the server closed (FIN or reset) rather than the timeout ending it.
    struct raw_read {
        std::string bytes;
        bool closed = false;
    };
    raw_read read_to_close(std::chrono::milliseconds timeout = std::chrono::seconds(20));
    bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // Sends `bytes` and half-closes, in one TCP segment (plain connections): the server finds
    // the data and the end of the stream together, as from a client that shuts down its write
    // side at once. The client still reads.
    void send_last(const std::string& bytes);
    // Sends `before`, one urgent (out-of-band) byte and `after` in one TCP segment (plain
    // connections). The server's receive stops short at the urgent mark with `after` queued.
    void send_with_urgent_byte(const std::string& before, char urgent, const std::string& after);
    void close();
    // Closes with a reset (SO_LINGER 0): the peer sees RST, not FIN.
    void close_with_reset();

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// A request and its complete response on a fresh connection.
response request(std::uint16_t port, const std::string& method, const std::string& target,
                 const std::string& body,
                 const std::vector<std::pair<std::string, std::string>>& headers = {});

// A chat-completions body for the mock; `mock` is a JSON object text of per-request overrides.
std::string chat_body(const std::string& prompt, bool stream = false, const std::string& mock = "");

std::string certs_dir();

// TCP_CORK on a socket: while on, what is written waits in the send queue; a shutdown or
// turning it off sends what waited, together.
void set_cork(int fd, bool on);

// Lower-case hex SHA-256, as the mock records bodies.
std::string sha256_hex(const std::string& data);

// One series of the sidecar's /metrics, named as exposed: `coalescer_evictions_total`,
// `coalescer_upstream_retries_total{upstream="mock"}`. nullopt when /metrics has no such line.
std::optional<double> find_metric(std::uint16_t admin_port, const std::string& series);
// The same, but a missing series is an error (std::runtime_error naming it), never a 0.
double metric_value(std::uint16_t admin_port, const std::string& series);

// What the mock's x-request-id ("mock-<seq>-<first 8 hex of the body's SHA-256>") says: which
// call of the mock (its seq) answered, and the body it answered.
struct mock_answer {
    std::uint64_t seq = 0;
    std::string body_tag;  // 8 hex digits; "" if the id is not the mock's
};
mock_answer answered_by(const response& r);
std::string body_tag(const std::string& request_body);  // what answered_by().body_tag will be

// Polls `pred` every 10 ms until it holds or `limit` passes; returns its last answer.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (pred())
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

}  // namespace coalescer::test
