#include "coalesce/flight_id.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iterator>

namespace coalescer::coalesce {

flight_ids::flight_ids() {
    unsigned char random[4] = {};
    RAND_bytes(random, sizeof random);
    char text[9];
    std::snprintf(text, sizeof text, "%02x%02x%02x%02x", random[0], random[1], random[2],
                  random[3]);
    prefix_ = text;
}

std::string flight_ids::next() {
    // Every pass-through request takes one: to_chars rather than a printf format parse, and no
    // heap for the usual short id.
    const auto n = next_.fetch_add(1, std::memory_order_relaxed);
    char text[32];
    auto* at = std::copy(prefix_.begin(), prefix_.end(), std::begin(text));
    *at++ = '-';
    at = std::to_chars(at, std::end(text), n, 16).ptr;
    return std::string(std::begin(text), at);
}

}  // namespace coalescer::coalesce
