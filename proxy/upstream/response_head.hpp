// An upstream answer's parsed head as clients get it, or the error that forbids relaying it.
#pragma once

#include "http/response_head.hpp"
#include "upstream/response_parser.hpp"

#include <boost/system/error_code.hpp>

#include <string_view>

namespace coalescer::upstream {

// The head clients see (header_policy.hpp decides the fields), or a proxy_errc for framing a
// proxy must not relay (checklist H-20): Content-Length with Transfer-Encoding, a transfer
// coding other than chunked alone. `content_type` views the parser's fields.
boost::system::error_code read_head(const response_parser& parser, bool head_method,
                                    http::response_head& out, std::string_view& content_type);

}  // namespace coalescer::upstream
