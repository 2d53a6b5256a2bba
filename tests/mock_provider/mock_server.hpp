// mock_server: a fake Perplexity-style provider for tests, benchmarks and load tests.
//
// Speaks HTTP/1.1 (keep-alive, chunked SSE) and HTTP/1.0, optionally over TLS, and records
// exactly how many upstream calls it received (wire-format §1 and §6).
//
// Routes:
//   POST /chat/completions, POST /v1/chat/completions   Perplexity JSON or SSE (a call)
//   GET  /models, GET /v1/models                         model list (control, not a call)
//   GET  /__stats, GET /__calls, POST /__reset           accounting (control, not a call)
//   anything else                                        404 JSON error (a call)
//
// Behaviour can be changed per request with a top-level "mock" object in the request body,
// e.g. {"model":"sonar","messages":[...],"mock":{"status":429,"retry_after":"1","fail_times":2}}.
// See mock_server.cpp (struct overrides) for the full list.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace coalescer::mock {

struct mock_options {
    std::string address = "127.0.0.1";
    std::uint16_t port = 0;                        // 0 = ephemeral; port() tells
    int latency_ms = 0;                            // before the response head
    int chunks = 5;                                // SSE events with content
    int chunk_interval_ms = 20;                    // between SSE events
    std::string object = "chat.completion.chunk";  // or "chat.completion" (both seen in the wild)
    bool send_done = true;                         // `data: [DONE]` at the end of SSE
    std::string tls_cert_file, tls_key_file;       // both set = HTTPS
    unsigned threads = 1;
};

struct call_record {
    std::uint64_t seq = 0;
    std::string method, target;
    std::string body_sha256;  // hex of the raw body ("" if the body never arrived)
    std::string auth_sha256;  // hex of the Authorization (or x-api-key) value, "" if none
    std::map<std::string, std::string> headers;  // lower-case names, duplicates joined with ", "
    std::uint64_t connection_id = 0;             // which accepted connection served it
    int status = 0;                              // 0 = no response head was sent
    bool stream = false;                         // an SSE response was started
    bool completed = false;                      // the whole response was sent
    bool aborted = false;                        // the client went away before that
    std::uint64_t bytes_sent = 0;                // response bytes written (head + body + framing)
    std::int64_t received_at_ms = 0;             // when its head arrived, on the system clock
};

struct mock_stats {
    std::uint64_t calls = 0, connections = 0, in_flight = 0, max_concurrency = 0, completed = 0,
                  aborted = 0;
    std::map<std::string, std::uint64_t> calls_per_body_hash;  // key: hex sha256 of raw body
    std::map<std::string, std::uint64_t> calls_per_path;
};

class mock_server {
  public:
    explicit mock_server(mock_options options);
    ~mock_server();  // stops
    mock_server(const mock_server&) = delete;
    mock_server& operator=(const mock_server&) = delete;

    // Binds and listens, then runs on its own thread(s); returns once accepting.
    // Throws std::exception on bad options, bind or TLS set-up failures. Call at most once.
    void start();
    // Idempotent: closes the listener and every connection, joins the threads.
    void stop();

    std::uint16_t port() const;
    mock_stats stats() const;  // thread-safe snapshot
    std::vector<call_record> calls() const;
    // Zeroes the counters and forgets the calls. in_flight stays the live number of calls in
    // progress (it is a gauge); max_concurrency restarts from it.
    void reset();

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace coalescer::mock
