// An upstream response's parser (http/parser_base.hpp), with the head's fields in a small arena
// of its own: an upstream head is read once, front to back, by the code that turns it into the
// subscribers' head. The body goes to a caller's buffer, as with Beast's buffer_body.
#pragma once

#include "http/field_list.hpp"
#include "http/parser_base.hpp"

#include <boost/beast/core/flat_buffer.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <memory_resource>
#include <span>
#include <string_view>

namespace coalescer::upstream {

using http::header_field;

class response_parser final : public http::parser_base<response_parser, false> {
  public:
    response_parser() = default;

    // One parser is made per upstream response, and it is larger than what malloc keeps in its
    // per-thread cache (1 KiB): freed parsers' memory is kept per thread for the next one.
    static void* operator new(std::size_t size);
    static void operator delete(void* memory, std::size_t size) noexcept;

    unsigned status() const noexcept { return status_; }
    std::string_view reason() const noexcept { return reason_; }
    std::span<const header_field> fields() const noexcept { return fields_.all(); }
    // The first field's value with this name (any case), or nullptr.
    const std::string_view* find(boost::beast::http::field name) const noexcept {
        return fields_.find(name);
    }
    const std::string_view* find(std::string_view name) const noexcept {
        return fields_.find(name);
    }

    // Body bytes are copied into `buffer` until it is full (then put() stops with
    // beast_http::error::need_buffer); body_taken() says how many went in since.
    void body_into(std::span<char> buffer) noexcept;
    std::size_t body_taken() const noexcept { return body_size_ - body_left_; }

  private:
    friend parser_base;

    // The head was read before the body: a chunked answer's trailer fields only follow it in
    // the list.
    static constexpr bool keeps_trailer_fields = true;

    http::field_list& head_fields() noexcept { return fields_; }
    void on_start_line(int status, std::string_view reason, int version);
    void on_body_start(const boost::optional<std::uint64_t>&) noexcept {}  // see body_into()
    // Here rather than in response_parser.cpp: called for every piece of body, it stays inline.
    std::size_t on_body(std::string_view body, boost::beast::error_code& ec) {
        const auto n = std::min(body.size(), body_left_);
        if (n != 0) {
            std::memcpy(body_ + (body_size_ - body_left_), body.data(), n);
            body_left_ -= n;
        }
        if (n != body.size()) {
            ec = boost::beast::http::error::need_buffer;
        }
        return n;
    }

    // A typical provider head fits; a larger one continues on the heap.
    std::array<std::byte, 1536> storage_;
    std::pmr::monotonic_buffer_resource arena_{storage_.data(), storage_.size()};
    http::field_list fields_{&arena_};
    unsigned status_ = 0;
    std::string_view reason_;
    char* body_ = nullptr;
    std::size_t body_size_ = 0;
    std::size_t body_left_ = 0;
};

// Puts what `buffer` holds to `parser` and consumes what it took: the one step of every read of
// an upstream answer (connection.cpp), without a socket (the fuzzers call it too). True when
// the caller's read is over: the head is done (`header_only`), a piece of body arrived, the
// message ended, or `ec` says what broke; false when more bytes are needed.
bool feed(response_parser& parser, boost::beast::flat_buffer& buffer, bool header_only,
          boost::beast::error_code& ec);

// Whether the connection an answer came on may carry the next request, once the answer was
// read whole and `bytes_left` bytes were read past it.
enum class reuse {
    yes,
    closes,       // the upstream ends it (Connection: close, HTTP/1.0, body until the close)
    out_of_step,  // bytes past the answer, or content announced that a bodiless answer can't
                  // have (HEAD, 204, 304): whether it comes later is unknowable
};
reuse reuse_after(const response_parser& parser, bool head_method, std::size_t bytes_left);

}  // namespace coalescer::upstream
