#include "server/request_validator.hpp"

#include "http/header_rules.hpp"
#include "ops/errors.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <optional>

namespace coalescer::server {
namespace http = boost::beast::http;
using boost::system::error_code;
using http_rules::iequals;
using ops::proxy_errc;

namespace {

// What the checks need from the fields, gathered in one pass over them: each lookup in Beast's
// fields is a search with case-insensitive string compares, and the checks made a dozen.
struct head_facts {
    std::size_t te_lines = 0, cl_lines = 0, host_lines = 0, expect_lines = 0;
    std::string_view te, cl, host, expect;  // the first line of each
    std::optional<std::string_view> authorization, api_key;
    bool protected_connection_token = false;  // H-15
    bool repeated_identity = false;           // H-17
};

// H-15: `Connection: x-api-key` would make a hop-by-hop header of a credential or of framing.
bool names_protected(std::string_view connection, const ops::config& cfg) {
    bool bad = false;
    http_rules::for_each_list_item(connection, [&](std::string_view token) {
        static constexpr std::string_view protected_names[] = {"authorization", "x-api-key", "host",
                                                               "content-length", "content-type"};
        bad = bad || std::any_of(std::begin(protected_names), std::end(protected_names),
                                 [&](auto n) { return iequals(n, token); });
        for (const auto& id : cfg.coalesce.identity_headers)
            bad = bad || iequals(id, token);
    });
    return bad;
}

void note(std::size_t& lines, std::string_view& first, std::string_view value) {
    if (lines++ == 0)
        first = value;
}

// Fails on the first field name with an underscore (H-16).
error_code gather(const client_request& h, const ops::config& cfg, head_facts& f) {
    const auto& ids = cfg.coalesce.identity_headers;
    // Identity headers seen so far, by position in the configured list (a list longer than
    // this is counted with lookups below).
    std::array<std::uint8_t, 32> id_lines{};
    for (const auto& field : h.fields()) {
        // The parser took only token characters for a name (Beast's parse_field); an
        // underscore is one of them.
        const auto name = field.name_text;
        if (name.find('_') != std::string_view::npos) {
            return proxy_errc::bad_request;
        }
        const auto value = field.value;
        switch (field.name) {
            case http::field::transfer_encoding:
                note(f.te_lines, f.te, value);
                break;
            case http::field::content_length:
                note(f.cl_lines, f.cl, value);
                break;
            case http::field::host:
                note(f.host_lines, f.host, value);
                break;
            case http::field::expect:
                note(f.expect_lines, f.expect, value);
                break;
            case http::field::authorization:
                if (!f.authorization)
                    f.authorization = value;
                break;
            case http::field::connection:
                f.protected_connection_token =
                    f.protected_connection_token || names_protected(value, cfg);
                break;
            default:
                if (!f.api_key && iequals(name, "x-api-key"))
                    f.api_key = value;
                break;
        }
        for (std::size_t i = 0; i < ids.size() && i < id_lines.size(); ++i) {
            if (iequals(name, ids[i]) && ++id_lines[i] > 1)
                f.repeated_identity = true;
        }
    }
    for (std::size_t i = id_lines.size(); i < ids.size(); ++i) {
        const auto lines =
            std::count_if(h.fields().begin(), h.fields().end(),
                          [&](const auto& field) { return iequals(field.name_text, ids[i]); });
        f.repeated_identity = f.repeated_identity || lines > 1;
    }
    return {};
}

error_code check_transfer_encoding(const client_request& h, const head_facts& f) {
    if (f.te_lines == 0) {
        return {};
    }
    if (f.cl_lines != 0 || h.version() < 11 || f.te_lines > 1) {
        return proxy_errc::bad_request;  // H-01, H-03, H-02 (two TE lines)
    }
    std::vector<std::string_view> codings;
    http_rules::for_each_list_item(f.te, [&](std::string_view c) { codings.push_back(c); });
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

error_code check_content_length(const head_facts& f) {
    if (f.cl_lines == 0) {
        return {};
    }
    const auto value = f.cl;
    if (f.cl_lines > 1 || value.empty() || value.size() > 18 ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return proxy_errc::bad_request;  // H-04, H-05, H-06
    }
    return {};
}

error_code check_target(const client_request& h) {
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

error_code check_host(const client_request& h, const head_facts& f) {
    if (f.host_lines > 1 || (f.host_lines == 0 && h.version() >= 11)) {
        return proxy_errc::bad_request;
    }
    static constexpr auto allowed = [] {
        std::array<bool, 256> table{};
        for (int c = 0; c < 256; ++c) {
            table[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        }
        for (const char c : std::string_view("-._~:[]%!$&'()*+,;=")) {
            table[static_cast<unsigned char>(c)] = true;
        }
        return table;
    }();
    const bool valid = std::all_of(f.host.begin(), f.host.end(),
                                   [](char c) { return allowed[static_cast<unsigned char>(c)]; });
    return valid ? error_code{} : error_code(proxy_errc::bad_request);
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
error_code check_credentials(const head_facts& f) {
    if (f.repeated_identity) {
        return proxy_errc::ambiguous_credentials;
    }
    if (f.authorization && f.api_key &&
        bearer_token(*f.authorization) != http_rules::trim(*f.api_key)) {
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

error_code check_request(const client_request& h, const ops::config& cfg) {
    if (h.version() != 10 && h.version() != 11) {
        return proxy_errc::unsupported_version;
    }
    head_facts f;
    if (auto ec = gather(h, cfg, f))
        return ec;
    if (auto ec = check_target(h))
        return ec;
    if (auto ec = check_host(h, f))
        return ec;
    if (auto ec = check_transfer_encoding(h, f))
        return ec;
    if (auto ec = check_content_length(f))
        return ec;
    if (f.protected_connection_token)
        return proxy_errc::bad_request;
    if (auto ec = check_credentials(f))
        return ec;
    if (f.expect_lines > 1 ||
        (f.expect_lines == 1 && !iequals(http_rules::trim(f.expect), "100-continue"))) {
        return proxy_errc::expectation_failed;
    }
    return {};
}

std::optional<std::uint64_t> declared_length(const client_request& h) {
    // A scan by field code: cheaper than two searches of the case-insensitive index.
    std::string_view length;
    bool have_length = false;
    for (const auto& field : h.fields()) {
        if (field.name == http::field::transfer_encoding) {
            return std::nullopt;
        }
        if (field.name == http::field::content_length && !have_length) {
            length = field.value;
            have_length = true;
        }
    }
    std::uint64_t n = 0;
    std::from_chars(length.data(), length.data() + length.size(), n);
    return n;
}

}  // namespace coalescer::server
