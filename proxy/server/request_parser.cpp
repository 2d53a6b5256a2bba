#include "server/request_parser.hpp"

namespace coalescer::server {

void request_parser::on_start_line(boost::beast::http::verb method, std::string_view method_text,
                                   std::string_view target, int version) {
    request_.method_ = method;
    request_.method_text_ = request_.fields_.keep(method_text);
    request_.target_ = request_.fields_.keep(target);
    request_.version_ = static_cast<unsigned>(version);
}

void request_parser::on_body_start(const boost::optional<std::uint64_t>& content_length) {
    // The parser already refused a declared length over body_limit.
    if (content_length) {
        request_.body_.reserve(static_cast<std::size_t>(*content_length));
    }
}

}  // namespace coalescer::server
