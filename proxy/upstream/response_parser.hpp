// An upstream response's parser: Beast's HTTP/1.1 state machine (framing, chunked coding,
// limits) with the head kept as a flat list of fields in a small arena of its own. Beast's
// `parser` stores fields in a case-insensitive multiset, one node and a tree insertion each;
// an upstream head is read once, front to back, by the code that turns it into the
// subscribers' head. The body goes to a caller's buffer, as with Beast's buffer_body.
#pragma once

#include "http/field_list.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

#include <array>
#include <cstddef>
#include <memory_resource>
#include <span>
#include <string_view>

namespace coalescer::upstream {

using http::header_field;

class response_parser final : public boost::beast::http::basic_parser<false> {
  public:
    response_parser() = default;

    response_parser(const response_parser&) = delete;  // the fields point into its arena
    response_parser& operator=(const response_parser&) = delete;

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
    void on_request_impl(boost::beast::http::verb, boost::beast::string_view,
                         boost::beast::string_view, int, boost::beast::error_code& ec) override;
    void on_response_impl(int code, boost::beast::string_view reason, int version,
                          boost::beast::error_code& ec) override;
    void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                       boost::beast::string_view value, boost::beast::error_code& ec) override;
    void on_header_impl(boost::beast::error_code& ec) override;
    void on_body_init_impl(boost::optional<std::uint64_t> const& content_length,
                           boost::beast::error_code& ec) override;
    std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code& ec) override;
    void on_chunk_header_impl(std::uint64_t size, boost::beast::string_view extensions,
                              boost::beast::error_code& ec) override;
    std::size_t on_chunk_body_impl(std::uint64_t remain, boost::beast::string_view body,
                                   boost::beast::error_code& ec) override;
    void on_finish_impl(boost::beast::error_code& ec) override;

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
