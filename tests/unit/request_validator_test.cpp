// The request validator's raw-head scan (proxy/server/request_validator.*, check_raw_head):
// bare CR or LF, obs-fold, NUL and the field count, checked on the bytes before any parsing.
#include "ops/errors.hpp"
#include "server/request_validator.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>

using coalescer::ops::proxy_errc;
using coalescer::server::check_raw_head;
using coalescer::server::max_header_fields;

namespace {

// The rules of the raw-head scan, one byte at a time: the obvious reading of the framing rules
// (bare CR, bare LF, obs-fold, NUL, field count) that the line-by-line scan must agree with.
boost::system::error_code reference_scan(std::string_view head) {
    std::size_t fields = 0;
    for (std::size_t i = 0; i < head.size(); ++i) {
        const char c = head[i];
        if (c == '\r' && (i + 1 >= head.size() || head[i + 1] != '\n'))
            return proxy_errc::bad_request;
        if (c == '\n') {
            if (i == 0 || head[i - 1] != '\r')
                return proxy_errc::bad_request;
            if (i + 1 < head.size() && (head[i + 1] == ' ' || head[i + 1] == '\t'))
                return proxy_errc::bad_request;
            if (i + 1 < head.size() && head[i + 1] != '\r' && ++fields > max_header_fields)
                return proxy_errc::headers_too_large;
        }
        if (c == '\0')
            return proxy_errc::bad_request;
    }
    return {};
}

const std::string sample =
    "POST /chat/completions HTTP/1.1\r\nHost: api.example\r\nContent-Type: application/json\r\n"
    "Authorization: Bearer k\r\nContent-Length: 2\r\n\r\n";

}  // namespace

TEST_CASE("raw head scan: the usual head passes, each framing fault is caught") {
    CHECK_FALSE(check_raw_head(sample));
    CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n") == proxy_errc::bad_request);
    CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n") == proxy_errc::bad_request);
    CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n") ==
          proxy_errc::bad_request);
    CHECK(check_raw_head(std::string("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 30)) ==
          proxy_errc::bad_request);
    std::string many = "GET / HTTP/1.1\r\n";
    for (std::size_t i = 0; i <= max_header_fields; ++i)
        many += "X-F: v\r\n";
    CHECK(check_raw_head(many + "\r\n") == proxy_errc::headers_too_large);
}

TEST_CASE("raw head scan agrees with the byte-by-byte rules on 20,000 mutated heads") {
    std::mt19937 rng(20261127);
    const std::string alphabet = std::string("\r\n \t\0:aZ", 9);
    for (int round = 0; round < 20000; ++round) {
        std::string head = sample;
        const int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits; ++e) {
            const std::size_t fields_at = sample.find("\r\n") + 2;  // the request line stays
            const auto at = fields_at + rng() % (head.size() - fields_at);
            const char c = alphabet[rng() % alphabet.size()];
            switch (rng() % 3) {
                case 0:
                    head[at] = c;
                    break;
                case 1:
                    head.insert(head.begin() + static_cast<std::ptrdiff_t>(at), c);
                    break;
                default:
                    head.erase(at, 1);
                    break;
            }
        }
        INFO("head: " << head);
        REQUIRE(check_raw_head(head) == reference_scan(head));
    }
}
