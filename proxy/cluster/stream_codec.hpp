// How a flight travels through Redis: the events of one append packed into one value (kind,
// length, bytes, repeated), which becomes one entry of the flight's stream, or, when a single
// append carries the whole answer and no pod reads the stream yet, a plain string key (a stream
// costs Redis a 4 KiB node and ten times the time to make). Kinds:
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
#include <vector>

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

// Appends one event to a packed value: its kind, its length in decimal, ':', its bytes.
void pack_event(std::string& packed, entry_kind kind, std::string_view value);

struct packed_event {
    entry_kind kind;
    std::string_view value;  // into the packed text
};
// The events of a packed value, in order; false when it is not one (another version's, or
// damaged), with `out` then unspecified.
bool unpack_events(std::string_view packed, std::vector<packed_event>& out);

}  // namespace coalescer::cluster
