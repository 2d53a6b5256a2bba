#include "server/request_framing.hpp"

#include "ops/errors.hpp"

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

namespace coalescer::server {
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using ops::proxy_errc;

std::size_t find_head_end(std::string_view data, std::size_t scanned) {
    const auto from = scanned > 3 ? scanned - 3 : 0;
    const auto crlf = data.find("\r\n\r\n", from);
    if (crlf != std::string_view::npos) {
        return crlf + 4;
    }
    const auto lf = data.find("\n\n", from);
    return lf == std::string_view::npos ? 0 : lf + 2;
}

error_code client_error_of(error_code ec) {
    if (ec == beast_http::error::header_limit)
        return proxy_errc::headers_too_large;
    if (ec == beast_http::error::body_limit)
        return proxy_errc::body_too_large;
    if (ec == beast::error::timeout)
        return proxy_errc::body_timeout;
    return proxy_errc::bad_request;
}

body_framing::body_framing(const ops::limits_config& limits)
    : budget_(limits.max_request_body + limits.max_request_body / 16 + 64 * 1024),
      max_pending_(limits.max_header_bytes) {}

bool body_framing::feed(request_parser& parser, beast::flat_buffer& buffer, error_code& ec) {
    ec = {};
    while (!parser.is_done() && buffer.size() != 0) {
        error_code pec;
        const auto used = parser.put_from(buffer, pec);
        consumed_ += used;
        if (pec == beast_http::error::need_more || (!pec && used == 0)) {
            break;
        }
        if (pec) {
            ec = client_error_of(pec);
            return false;
        }
    }
    if (parser.is_done()) {
        return true;
    }
    if (buffer.size() > max_pending_) {
        ec = proxy_errc::framing_too_long;
    } else if (consumed_ + buffer.size() >= budget_) {
        ec = proxy_errc::body_too_large;
    }
    return false;
}

std::size_t body_framing::room(const beast::flat_buffer& buffer) const noexcept {
    const auto taken = consumed_ + buffer.size();
    return taken >= budget_ ? 0 : budget_ - taken;
}

}  // namespace coalescer::server
