// One client's view of a flight: replays the log from byte 0 at the client's pace, then follows
// the live tail, with its own framing (Content-Length or chunked, following upstream's). A slow
// client only ever slows itself: it is dropped at its write timeout.
#pragma once

#include "coalesce/flight.hpp"
#include "net/deadline_sweep.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace coalescer::coalesce {

struct delivery_options {
    coalesce::role role = coalesce::role::leader;
    std::chrono::milliseconds write_timeout{30000};
    std::chrono::milliseconds max_wait{600000};  // safety net for a flight that never moves
    bool keep_alive = true;                      // what the client asked for and we allow
    bool client_http11 = true;                   // false: HTTP/1.0, no chunked framing
    bool head_request = false;                   // HEAD: an error the sidecar makes has no content
    // Set once a drain began: a head written after that says Connection: close.
    const std::atomic<bool>* draining = nullptr;
};

struct delivery_result {
    unsigned status = 0;  // what the client was sent (0: nothing)
    std::uint64_t body_bytes = 0;
    bool reusable = false;  // the response ended cleanly and keep-alive holds
    bool client_gone = false;
    bool dropped_slow = false;  // its writes timed out: cut so nobody else waits
    bool complete = false;      // the whole response reached the client's socket
    std::optional<clock::time_point> first_byte;
    boost::system::error_code answered;  // the sidecar's own error answer, when it sent one
    boost::system::error_code cut_by;    // the upstream failure that cut the response
};

template <class Stream>
boost::asio::awaitable<delivery_result> deliver(Stream& stream, net::socket_deadline& deadline,
                                                flight& f, std::size_t slot,
                                                delivery_options options);

}  // namespace coalescer::coalesce
