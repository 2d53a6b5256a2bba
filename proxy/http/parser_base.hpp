// What the sidecar's request and response parsers share (server/request_parser.hpp,
// upstream/response_parser.hpp): Beast's HTTP/1.1 state machine (framing, chunked coding,
// header and body limits) with the head's fields copied into an arena as one flat list
// (field_list.hpp) instead of Beast's multiset, the other kind of start line refused, and one
// body callback whether the body is chunked or not.
//
// Derived is the parser itself (CRTP, so that the calls per field and per piece of body are
// direct), a friend of this base, with:
//   static constexpr bool keeps_trailer_fields;  // a chunked body's trailer fields join the list
//   http::field_list& head_fields() noexcept;
//   void on_start_line(verb, method, target, version);  // requests
//   void on_start_line(status, reason, version);        // responses
//   void on_body_start(const boost::optional<std::uint64_t>& content_length);
//   std::size_t on_body(std::string_view body, boost::beast::error_code& ec);
#pragma once

#include "http/field_list.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace coalescer::http {

template <class Derived, bool is_request>
class parser_base : public boost::beast::http::basic_parser<is_request> {
  public:
    parser_base(const parser_base&) = delete;  // the fields point into an arena
    parser_base& operator=(const parser_base&) = delete;

    // Puts what `buffer` holds to the parser and consumes what it took; returns how much.
    std::size_t put_from(boost::beast::flat_buffer& buffer, boost::beast::error_code& ec) {
        const auto used = this->put(buffer.data(), ec);
        buffer.consume(used);
        return used;
    }

  protected:
    parser_base() = default;

  private:
    using string_view = boost::beast::string_view;
    using error_code = boost::beast::error_code;

    Derived& derived() noexcept { return static_cast<Derived&>(*this); }

    void on_request_impl(boost::beast::http::verb method, string_view method_text,
                         string_view target, int version, error_code& ec) final {
        if constexpr (is_request) {
            derived().on_start_line(method, method_text, target, version);
        } else {
            ec = boost::beast::http::error::bad_method;  // a response parser never sees one
        }
    }
    void on_response_impl(int status, string_view reason, int version, error_code& ec) final {
        if constexpr (is_request) {
            ec = boost::beast::http::error::bad_version;  // a request parser never sees one
        } else {
            derived().on_start_line(status, reason, version);
        }
    }
    void on_field_impl(boost::beast::http::field name, string_view name_text, string_view value,
                       error_code&) final {
        // Beast reports a chunked body's trailer fields here too, after the head.
        if (!Derived::keeps_trailer_fields && this->is_header_done()) {
            return;
        }
        derived().head_fields().add(name, name_text, value);
    }
    void on_header_impl(error_code&) final {}
    void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                           error_code&) final {
        derived().on_body_start(content_length);
    }
    std::size_t on_body_impl(string_view body, error_code& ec) final {
        return derived().on_body(body, ec);
    }
    void on_chunk_header_impl(std::uint64_t, string_view, error_code&) final {}
    std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) final {
        return derived().on_body(body, ec);
    }
    void on_finish_impl(error_code&) final {}
};

}  // namespace coalescer::http
