// An upstream answer's head as every client sees it: status, reason and the end-to-end fields,
// hop-by-hop and framing fields removed (header_policy.hpp), plus what decides each client's
// framing and whether the answer may be kept for others.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace coalescer::http {

struct response_head {
    unsigned status = 0;
    std::string reason;
    // The end-to-end fields as "Name: value\r\n" lines in upstream order, ready to copy into
    // every client's head (one string, not a string pair per field).
    std::string fields;
    bool has_age = false;  // upstream sent Age: a hit's head replaces it with its own
    std::optional<std::uint64_t> content_length;  // nullopt: streamed (chunked or to the close)
    bool no_store = false;  // Cache-Control no-store or private, or Set-Cookie: not for others
    bool has_body = true;   // false for HEAD, 1xx, 204, 304
};

}  // namespace coalescer::http
