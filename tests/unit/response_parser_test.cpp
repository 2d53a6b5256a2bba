#include "upstream/response_parser.hpp"

#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

using namespace coalescer::upstream;
namespace beast_http = boost::beast::http;

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
        if (ec && ec != beast_http::error::need_more && ec != beast_http::error::need_buffer) {
            std::string refused = "!";
            refused += ec.message();
            return refused;
        }
        if (ec == beast_http::error::need_more || (pos == end && !p.is_done())) {
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
        CHECK(p.fields()[0].name == beast_http::field::retry_after);
        CHECK(p.fields()[1].name_text == "X-Custom");
        CHECK(p.fields()[3].name_text == "x-custom");
        CHECK(p.fields()[3].value == "b");
        REQUIRE(p.find(beast_http::field::retry_after) != nullptr);
        CHECK(*p.find(beast_http::field::retry_after) == "3");
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

// ---------------------------------------------------------------------------------------------
// Recycled parsers. response_parser's operator new/delete keep up to 32 freed parsers' memory
// per thread for that thread's next responses (response_parser.cpp). The tests below allocate
// and free many parsers the way the sidecar does (new/delete, on one thread and across two),
// parse a different response in each, and check that a parser in recycled memory starts clean
// and holds only its own response. Under ASan they also check that freed parsers are poisoned
// (a use after free is caught, recycled or not) and that a parser handed out is not.

namespace {

// Response i: its own status, reason, fields and body; every third head is too large for the
// parser's in-object arena (1536 bytes), so its fields continue on the heap.
struct numbered_response {
    std::string text, body;
    unsigned status = 0;
    std::string reason, index, big;
};

numbered_response numbered(int i) {
    numbered_response r;
    // (Statuses with a body: not 1xx, 204 or 304.)
    static constexpr unsigned statuses[] = {200, 201, 202, 203, 206, 400, 401,
                                            403, 404, 429, 500, 502, 503};
    r.status = statuses[static_cast<std::size_t>(i) % std::size(statuses)];
    r.reason = "R" + std::to_string(i);
    r.index = std::to_string(i);
    r.body = "body of response " + r.index;
    if (i % 3 == 0)
        r.big = std::string(3000, static_cast<char>('a' + i % 26));
    r.text = "HTTP/1.1 " + std::to_string(r.status) + " " + r.reason + "\r\nX-Index: " + r.index +
             "\r\n" + (r.big.empty() ? "" : "X-Big: " + r.big + "\r\n") +
             "Content-Length: " + std::to_string(r.body.size()) + "\r\n\r\n" + r.body;
    return r;
}

void check_clean(const response_parser& p) {
    CHECK(p.status() == 0);
    CHECK(p.reason().empty());
    CHECK(p.fields().empty());
    CHECK(p.find("X-Index") == nullptr);
    CHECK(p.body_taken() == 0);
    CHECK_FALSE(p.is_header_done());
}

void check_own(response_parser& p, int i) {
    const auto expected = numbered(i);
    CHECK(parse(p, expected.text, 997, 64) == expected.body);
    CHECK(p.status() == expected.status);
    CHECK(p.reason() == expected.reason);
    // (CHECKs only: this also runs on threads of its own, where a REQUIRE's throw would end
    // the process.)
    const auto* index = p.find("X-Index");
    CHECK(index != nullptr);
    CHECK((index != nullptr && *index == expected.index));
    const auto* big = p.find("X-Big");
    if (expected.big.empty()) {
        CHECK(big == nullptr);
        CHECK(p.fields().size() == 2);
    } else {
        CHECK((big != nullptr && *big == expected.big));
        CHECK(p.fields().size() == 3);
    }
}

void check_not_poisoned(const response_parser* p) {
#if defined(__SANITIZE_ADDRESS__)
    CHECK(__asan_region_is_poisoned(const_cast<response_parser*>(p), sizeof *p) == nullptr);
#else
    (void)p;
#endif
}

// Under ASan a freed parser's memory must read as poisoned, whether it went back to the
// allocator or is kept for reuse (then poisoned by hand).
void check_poisoned(const void* freed) {
#if defined(__SANITIZE_ADDRESS__)
    CHECK(__asan_address_is_poisoned(freed) == 1);
#else
    (void)freed;
#endif
}

// Recycling runs in every build: under ASan freed blocks are poisoned while they wait.
constexpr bool recycling_expected = true;

}  // namespace

TEST_CASE("response_parser memory is recycled per thread, and a recycled parser starts clean") {
    constexpr int rounds = 5;
    constexpr int per_round = 80;  // more than the 32 a thread keeps: some go back to malloc
    std::set<const void*> freed;
    std::size_t recycled = 0;
    int next = 0;
    for (int round = 0; round < rounds; ++round) {
        CAPTURE(round);
        std::vector<std::unique_ptr<response_parser>> parsers;
        for (int i = 0; i < per_round; ++i) {
            parsers.push_back(std::make_unique<response_parser>());
            const response_parser* p = parsers.back().get();
            recycled += freed.count(p);
            check_not_poisoned(p);
            check_clean(*p);
            check_own(*parsers.back(), next++);
        }
        // Every parser still holds its own response after all the others were parsed.
        for (int i = 0; i < per_round; ++i) {
            CHECK(*parsers[i]->find("X-Index") == std::to_string(next - per_round + i));
        }
        freed.clear();
        // Freed in another order than they were made: odd ones first, then even ones.
        for (int parity : {1, 0}) {
            for (int i = parity; i < per_round; i += 2) {
                const void* address = parsers[i].get();
                parsers[i].reset();
                freed.insert(address);
                check_poisoned(address);
            }
        }
    }
    if (recycling_expected) {
        // From the second round on, each round finds at least the 32 blocks kept at the end of
        // the one before.
        CHECK(recycled >= static_cast<std::size_t>((rounds - 1) * 32));
    } else {
        MESSAGE("recycling is off in this sanitizer build: "
                << recycled
                << " parsers landed in memory freed in the round before (the allocator's doing)");
    }
}

TEST_CASE("a response_parser freed on another thread is recycled there, clean") {
    constexpr int n = 48;
    std::vector<std::unique_ptr<response_parser>> made_on_a;
    std::thread a([&] {
        for (int i = 0; i < n; ++i) {
            made_on_a.push_back(std::make_unique<response_parser>());
            check_own(*made_on_a.back(), 1000 + i);
        }
    });
    a.join();
    std::set<const void*> from_a;
    for (const auto& p : made_on_a)
        from_a.insert(p.get());
    std::size_t recycled = 0;
    std::thread b([&] {
        made_on_a.clear();  // freed on b: b keeps them
        std::vector<std::unique_ptr<response_parser>> made_on_b;
        for (int i = 0; i < n; ++i) {
            made_on_b.push_back(std::make_unique<response_parser>());
            recycled += from_a.count(made_on_b.back().get());
            check_not_poisoned(made_on_b.back().get());
            check_clean(*made_on_b.back());
            check_own(*made_on_b.back(), 2000 + i);
        }
        // b ends with 48 parsers to free: 32 kept, and let go when the thread exits.
    });
    b.join();
    if (recycling_expected) {
        CHECK(recycled >= 32);
    }
}
