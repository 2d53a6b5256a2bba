// The response head one client is sent: upstream's headers, the coalescing labels, and the
// framing this client can take.
#pragma once

#include "http/response_head.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace coalescer::http {

struct response_framing {
    bool chunked = false;    // upstream streamed and the client speaks HTTP/1.1
    bool keep_alive = true;  // false when the body can only end at the close (HTTP/1.0)
};

response_framing framing_for(const response_head& head, bool client_http11, bool keep_alive);

// `age`: for hits, how long ago the flight completed (replaces upstream's Age).
// `role`: the x-coalesce value (leader, follower, hit, bypass, pass).
std::string serialize_head(const response_head& head, std::string_view role,
                           std::string_view flight_id, std::optional<std::chrono::seconds> age,
                           const response_framing& framing);

}  // namespace coalescer::http
