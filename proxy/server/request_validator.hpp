// The framing and smuggling checks of the reliability checklist (H-01…H-17) that Beast 1.81
// does not make, or makes too leniently. Run on every request before anything is forwarded.
#pragma once

#include "coalesce/tenant_headers.hpp"
#include "server/request_parser.hpp"

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace coalescer::server {

inline constexpr std::size_t max_request_line = 8 * 1024;
inline constexpr std::size_t max_header_fields = 100;

// On the raw head bytes (request line through the blank line): bare CR or LF (H-09),
// obs-fold (H-08), request line > 8 KiB (414), more than 100 fields (431).
boost::system::error_code check_raw_head(std::string_view head);

// On the parsed head: version (H-11), Transfer-Encoding and Content-Length (H-01…H-06),
// request target form (H-12, H-13), Host (H-14), Connection naming a tenant, vary or framing
// header (H-15),
// underscores in names (H-16), ambiguous credentials (H-17), Expect (H-18).
boost::system::error_code check_request(const client_request& header,
                                        const coalesce::tenant_headers& tenants);

// An absolute-form target (`http://host/path?q`, RFC 9112 §3.2.2) becomes origin-form
// (`/path?q`) for routing; its authority is checked and otherwise ignored. Call before
// check_request. Other forms are left for check_request to judge.
boost::system::error_code adopt_absolute_form(client_request& request);

// The declared body length: 0 without Content-Length; nullopt for chunked.
std::optional<std::uint64_t> declared_length(const client_request& header);

}  // namespace coalescer::server
