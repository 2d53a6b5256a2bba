// How a request's bytes are framed, without sockets, so the session and the fuzzers run the
// same code: where a head ends, and the body fed to the parser as it arrives, bounded in memory
// and length whatever the client sends.
#pragma once

#include "ops/config.hpp"
#include "server/request_parser.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string_view>

namespace coalescer::server {

// The size of the head at the start of `data` (through its blank line), or 0 while it is not
// all there. `scanned`: bytes already searched by an earlier call (the search resumes there).
// A head of bare-LF lines is found too, so that it gets its 400 at once.
std::size_t find_head_end(std::string_view data, std::size_t scanned = 0);

// Feeds a body to the parser, bytes as they arrive:
// - the bytes the parser waits on (a chunk-size line with its extensions, the trailer section)
//   never exceed max_header_bytes (Beast 1.81 would buffer either without limit):
//   framing_too_long;
// - everything the body takes, framing included, stays within max_request_body plus a framing
//   allowance (a sixteenth of it, and 64 KiB): body_too_large, so tiny chunks can't make it
//   endless (the parser's own body limit counts only content).
class body_framing {
  public:
    explicit body_framing(const ops::limits_config& limits);

    // Parses what `buffer` holds and consumes what the parser took. True when the body is
    // complete; false with `ec` set (a proxy_errc) when it can't be, or with `ec` clear when
    // more bytes are needed: at most room(buffer) of them.
    bool feed(request_parser& parser, boost::beast::flat_buffer& buffer,
              boost::system::error_code& ec);
    std::size_t room(const boost::beast::flat_buffer& buffer) const noexcept;

  private:
    std::size_t budget_;
    std::size_t max_pending_;
    std::size_t consumed_ = 0;
};

// What a parser error means for the client: 431, 413, 408 or 400.
boost::system::error_code client_error_of(boost::system::error_code parser_error);

}  // namespace coalescer::server
