// One client's response on its connection: the framing of its body (Content-Length as the
// answer's, or chunked), and writes that send what the socket takes at once and wait for the
// rest no longer than write_timeout. The relay (pass, bypass) and every subscriber of a flight
// write through it, so framing, first-byte timing and telling a slow client from a gone one are
// decided in one place.
#pragma once

#include "net/deadline_sweep.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/container/small_vector.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace coalescer::http {

enum class write_outcome {
    written,
    slow,  // the client took nothing for write_timeout: dropped so nobody waits on it
    gone,  // the connection failed (reset, closed)
};

template <class Stream>
class response_writer {
  public:
    using clock = std::chrono::steady_clock;

    response_writer(Stream& stream, net::socket_deadline& deadline,
                    std::chrono::milliseconds write_timeout) noexcept
        : stream_(stream), deadline_(deadline), write_timeout_(write_timeout) {}

    // Body bytes go out as chunks (a streamed answer to an HTTP/1.1 client) or as they are.
    void set_chunked(bool chunked) noexcept { chunked_ = chunked; }

    // Parts of the next write, in order; the bytes must stay valid until write() completes.
    void add_head(std::string_view text) { add(text, kind::head); }
    void add_body(std::string_view bytes) {
        if (!bytes.empty())
            add(bytes, kind::body);
    }
    void add_end() {
        if (chunked_)
            add({}, kind::end);  // the last chunk
    }
    bool empty() const noexcept { return parts_.empty(); }

    // Writes what was queued; nothing is queued after it.
    boost::asio::awaitable<write_outcome> write();

    std::optional<clock::time_point> first_byte() const noexcept { return first_byte_; }
    std::uint64_t body_bytes() const noexcept { return body_bytes_; }

  private:
    enum class kind : std::uint8_t { head, body, end };
    struct part {
        std::string_view bytes;
        kind what;
    };
    void add(std::string_view bytes, kind what) { parts_.push_back({bytes, what}); }

    Stream& stream_;
    net::socket_deadline& deadline_;
    std::chrono::milliseconds write_timeout_;
    bool chunked_ = false;
    // Inline room for the usual write (a head, a piece, the end): no allocation per response.
    boost::container::small_vector<part, 4> parts_;
    boost::container::small_vector<boost::asio::const_buffer, 8> buffers_;
    boost::container::small_vector<std::array<char, 20>, 2> chunk_lines_;
    std::optional<clock::time_point> first_byte_;
    std::uint64_t body_bytes_ = 0;
};

}  // namespace coalescer::http
