// The upstream response path of upstream/connection.cpp, attempt.cpp and exchange.cpp, without
// sockets: upstream::response_parser with the default 16 KiB header limit and no body limit,
// fed by upstream::feed from a buffer bounded as a connection's is, read as
// connection::read does (parse what is buffered, receive only when that is not enough, end of
// stream through put_eof), interim 1xx heads skipped as send_and_read_head does, then the body
// into a small buffer as fetch / read_body_piece do, looping on need_buffer.
//
// Input: byte 0 bit 0 = the request was HEAD (skip(true)); byte 1 = body buffer size (1..64);
// byte 2 = how the rest arrives (0: all at once; otherwise a seed for pieces of 1..64 bytes);
// the rest is what the upstream sends, then the connection closes.
//
// Properties: no crash, leak or unbounded allocation; a connection the pool would reuse had
// nothing read past the answer; the unparsed bytes kept between receives
// stay within the header limit plus one receive; the body is never longer than what was sent,
// nor than a declared Content-Length; and the outcome (status, fields, body bytes, whether it
// failed) is the same whether the bytes arrive at once or in pieces, into a small buffer or a
// 16 KiB one (see same_outcome).
#include "fuzz_common.hpp"

#include "upstream/response_parser.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <boost/beast/core/flat_buffer.hpp>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace coalescer;
namespace beast_http = boost::beast::http;
using boost::system::error_code;

constexpr std::uint32_t max_response_head = 16 * 1024;  // limits.max_header_bytes (default)
// attempt.cpp: an upstream connection buffers at most a head and one receive.
constexpr std::size_t max_buffered = max_response_head + 64 * 1024;

// connection: the read buffer and the socket, the socket replaced by the fuzz input.
class fake_connection {
  public:
    fake_connection(std::string_view wire, std::uint32_t seed) : wire_(wire), split_(seed, 64) {}

    bool parse(upstream::response_parser& parser, bool header_only, error_code& ec) {
        return upstream::feed(parser, buffer_, header_only, ec);  // what connection::parse runs
    }

    // connection::receive: the next piece (within the buffer's limit), or the end of stream.
    error_code receive(upstream::response_parser& parser) {
        if (wire_.empty()) {
            if (!parser.got_some()) {
                return beast_http::error::end_of_stream;
            }
            error_code ec;
            parser.put_eof(ec);
            return ec;
        }
        const auto room = buffer_.max_size() - buffer_.size();
        if (room == 0) {
            return beast_http::error::buffer_overflow;
        }
        const auto n = std::min(split_.next(wire_.size()), room);
        const auto space = buffer_.prepare(n);
        std::memcpy(space.data(), wire_.data(), n);
        buffer_.commit(n);
        wire_.remove_prefix(n);
        FUZZ_CHECK(buffer_.size() <= max_buffered);
        return {};
    }

    // connection::read
    error_code read(upstream::response_parser& parser, bool header_only) {
        for (;;) {
            error_code ec;
            if (!parse(parser, header_only, ec)) {
                ec = receive(parser);
                if (!ec && !parser.is_done()) {
                    continue;
                }
            }
            return ec;
        }
    }

    // Bytes past what the parser took: read and not parsed, or not read yet.
    std::size_t left() const { return buffer_.size() + wire_.size(); }
    std::size_t buffered() const { return buffer_.size(); }

  private:
    std::string_view wire_;
    fuzz::splitter split_;
    boost::beast::flat_buffer buffer_{max_buffered};
};

struct outcome {
    error_code head_ec, body_ec;
    unsigned status = 0;
    std::vector<std::string> fields;  // "name: value"
    bool done = false;
    bool reusable = false;  // the pool would take it back, and nothing followed the answer
    std::string body;

    void print(const char* label) const {
        std::fprintf(stderr, "%s: head %s, status %u, %zu fields, body %s, done %d, %zu bytes\n",
                     label, head_ec.message().c_str(), status, fields.size(),
                     body_ec.message().c_str(), done, body.size());
    }
};

// The same response, whatever the segmentation. Beast finds some errors as soon as it sees
// them and others only at the end of the stream (a head cut inside a malformed field line is
// "bad field" when the line is whole in the buffer and "partial message" when it is not), so
// errors are compared by their presence; before a body error, the bytes delivered are the same
// stream (one is a prefix of the other).
bool same_outcome(const outcome& a, const outcome& b) {
    if (bool(a.head_ec) != bool(b.head_ec)) {
        return false;
    }
    if (a.head_ec) {
        return true;
    }
    if (a.status != b.status || a.fields != b.fields || bool(a.body_ec) != bool(b.body_ec)) {
        return false;
    }
    if (!a.body_ec) {
        return a.done == b.done && a.body == b.body;
    }
    const auto n = std::min(a.body.size(), b.body.size());
    return a.body.compare(0, n, b.body, 0, n) == 0;
}

outcome exchange(std::string_view wire, bool head_method, std::size_t body_buffer,
                 std::uint32_t seed) {
    fake_connection conn(wire, seed);
    outcome out;
    // send_and_read_head: a fresh parser per head, interim 1xx heads skipped.
    std::unique_ptr<upstream::response_parser> parser;
    for (;;) {
        parser = std::make_unique<upstream::response_parser>();
        parser->header_limit(max_response_head);
        parser->body_limit(boost::none);
        if (head_method) {
            parser->skip(true);
        }
        out.head_ec = conn.read(*parser, true);
        if (out.head_ec) {
            return out;
        }
        FUZZ_CHECK(parser->is_header_done());
        const unsigned status = parser->status();
        if (status / 100 != 1 || status == 101) {
            break;  // attempt.cpp turns 101 and statuses outside 100-599 into 502s
        }
    }
    out.status = parser->status();
    for (const auto& f : parser->fields()) {
        out.fields.push_back(std::string(f.name_text) + ": " + std::string(f.value));
    }
    // fetch: what came with the head, then read_body_piece until done or an error.
    std::vector<char> buffer(body_buffer);
    error_code ec;
    while (!ec && !parser->is_done()) {
        parser->body_into(buffer);
        if (!conn.parse(*parser, false, ec)) {
            ec = conn.read(*parser, false);
        }
        const auto got = parser->body_taken();
        FUZZ_CHECK(got <= buffer.size());
        out.body.append(buffer.data(), got);
        if (ec == beast_http::error::need_buffer) {
            ec = {};
        }
    }
    out.body_ec = ec;
    out.done = parser->is_done();
    // The pool's decision (exchange.cpp release_connection): a connection goes back only when
    // nothing at all followed the answer, so no byte of it can be read as another answer.
    if (!ec && out.done &&
        upstream::reuse_after(*parser, head_method, conn.buffered()) == upstream::reuse::yes) {
        FUZZ_CHECK(conn.buffered() == 0);
        out.reusable = conn.left() == 0;
    }
    FUZZ_CHECK(out.body.size() <= wire.size());
    if (const auto declared = parser->content_length()) {
        FUZZ_CHECK(out.body.size() <= *declared);
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) {
        return 0;
    }
    const bool head_method = (data[0] & 1) != 0;
    const std::size_t body_buffer = 1 + data[1] % 64;
    const std::uint32_t seed = data[2];
    const auto wire = fuzz::as_text(data + 3, size - 3);
    const auto chosen = exchange(wire, head_method, body_buffer, seed);
    // The same bytes all at once into the production-sized buffer (read_chunk, 16 KiB).
    const auto whole = exchange(wire, head_method, 16 * 1024, 0);
    if (!same_outcome(chosen, whole)) {
        chosen.print("in pieces");
        whole.print("at once");
    }
    FUZZ_CHECK(same_outcome(chosen, whole));
    return 0;
}
