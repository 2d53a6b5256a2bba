// A flight on its own: joins, its log, what it frees past max_response_bytes, the orphan policy,
// and the races the hardening review found (token counting reading freed chunks, an orphan
// cancelled while a client joined, a non-retained answer served as a hit).
#include "coalesce/flight.hpp"
#include "ops/errors.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>

using namespace coalescer;
using namespace coalescer::coalesce;

namespace {

flight_key key_named(unsigned char n) {
    flight_key k;
    k.digest[0] = n;
    k.digest[31] = static_cast<unsigned char>(n * 7);
    return k;
}

http::response_head head_of(unsigned status) {
    http::response_head h;
    h.status = status;
    h.reason = "R";
    h.fields = "Content-Type: application/json\r\n";
    h.content_length = 0;
    return h;
}

flight::limits limits_of(std::size_t max_response, bool cancel_orphans = false) {
    return {max_response, 100, cancel_orphans, true, std::size_t(-1)};
}

// Completes `f` with a 2xx answer of `body`.
void finish(flight& f, unsigned status, const std::string& body) {
    auto h = head_of(status);
    h.content_length = body.size();
    f.publish_head(h, true);
    f.append(body, true);
    f.complete();
}

}  // namespace

TEST_CASE("flight: the body is refused once subscribers may free it") {
    // Past max_response_bytes subscribers free what they have all read, from any thread, at
    // any moment: the producer must not be handed views of chunks a leave() can free (it read
    // them for token counting after the lock; under ASan that was a use after free).
    flight f(key_named(1), "id", limits_of(100), nullptr);
    bool hit = false;
    std::size_t a = 0, b = 0;
    REQUIRE(f.join(hit, a) == flight::join_result::joined);
    REQUIRE(f.join(hit, b) == flight::join_result::joined);
    f.publish_head(head_of(200));
    for (int i = 0; i < 3; ++i)  // on the heap (past the small-string buffer): freed for real
        f.append(std::string(64, static_cast<char>('a' + i)));
    log_read r;
    f.read(a, 3, r);  // a has read everything; b nothing yet
    const auto body = f.body();
    f.leave(b);  // frees every chunk below a's cursor
    if (body) {  // what the producer would then read
        std::size_t sum = 0;
        for (const auto piece : *body)
            sum = std::accumulate(piece.begin(), piece.end(), sum);
        CHECK(sum != 0);
    }
    CHECK_FALSE(body.has_value());
    f.leave(a);
}

TEST_CASE("flight: the body within max_response_bytes is whole") {
    flight f(key_named(2), "id", limits_of(100), nullptr);
    bool hit = false;
    std::size_t slot = 0;
    REQUIRE(f.join(hit, slot) == flight::join_result::joined);
    finish(f, 200, "hello");
    const auto body = f.body();
    REQUIRE(body.has_value());
    REQUIRE(body->size() == 1);
    CHECK(body->front() == "hello");
    f.leave(slot);
}

TEST_CASE("flight: an answer that will not be retained is never joined as a hit") {
    struct answer {
        unsigned status;
        std::string extra_fields;
        bool retain_results;
    };
    const answer cases[] = {
        {502, "", true},
        {429, "", true},
        {200, "Cache-Control: no-store\r\n", true},
        {200, "Set-Cookie: s=1\r\n", true},
        {200, "", false},  // result_ttl: 0
    };
    for (const auto& c : cases) {
        CAPTURE(c.status);
        CAPTURE(c.extra_fields);
        CAPTURE(c.retain_results);
        auto lim = limits_of(100);
        lim.retain_results = c.retain_results;
        flight f(key_named(3), "id", lim, nullptr);
        bool hit = false;
        std::size_t slot = 0;
        REQUIRE(f.join(hit, slot) == flight::join_result::joined);
        auto h = head_of(c.status);
        h.no_store = !c.extra_fields.empty();
        f.publish_head(h);
        f.complete();
        std::size_t late = 0;
        CHECK(f.join(hit, late) == flight::join_result::closed);
        f.leave(slot);
    }
    flight kept(key_named(4), "id", limits_of(100), nullptr);
    bool hit = false;
    std::size_t slot = 0, late = 0;
    REQUIRE(kept.join(hit, slot) == flight::join_result::joined);
    finish(kept, 200, "ok");
    CHECK(kept.join(hit, late) == flight::join_result::joined);
    CHECK(hit);
}

TEST_CASE("flight: orphan cancel never cancels a flight a client just joined") {
    // The last subscriber leaving decides to cancel; a join on another thread in between wants
    // the answer. Either the join comes first (no cancel) or it finds the flight closed.
    for (int round = 0; round < 2000; ++round) {
        flight f(key_named(5), "id", limits_of(100, true), nullptr);
        std::atomic<int> cancels{0};
        f.set_canceller([&] { cancels.fetch_add(1); });
        bool hit = false;
        std::size_t first = 0;
        REQUIRE(f.join(hit, first) == flight::join_result::joined);
        std::atomic<bool> go{false};
        flight::join_result joined = flight::join_result::closed;
        std::size_t second = 0;
        std::thread joiner([&] {
            while (!go.load()) {
            }
            bool h = false;
            joined = f.join(h, second);
        });
        go.store(true);
        f.leave(first);
        joiner.join();
        if (joined == flight::join_result::joined) {
            CHECK(cancels.load() == 0);
        } else {
            CHECK(cancels.load() == 1);
        }
    }
}
