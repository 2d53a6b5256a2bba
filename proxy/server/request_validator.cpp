#include "server/request_validator.hpp"

#include "http/header_rules.hpp"
#include "ops/errors.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace coalescer::server {
namespace http = boost::beast::http;
using boost::system::error_code;
using http_rules::iequals;
using ops::proxy_errc;

namespace {

std::size_t count(const request_header& h, http::field f) {
    const auto range = h.equal_range(f);
    return static_cast<std::size_t>(std::distance(range.first, range.second));
}

std::size_t count(const request_header& h, std::string_view name) {
    const auto range = h.equal_range(name);
    return static_cast<std::size_t>(std::distance(range.first, range.second));
}

error_code check_transfer_encoding(const request_header& h) {
    const auto te_lines = count(h, http::field::transfer_encoding);
    if (te_lines == 0) {
        return {};
    }
    if (count(h, http::field::content_length) != 0 || h.version() < 11 || te_lines > 1) {
        return proxy_errc::bad_request;  // H-01, H-03, H-02 (two TE lines)
    }
    std::vector<std::string_view> codings;
    http_rules::for_each_list_item(h[http::field::transfer_encoding],
                                   [&](std::string_view c) { codings.push_back(c); });
    if (codings.size() == 1 && iequals(codings.front(), "chunked")) {
        return {};
    }
    const bool has_chunked =
        std::any_of(codings.begin(), codings.end(), [](auto c) { return iequals(c, "chunked"); });
    const bool all_tokens =
        std::all_of(codings.begin(), codings.end(), [](auto c) { return http_rules::is_token(c); });
    if (has_chunked || !all_tokens || codings.empty()) {
        return proxy_errc::bad_request;  // chunked not alone/last, or garbage
    }
    return proxy_errc::unsupported_coding;  // gzip, identity, …: 501
}

error_code check_content_length(const request_header& h) {
    const auto lines = count(h, http::field::content_length);
    if (lines == 0) {
        return {};
    }
    const auto value = h[http::field::content_length];
    if (lines > 1 || value.empty() || value.size() > 18 ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return proxy_errc::bad_request;  // H-04, H-05, H-06
    }
    return {};
}

error_code check_target(const request_header& h) {
    if (h.method() == http::verb::connect) {
        return proxy_errc::method_not_allowed;
    }
    const auto target = h.target();
    if (target.empty() || target.front() != '/') {
        return proxy_errc::bad_request;  // asterisk-form, absolute-form (H-12, H-13)
    }
    const bool clean = std::none_of(target.begin(), target.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f || c == '#';
    });
    return clean ? error_code{} : error_code(proxy_errc::bad_request);
}

error_code check_host(const request_header& h) {
    const auto lines = count(h, http::field::host);
    if (lines > 1 || (lines == 0 && h.version() >= 11)) {
        return proxy_errc::bad_request;
    }
    const auto host = h[http::field::host];
    const bool valid = std::all_of(host.begin(), host.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) ||
               std::string_view("-._~:[]%!$&'()*+,;=").find(c) != std::string_view::npos;
    });
    return valid ? error_code{} : error_code(proxy_errc::bad_request);
}

// H-15: `Connection: x-api-key` would make a hop-by-hop header of a credential or of framing.
error_code check_connection_tokens(const request_header& h, const ops::config& cfg) {
    error_code result;
    for (auto it = h.find(http::field::connection);
         it != h.end() && it->name() == http::field::connection; ++it) {
        http_rules::for_each_list_item(it->value(), [&](std::string_view token) {
            static constexpr std::string_view protected_names[] = {
                "authorization", "x-api-key", "host", "content-length", "content-type"};
            bool bad = std::any_of(std::begin(protected_names), std::end(protected_names),
                                   [&](auto n) { return iequals(n, token); });
            for (const auto& id : cfg.coalesce.identity_headers)
                bad = bad || iequals(id, token);
            if (bad)
                result = proxy_errc::bad_request;
        });
    }
    return result;
}

std::string_view bearer_token(std::string_view authorization) {
    constexpr std::string_view scheme = "bearer ";
    if (authorization.size() > scheme.size() &&
        iequals(authorization.substr(0, scheme.size()), scheme)) {
        return http_rules::trim(authorization.substr(scheme.size()));
    }
    return authorization;
}

// H-17: the tenant is exactly one value, never "the first of several".
error_code check_credentials(const request_header& h, const ops::config& cfg) {
    for (const auto& name : cfg.coalesce.identity_headers) {
        if (count(h, name) > 1) {
            return proxy_errc::ambiguous_credentials;
        }
    }
    const auto auth = h.find(http::field::authorization);
    const auto key = h.find("x-api-key");
    if (auth != h.end() && key != h.end() &&
        bearer_token(auth->value()) != http_rules::trim(key->value())) {
        return proxy_errc::ambiguous_credentials;
    }
    return {};
}

}  // namespace

error_code check_raw_head(std::string_view head) {
    const auto line_end = head.find("\r\n");
    if (line_end == std::string_view::npos || line_end > max_request_line) {
        return line_end == std::string_view::npos ? error_code(proxy_errc::bad_request)
                                                  : error_code(proxy_errc::uri_too_long);
    }
    // A well-formed "HTTP/x.y" that is neither 1.0 nor 1.1: 505 rather than Beast's 400.
    const auto line = head.substr(0, line_end);
    if (const auto sp = line.rfind(' '); sp != std::string_view::npos) {
        const auto version = line.substr(sp + 1);
        if (version.size() == 8 && version.starts_with("HTTP/") &&
            std::isdigit(static_cast<unsigned char>(version[5])) && version[6] == '.' &&
            std::isdigit(static_cast<unsigned char>(version[7])) && version != "HTTP/1.0" &&
            version != "HTTP/1.1") {
            return proxy_errc::unsupported_version;
        }
    }
    // Line by line with memchr (every request pays for this scan): within a line a CR may only
    // end it and a NUL may not appear at all; each LF needs its CR and may not start a folded
    // continuation.
    std::size_t fields = 0;
    const char* p = head.data();
    const char* const end = p + head.size();
    while (p < end) {
        const auto* lf = static_cast<const char*>(std::memchr(p, '\n', end - p));
        const char* const line_end = lf != nullptr ? lf : end;
        const auto* cr = static_cast<const char*>(std::memchr(p, '\r', line_end - p));
        if (std::memchr(p, '\0', line_end - p) != nullptr) {
            return proxy_errc::bad_request;
        }
        if (cr != nullptr && (cr != line_end - 1 || lf == nullptr)) {
            return proxy_errc::bad_request;  // bare CR
        }
        if (lf == nullptr) {
            break;
        }
        if (cr == nullptr) {
            return proxy_errc::bad_request;  // bare LF
        }
        p = lf + 1;
        if (p < end && (*p == ' ' || *p == '\t')) {
            return proxy_errc::bad_request;  // obs-fold (H-08)
        }
        if (p < end && *p != '\r' && ++fields > max_header_fields) {
            return proxy_errc::headers_too_large;
        }
    }
    return {};
}

error_code check_request(const request_header& h, const ops::config& cfg) {
    if (h.version() != 10 && h.version() != 11) {
        return proxy_errc::unsupported_version;
    }
    for (const auto& field : h) {
        const auto name = field.name_string();
        if (name.find('_') != std::string_view::npos || !http_rules::is_token(name)) {
            return proxy_errc::bad_request;  // H-16
        }
    }
    if (auto ec = check_target(h))
        return ec;
    if (auto ec = check_host(h))
        return ec;
    if (auto ec = check_transfer_encoding(h))
        return ec;
    if (auto ec = check_content_length(h))
        return ec;
    if (auto ec = check_connection_tokens(h, cfg))
        return ec;
    if (auto ec = check_credentials(h, cfg))
        return ec;
    if (const auto expect = h.find(http::field::expect); expect != h.end()) {
        if (count(h, http::field::expect) > 1 ||
            !iequals(http_rules::trim(expect->value()), "100-continue")) {
            return proxy_errc::expectation_failed;
        }
    }
    return {};
}

std::optional<std::uint64_t> declared_length(const request_header& h) {
    if (h.find(http::field::transfer_encoding) != h.end()) {
        return std::nullopt;
    }
    const auto value = h[http::field::content_length];
    std::uint64_t n = 0;
    std::from_chars(value.data(), value.data() + value.size(), n);
    return n;
}

}  // namespace coalescer::server
