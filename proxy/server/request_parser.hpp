// A client request as the sidecar keeps it, and its parser: Beast's HTTP/1.1 state machine
// (request line, fields, Content-Length and chunked bodies, header and body limits) with the
// method, target and fields copied into the session's arena as one flat list. Beast's own
// `parser` stores fields in a case-insensitive multiset, a node and a tree insertion each, for
// a head the sidecar reads front to back: the checks, the key, the upstream request.
#pragma once

#include "http/field_list.hpp"

#include <boost/beast/http/basic_parser.hpp>
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

class request_parser final : public boost::beast::http::basic_parser<true> {
  public:
    // The method, target and fields are copied into `arena`, which must outlive the request.
    explicit request_parser(std::pmr::memory_resource* arena);
    request_parser(const request_parser&) = delete;
    request_parser& operator=(const request_parser&) = delete;

    client_request& get() noexcept { return request_; }

  private:
    void on_request_impl(boost::beast::http::verb method, boost::beast::string_view method_str,
                         boost::beast::string_view target, int version,
                         boost::beast::error_code& ec) override;
    void on_response_impl(int, boost::beast::string_view, int,
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

    client_request request_;
};

}  // namespace coalescer::server
