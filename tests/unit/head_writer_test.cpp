#include "http/head_writer.hpp"

#include <doctest/doctest.h>

using namespace coalescer::http;

namespace {

response_head sample_head() {
    response_head head;
    head.status = 200;
    head.reason = "OK";
    head.fields = "Content-Type: application/json\r\nAge: 99\r\nx-request-id: r1\r\nage: 7\r\n";
    head.has_age = true;
    head.content_length = 2;
    return head;
}

}  // namespace

TEST_CASE("a follower's head carries upstream's fields as sent, then the coalescing labels") {
    const auto text =
        serialize_head(sample_head(), "follower", "f-1", std::nullopt, response_framing{});
    CHECK(text ==
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAge: 99\r\n"
          "x-request-id: r1\r\nage: 7\r\nx-coalesce: follower\r\n"
          "x-coalesce-flight: f-1\r\nContent-Length: 2\r\n\r\n");
}

TEST_CASE("a hit's head replaces every upstream Age line with its own") {
    const auto text = serialize_head(sample_head(), "hit", "f-1", std::chrono::seconds(3),
                                     response_framing{.chunked = false, .keep_alive = false});
    CHECK(text ==
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: r1\r\n"
          "x-coalesce: hit\r\nx-coalesce-flight: f-1\r\nAge: 3\r\nContent-Length: 2\r\n"
          "Connection: close\r\n\r\n");
}
