// The framing and smuggling checks of the reliability checklist (H-01…H-17) that Beast 1.81
// does not make, or makes too leniently. Run on every request before anything is forwarded.
#pragma once

#include "ops/config.hpp"

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include <memory_resource>
#include <string_view>

namespace coalescer::server {

// A client request's header fields live in its session's arena (one pointer bump each, all
// freed at once when the next request starts) instead of one heap node per field.
using request_fields = boost::beast::http::basic_fields<std::pmr::polymorphic_allocator<char>>;
using request_header = boost::beast::http::request_header<request_fields>;
using client_request = boost::beast::http::request<boost::beast::http::string_body, request_fields>;

inline constexpr std::size_t max_request_line = 8 * 1024;
inline constexpr std::size_t max_header_fields = 100;

// On the raw head bytes (request line through the blank line): bare CR or LF (H-09),
// obs-fold (H-08), request line > 8 KiB (414), more than 100 fields (431).
boost::system::error_code check_raw_head(std::string_view head);

// On the parsed head: version (H-11), Transfer-Encoding and Content-Length (H-01…H-06),
// request target form (H-12, H-13), Host (H-14), Connection naming end-to-end headers (H-15),
// underscores in names (H-16), ambiguous credentials (H-17), Expect (H-18).
boost::system::error_code check_request(const request_header& header, const ops::config& cfg);

// The declared body length: 0 without Content-Length; nullopt for chunked.
std::optional<std::uint64_t> declared_length(const request_header& header);

}  // namespace coalescer::server
