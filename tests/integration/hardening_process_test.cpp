// Hostile clients against the built executable, watched from outside: peak memory under framing
// that never ends and under a body built to be costly to key, and the access log of requests
// the sidecar refused or answered itself.
#include "child_process.hpp"
#include "doctest_main.hpp"
#include "harness.hpp"
#include "ops/errors.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <set>
#include <sstream>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

// A sidecar process in front of `upstream_url` with `extra` config; its ports once listening.
struct sidecar {
    sidecar(const std::string& upstream_url, const std::string& extra, const std::string& tag)
        : config(temp_path(tag + ".yaml")),
          process((write_file(config, proxy_yaml(upstream_url, extra + "log: {level: info}\n",
                                                 "    retries: {max_attempts: 1}\n")),
                   std::vector<std::string>{COALESCER_BINARY, "--config", config}),
                  tag),
          ports(process.ports()) {}
    ~sidecar() { ::unlink(config.c_str()); }
    std::string config;
    child process;
    std::pair<std::uint16_t, std::uint16_t> ports;
};

// Sends `head` then `piece` until `total` bytes went or the sidecar stopped taking them.
void flood(std::uint16_t port, const std::string& head, const std::string& piece,
           std::size_t total) {
    client conn(port);
    conn.send_raw(head);
    try {
        for (std::size_t sent = 0; sent < total; sent += piece.size())
            conn.send_raw(piece);
    } catch (const std::exception&) {
        // refused, as it should be
    }
}

}  // namespace

TEST_CASE("framing that never ends leaves the sidecar's peak memory where it was") {
    mock::mock_server mock({});
    mock.start();
    sidecar s("http://127.0.0.1:" + std::to_string(mock.port()), "", "flood");
    // A first request, so the baseline includes a worker's usual buffers.
    REQUIRE(request(s.ports.first, "POST", "/chat/completions", chat_body("warm"),
                    {{"Content-Type", "application/json"}})
                .status == 200);
    const auto before = s.process.peak_rss();
    const std::string head =
        "POST /chat/completions HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n";
    const std::string kib(1024, 'x');
    for (int i = 0; i < 4; ++i) {  // two of each, on two connections at once
        std::thread extension([&] { flood(s.ports.first, head + "1;a=", kib, 64 << 20); });
        std::thread trailer([&] {
            std::string lines;
            for (int n = 0; n < 128; ++n)
                lines += "X: y\r\n";
            flood(s.ports.first, head + "2\r\n{}\r\n0\r\n", lines, 64 << 20);
        });
        extension.join();
        trailer.join();
    }
    const auto after = s.process.peak_rss();
    MESSAGE("peak RSS " << before / 1024 << " KiB before, " << after / 1024 << " KiB after");
    CHECK(after - before < 16 * 1024 * 1024);
    CHECK(mock.stats().calls == 1);
}

TEST_CASE("a 16 MiB body of [0,0,…] is keyed within a small multiple of its size") {
#if defined(__SANITIZE_THREAD__)
    coalescer::test::skip_test(
        "under ThreadSanitizer every byte the sidecar touches has shadow memory too: its peak RSS "
        "says nothing about the sidecar's own (measured in the release and ASan builds)");
    return;
#endif
    mock::mock_server mock({});
    mock.start();
    sidecar s("http://127.0.0.1:" + std::to_string(mock.port()),
              "limits: {max_request_body: 32MiB}\n", "zeros");
    REQUIRE(request(s.ports.first, "POST", "/chat/completions", chat_body("warm"),
                    {{"Content-Type", "application/json"}})
                .status == 200);
    const auto before = s.process.peak_rss();
    std::string body = "[0";
    body.reserve(16 << 20);
    while (body.size() + 3 < (16u << 20))
        body += ",0";
    body += "]";
    const auto r = request(s.ports.first, "POST", "/chat/completions", body,
                           {{"Content-Type", "application/json"}});
    CHECK(r.status != 0);  // the mock refuses it (not a chat body); the key was made first
    const auto after = s.process.peak_rss();
    MESSAGE("peak RSS " << before / 1024 << " KiB before, " << after / 1024 << " KiB after");
    // The body as read, the copy sent upstream, its canonical text: about 3 × 16 MiB. Before,
    // keying alone took about 1 GB.
    CHECK(after - before < 5 * body.size());
}

TEST_CASE("requests the sidecar refuses or answers itself get their access-log line") {
    sidecar s("http://127.0.0.1:1", "limits: {header_timeout: 300ms, max_request_body: 1KiB}\n",
              "refusals");
    const auto port = s.ports.first;
    struct sent {
        std::string bytes;
        unsigned status;
        std::string outcome;
    };
    const std::vector<sent> cases = {
        {"GET /models HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400, "bad_request"},
        {"POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413,
         "body_too_large"},
        {"GET /models HTTP/2.0\r\nHost: x\r\n\r\n", 505, "unsupported_http_version"},
        {"POST /chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
         "unsupported_transfer_coding"},
        {"GET /models HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'b') + "\r\n\r\n", 431,
         "headers_too_large"},
        {"GET /models HTTP/1.1\r\nHost: x\r\n", 408, "header_timeout"},  // never finished
        {"GET /models HTTP/1.1\r\nHost: x\r\n\r\n", 502, "upstream_connect_failed"},
    };
    for (const auto& c : cases) {
        client conn(port);
        conn.send_raw(c.bytes);
        CHECK(conn.read(10s).status == c.status);
    }
    // The access log is flushed twice a second.
    std::vector<boost::json::object> lines;
    REQUIRE(eventually(
        [&] {
            lines.clear();
            std::istringstream out(s.process.out());
            for (std::string line; std::getline(out, line);)
                lines.push_back(boost::json::parse(line).as_object());
            return lines.size() == cases.size();
        },
        5s));
    // Lines come in the order the workers finished, not the order of the cases.
    std::multiset<std::pair<std::int64_t, std::string>> logged, expected;
    for (const auto& line : lines)
        logged.emplace(line.at("status").as_int64(), line.at("outcome").as_string().c_str());
    for (const auto& c : cases)
        expected.emplace(c.status, c.outcome);
    CHECK(logged == expected);
    // The 502 the sidecar wrote itself: its bytes counted, not "0, cut".
    const auto error_body =
        ops::error_body("could not connect to the upstream", "upstream_connect_failed");
    for (const auto& line : lines) {
        if (line.at("status").as_int64() == 502)
            CHECK(line.at("bytes_out").as_int64() == static_cast<std::int64_t>(error_body.size()));
    }
}
