// The packed events one append carries between pods: what one pod packs, another unpacks
// byte for byte (binary bodies, colons and digits inside values included); anything else is
// refused whole, never half-fed to clients.
#include "cluster/stream_codec.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace coalescer::cluster;

TEST_CASE("stream codec: packed events come back as they went, in order") {
    const std::string head = "1\n200\nOK\n001\n-\ncontent-type: text/event-stream\r\n";
    std::string body = "data: {\"a\":\"12:34\"}\n\n";
    body += std::string("\0\r\n:9:", 6);
    std::string packed;
    pack_event(packed, entry_kind::head, head);
    pack_event(packed, entry_kind::body, body);
    pack_event(packed, entry_kind::end, "");
    std::vector<packed_event> events;
    REQUIRE(unpack_events(packed, events));
    REQUIRE(events.size() == 3);
    CHECK(events[0].kind == entry_kind::head);
    CHECK(events[0].value == head);
    CHECK(events[1].kind == entry_kind::body);
    CHECK(events[1].value == body);
    CHECK(events[2].kind == entry_kind::end);
    CHECK(events[2].value.empty());
}

TEST_CASE("stream codec: damaged or foreign packings are refused") {
    std::string good;
    pack_event(good, entry_kind::body, "hello");
    pack_event(good, entry_kind::failure, "7");
    std::vector<packed_event> events;
    REQUIRE(unpack_events(good, events));
    const std::vector<std::string> damaged{
        std::string(),                    // nothing
        good.substr(0, good.size() - 1),  // cut short
        good + "b",                       // a trailing kind without a length
        "x5:hello",                       // an unknown kind
        "b:hello",                        // no length
        "b-5:hello",                      // a signed length
        "b5hello",                        // no colon
        "b99999999999999999999999:x",     // a length past the value (and past size_t)
        "b6:hello",                       // a length past the value
    };
    for (const auto& bad : damaged) {
        INFO("packed: " << bad);
        CHECK_FALSE(unpack_events(bad, events));
    }
}
