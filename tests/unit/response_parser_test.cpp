#include "upstream/response_parser.hpp"

#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <string>

using namespace coalescer::upstream;
namespace http = boost::beast::http;

namespace {

// Feeds `text` to the parser in pieces of `step` bytes, the body through a buffer of
// `room` bytes; returns the body, or "!" and the error.
std::string parse(response_parser& p, const std::string& text, std::size_t step, std::size_t room) {
    std::string body;
    std::string buffer(room, '\0');
    std::size_t pos = 0;
    std::size_t end = std::min(text.size(), step);
    while (!p.is_done()) {
        p.body_into(buffer);
        boost::system::error_code ec;
        pos += p.put(boost::asio::buffer(text.data() + pos, end - pos), ec);
        body.append(buffer.data(), p.body_taken());
        if (ec && ec != http::error::need_more && ec != http::error::need_buffer) {
            std::string refused = "!";
            refused += ec.message();
            return refused;
        }
        if (ec == http::error::need_more || (pos == end && !p.is_done())) {
            if (end == text.size()) {
                return "!eof";  // the input ended before the message did
            }
            end = std::min(text.size(), end + step);
        }
    }
    return body;
}

}  // namespace

TEST_CASE("response_parser keeps every field in order, names as received, values looked up") {
    const std::string text =
        "HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nX-Custom: a\r\nretry-after-ms: 250\r\n"
        "x-custom: b\r\nContent-Length: 5\r\n\r\nhello";
    for (std::size_t step : {1u, 7u, 1000u}) {
        response_parser p;
        CHECK(parse(p, text, step, 64) == "hello");
        CHECK(p.status() == 429);
        CHECK(p.reason() == "Too Many");
        REQUIRE(p.fields().size() == 5);
        CHECK(p.fields()[0].name == http::field::retry_after);
        CHECK(p.fields()[1].name_text == "X-Custom");
        CHECK(p.fields()[3].name_text == "x-custom");
        CHECK(p.fields()[3].value == "b");
        REQUIRE(p.find(http::field::retry_after) != nullptr);
        CHECK(*p.find(http::field::retry_after) == "3");
        REQUIRE(p.find("RETRY-AFTER-MS") != nullptr);
        CHECK(*p.find("RETRY-AFTER-MS") == "250");
        CHECK(*p.find("x-CUSTOM") == "a");  // the first of two
        CHECK(p.find("x-missing") == nullptr);
    }
}

TEST_CASE("response_parser hands a chunked body over through a small buffer, byte for byte") {
    std::string body;
    std::string text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 40; ++i) {
        const std::string piece = "data: event " + std::to_string(i) + std::string(i * 7, 'x');
        char size[16];
        std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
        text += size + piece + "\r\n";
        body += piece;
    }
    text += "0\r\n\r\n";
    for (std::size_t room : {1u, 13u, 4096u}) {
        for (std::size_t step : {1u, 100u, 100000u}) {
            response_parser p;
            CHECK(parse(p, text, step, room) == body);
            CHECK(p.keep_alive());
        }
    }
}

TEST_CASE("response_parser refuses what Beast's framing refuses") {
    response_parser p;
    CHECK(
        parse(p, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 1000, 64)
            .starts_with("!"));
    response_parser q;
    CHECK(parse(q, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 1000, 64) == "!eof");
}
