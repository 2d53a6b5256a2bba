#include "server/request_validator.hpp"

#include "http/header_rules.hpp"
#include "ops/errors.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <optional>
#include <span>
#include <string>

namespace coalescer::server {
namespace beast_http = boost::beast::http;
using boost::system::error_code;
using http::iequals;
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

// H-15: `Connection: x-api-key` would make a hop-by-hop header of a credential, of a header
// that changes the answer, or of framing: dropped on the way upstream while still keyed.
bool names_protected(std::string_view connection, const coalesce::tenant_headers& tenants) {
    bool bad = false;
    http::for_each_list_item(connection, [&](std::string_view token) {
        static constexpr std::string_view protected_names[] = {"host", "content-length",
                                                               "content-type"};
        bad = bad || tenants.is_identity(token) || tenants.is_vary(token) ||
              std::any_of(std::begin(protected_names), std::end(protected_names),
                          [&](auto n) { return iequals(n, token); });
    });
    return bad;
}

void note(std::size_t& lines, std::string_view& first, std::string_view value) {
    if (lines++ == 0)
        first = value;
}

// A tenant header on more than one line (H-17): the tenant must be exactly one value.
bool repeats_a_name(std::span<const std::string_view> names) {
    for (std::size_t i = 0; i < names.size(); ++i)
        for (std::size_t j = i + 1; j < names.size(); ++j)
            if (iequals(names[i], names[j]))
                return true;
    return false;
}

// Fails on the first field name with an underscore (H-16).
error_code gather(const client_request& h, const coalesce::tenant_headers& tenants, head_facts& f) {
    // Tenant header names seen; a request has a few at most (a hundred fields at worst).
    std::array<std::string_view, max_header_fields + 1> identities;
    std::size_t identity_count = 0;
    for (const auto& field : h.fields()) {
        // The parser took only token characters for a name (Beast's parse_field); an
        // underscore is one of them.
        const auto name = field.name_text;
        if (name.find('_') != std::string_view::npos) {
            return proxy_errc::bad_request;
        }
        const auto value = field.value;
        switch (field.name) {
            case beast_http::field::transfer_encoding:
                note(f.te_lines, f.te, value);
                break;
            case beast_http::field::content_length:
                note(f.cl_lines, f.cl, value);
                break;
            case beast_http::field::host:
                note(f.host_lines, f.host, value);
                break;
            case beast_http::field::expect:
                note(f.expect_lines, f.expect, value);
                break;
            case beast_http::field::authorization:
                if (!f.authorization)
                    f.authorization = value;
                break;
            case beast_http::field::connection:
                f.protected_connection_token =
                    f.protected_connection_token || names_protected(value, tenants);
                break;
            default:
                if (!f.api_key && iequals(name, "x-api-key"))
                    f.api_key = value;
                break;
        }
        if (identity_count < identities.size() && tenants.is_identity(name)) {
            identities[identity_count++] = name;
        }
    }
    f.repeated_identity = repeats_a_name({identities.data(), identity_count});
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
    http::for_each_list_item(f.te, [&](std::string_view c) { codings.push_back(c); });
    if (codings.size() == 1 && iequals(codings.front(), "chunked")) {
        return {};
    }
    const bool has_chunked =
        std::any_of(codings.begin(), codings.end(), [](auto c) { return iequals(c, "chunked"); });
    const bool all_tokens =
        std::all_of(codings.begin(), codings.end(), [](auto c) { return http::is_token(c); });
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

// The characters a URI may hold (RFC 3986 §2: unreserved, reserved, and "%" for escapes), minus
// "#": a fragment is never sent.
constexpr auto uri_chars = [] {
    std::array<bool, 256> table{};
    for (int c = 0; c < 256; ++c) {
        table[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }
    for (const char c : std::string_view("-._~:/?[]@!$&'()*+,;=%")) {
        table[static_cast<unsigned char>(c)] = true;
    }
    return table;
}();

bool is_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Bytes outside RFC 3986's set (non-ASCII, controls, space, "<", "{", …) or a "%" not followed
// by two hex digits: never forwarded, whatever the upstream would make of them.
bool clean_uri(std::string_view target) noexcept {
    for (std::size_t i = 0; i < target.size(); ++i) {
        const auto c = static_cast<unsigned char>(target[i]);
        if (!uri_chars[c]) {
            return false;
        }
        if (c == '%' &&
            (i + 2 >= target.size() || !is_hex(target[i + 1]) || !is_hex(target[i + 2]))) {
            return false;
        }
    }
    return true;
}

// "." or ".." as a path segment, literally or %2E-escaped: routes are prefixes, so
// /openai/../files would take the /openai route and leave the upstream's base path upstream.
// Refused rather than resolved: no API client sends them.
bool has_dot_segment(std::string_view target) noexcept {
    const auto path = target.substr(0, target.find('?'));
    std::size_t start = 0;
    while (start < path.size()) {
        const auto end = std::min(path.find('/', start + 1), path.size());
        auto segment = path.substr(start + 1, end - start - 1);
        std::size_t dots = 0;
        while (!segment.empty()) {
            if (segment.front() == '.') {
                segment.remove_prefix(1);
            } else if (segment.size() >= 3 && segment[0] == '%' && segment[1] == '2' &&
                       (segment[2] == 'e' || segment[2] == 'E')) {
                segment.remove_prefix(3);
            } else {
                break;
            }
            ++dots;
        }
        if (segment.empty() && (dots == 1 || dots == 2))
            return true;
        start = end;
    }
    return false;
}

error_code check_target(const client_request& h) {
    if (h.method() == beast_http::verb::connect) {
        return proxy_errc::method_not_allowed;
    }
    const auto target = h.target();
    if (target.empty() || target.front() != '/') {
        return proxy_errc::bad_request;  // asterisk-form (H-13); absolute-form was made origin-form
    }
    return clean_uri(target) && !has_dot_segment(target) ? error_code{}
                                                         : error_code(proxy_errc::bad_request);
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
        return http::trim(authorization.substr(scheme.size()));
    }
    return authorization;
}

// H-17: the tenant is exactly one value, never "the first of several".
error_code check_credentials(const head_facts& f) {
    if (f.repeated_identity) {
        return proxy_errc::ambiguous_credentials;
    }
    if (f.authorization && f.api_key && bearer_token(*f.authorization) != http::trim(*f.api_key)) {
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

error_code check_request(const client_request& h, const coalesce::tenant_headers& tenants) {
    if (h.version() != 10 && h.version() != 11) {
        return proxy_errc::unsupported_version;
    }
    head_facts f;
    if (auto ec = gather(h, tenants, f))
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
        (f.expect_lines == 1 && !iequals(http::trim(f.expect), "100-continue"))) {
        return proxy_errc::expectation_failed;
    }
    return {};
}

error_code adopt_absolute_form(client_request& request) {
    const auto target = request.target();
    if (target.empty() || target.front() == '/' || target == "*" ||
        request.method() == beast_http::verb::connect) {
        return {};
    }
    // RFC 9112 §3.2.2: a server must accept absolute-form; its authority replaces Host. Here it
    // chooses nothing: the upstream and its Host come from the configuration alone (H-12).
    std::size_t scheme_end = 0;
    if (target.size() > 7 && iequals(target.substr(0, 7), "http://")) {
        scheme_end = 7;
    } else if (target.size() > 8 && iequals(target.substr(0, 8), "https://")) {
        scheme_end = 8;
    } else {
        return proxy_errc::bad_request;
    }
    const auto rest = target.substr(scheme_end);
    const auto path_at = rest.find_first_of("/?");
    const auto authority = rest.substr(0, path_at);
    // No userinfo (RFC 9110 §4.2.4: a recipient treats it as an error), no empty host.
    if (authority.empty() || authority.find('@') != std::string_view::npos ||
        !clean_uri(authority)) {
        return proxy_errc::bad_request;
    }
    if (path_at == std::string_view::npos) {
        request.set_target("/");
    } else if (rest[path_at] == '?') {
        std::string origin(1, '/');
        origin.append(rest.data() + path_at, rest.size() - path_at);
        request.set_target(origin);
    } else {
        request.set_target(rest.substr(path_at));
    }
    return {};
}

std::optional<std::uint64_t> declared_length(const client_request& h) {
    // A scan by field code: cheaper than two searches of the case-insensitive index.
    std::string_view length;
    bool have_length = false;
    for (const auto& field : h.fields()) {
        if (field.name == beast_http::field::transfer_encoding) {
            return std::nullopt;
        }
        if (field.name == beast_http::field::content_length && !have_length) {
            length = field.value;
            have_length = true;
        }
    }
    std::uint64_t n = 0;
    std::from_chars(length.data(), length.data() + length.size(), n);
    return n;
}

}  // namespace coalescer::server
