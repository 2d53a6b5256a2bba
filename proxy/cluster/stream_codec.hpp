// How a flight travels through a Redis Stream: one entry per append, an event per field, the
// field named by the event's kind, its value the event's bytes:
//   h  the response head          b  body bytes (consecutive chunks, batched)
//   e  the end: complete          f  the failure: the error every client gets
// The head is text of our own, not HTTP: it is the head clients get (hop-by-hop fields already
// removed), plus what decides their framing and whether the answer may be kept.
#pragma once

#include "http/response_head.hpp"

#include <boost/system/error_code.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace coalescer::cluster {

enum class entry_kind : char { head = 'h', body = 'b', end = 'e', failure = 'f' };

// `trace_id`: the producing request's W3C trace id, carried after the flags ("" for none).
std::string encode_head(const http::response_head& head, std::string_view trace_id = {});
// nullopt when the text is not an encoded head (another version's, or damaged). The trace id,
// if any, goes to `trace_id`.
std::optional<http::response_head> decode_head(std::string_view text,
                                               std::string* trace_id = nullptr);

// Only the sidecar's own errors cross: anything else is reported as the upstream having closed.
std::string encode_failure(boost::system::error_code ec);
boost::system::error_code decode_failure(std::string_view text);

std::optional<entry_kind> kind_of(std::string_view k);

}  // namespace coalescer::cluster
