// A client request as the sidecar keeps it, and its parser (http/parser_base.hpp), which copies
// the method, target and fields into the session's arena: the head is read front to back by the
// checks, the key and the upstream request, and the arena is reused request after request.
#pragma once

#include "http/field_list.hpp"
#include "http/parser_base.hpp"

#include <boost/beast/http/verb.hpp>

#include <memory_resource>
#include <span>
#include <string>
#include <string_view>

namespace coalescer::server {

using request_field = http::header_field;

class client_request {
  public:
    explicit client_request(std::pmr::memory_resource* arena) : fields_(arena) {}

    boost::beast::http::verb method() const noexcept { return method_; }
    std::string_view method_string() const noexcept { return method_text_; }
    std::string_view target() const noexcept { return target_; }
    unsigned version() const noexcept { return version_; }  // 10 or 11
    std::span<const request_field> fields() const noexcept { return fields_.all(); }
    // The first value of a field (by code, or by name in any case), or nullptr.
    const std::string_view* find(boost::beast::http::field name) const noexcept {
        return fields_.find(name);
    }
    const std::string_view* find(std::string_view name) const noexcept {
        return fields_.find(name);
    }
    // Replaces the target (copied into the request's arena).
    void set_target(std::string_view target) { target_ = fields_.keep(target); }
    std::string& body() noexcept { return body_; }
    const std::string& body() const noexcept { return body_; }

  private:
    friend class request_parser;
    boost::beast::http::verb method_ = boost::beast::http::verb::unknown;
    std::string_view method_text_;
    std::string_view target_;
    unsigned version_ = 11;
    http::field_list fields_;
    std::string body_;
};

class request_parser final : public http::parser_base<request_parser, true> {
  public:
    // The method, target and fields are copied into `arena`, which must outlive the request.
    explicit request_parser(std::pmr::memory_resource* arena) : request_(arena) {}

    client_request& get() noexcept { return request_; }

  private:
    friend parser_base;

    // A chunked body's trailer fields arrive after the head was checked and keyed: they would
    // reach the provider as headers (a second Authorization, say) unchecked. The body goes
    // upstream with a Content-Length, so trailers are dropped (RFC 9110 §6.5.1).
    static constexpr bool keeps_trailer_fields = false;

    http::field_list& head_fields() noexcept { return request_.fields_; }
    void on_start_line(boost::beast::http::verb method, std::string_view method_text,
                       std::string_view target, int version);
    void on_body_start(const boost::optional<std::uint64_t>& content_length);
    // Here rather than in request_parser.cpp: called for every piece of body, it stays inline.
    std::size_t on_body(std::string_view body, boost::beast::error_code&) {
        request_.body_.append(body.data(), body.size());
        return body.size();
    }

    client_request request_;
};

}  // namespace coalescer::server
