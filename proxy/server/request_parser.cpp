#include "server/request_parser.hpp"

#include <boost/beast/http/error.hpp>

namespace coalescer::server {
namespace beast = boost::beast;
namespace beast_http = beast::http;

request_parser::request_parser(std::pmr::memory_resource* arena) : request_(arena) {}

void request_parser::on_request_impl(beast_http::verb method, beast::string_view method_str,
                                     beast::string_view target, int version, beast::error_code&) {
    request_.method_ = method;
    request_.method_text_ = request_.fields_.keep(method_str);
    request_.target_ = request_.fields_.keep(target);
    request_.version_ = static_cast<unsigned>(version);
}

void request_parser::on_response_impl(int, beast::string_view, int, beast::error_code& ec) {
    ec = beast_http::error::bad_version;  // a request parser never sees a status line
}

void request_parser::on_field_impl(beast_http::field name, beast::string_view name_string,
                                   beast::string_view value, beast::error_code&) {
    // Beast reports a chunked body's trailer fields here too, after the head was checked and
    // keyed: they would reach the provider as headers (a second Authorization, say) unchecked.
    // The body goes upstream with a Content-Length, so trailers are dropped (RFC 9110 §6.5.1).
    if (is_header_done()) {
        return;
    }
    request_.fields_.add(name, name_string, value);
}

void request_parser::on_header_impl(beast::error_code&) {}

void request_parser::on_body_init_impl(boost::optional<std::uint64_t> const& content_length,
                                       beast::error_code&) {
    // The parser already refused a declared length over body_limit.
    if (content_length) {
        request_.body_.reserve(static_cast<std::size_t>(*content_length));
    }
}

std::size_t request_parser::on_body_impl(beast::string_view body, beast::error_code&) {
    request_.body_.append(body.data(), body.size());
    return body.size();
}

void request_parser::on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) {}

std::size_t request_parser::on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                               beast::error_code& ec) {
    return on_body_impl(body, ec);
}

void request_parser::on_finish_impl(beast::error_code&) {}

}  // namespace coalescer::server
