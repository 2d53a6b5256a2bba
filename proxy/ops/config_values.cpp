#include "ops/config_values.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <span>
#include <system_error>

namespace coalescer::ops::detail {
namespace {

// The longest duration accepted: a deadline of now + this still fits every clock.
constexpr duration max_duration = std::chrono::hours(24 * 365 * 100);

// A unit of durations (in ms) or sizes (in bytes).
struct unit {
    std::string_view name;
    std::uint64_t scale;
};
constexpr unit duration_units[] = {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}};
constexpr unit size_units[] = {
    {"", 1},      {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30},
    {"KB", 1000}, {"MB", 1000'000},    {"GB", 1000'000'000}};

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_hex(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
char to_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), to_lower);
    return out;
}

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

// Decimal digits only (no sign, no spaces); nullopt when malformed or above uint64.
std::optional<std::uint64_t> parse_unsigned(std::string_view s) {
    if (!all_digits(s))
        return std::nullopt;
    std::uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size())
        return std::nullopt;
    return v;
}

// Digits then one of `units` ("250ms", "8MiB"), counted in the smallest unit; at most `max`.
std::optional<std::uint64_t> parse_amount(std::string_view text, std::span<const unit> units,
                                          std::uint64_t max) {
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits]))
        ++digits;
    auto value = parse_unsigned(text.substr(0, digits));
    if (!value)
        return std::nullopt;
    auto found = std::find_if(units.begin(), units.end(),
                              [&](const unit& u) { return u.name == text.substr(digits); });
    if (found == units.end() || *value > max / found->scale)
        return std::nullopt;
    return *value * found->scale;
}

// RFC 9110 token characters (header field names).
bool is_tchar(char c) {
    return is_digit(c) || is_alpha(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// RFC 6901, and never the whole document ("").
bool valid_json_pointer(std::string_view p) {
    if (p.empty() || p.front() != '/')
        return false;
    for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i] == '~' && (i + 1 == p.size() || (p[i + 1] != '0' && p[i + 1] != '1')))
            return false;
    return true;
}

bool valid_path_char(char c) {
    return is_alpha(c) || is_digit(c) ||
           std::string_view("-._~!$&'()*+,;=:@/%").find(c) != std::string_view::npos;
}

// Characters allowed in a path (RFC 3986 pchar and "/"), with well-formed %XX escapes.
bool valid_path(std::string_view p) {
    for (std::size_t i = 0; i < p.size(); ++i) {
        if (!valid_path_char(p[i]))
            return false;
        if (p[i] == '%' && (i + 2 >= p.size() || !is_hex(p[i + 1]) || !is_hex(p[i + 2])))
            return false;
    }
    return true;
}

// The scheme of u.url sets https and the default port; returns what follows "://".
std::string_view read_scheme(const loader& l, const field& f, upstream_config& u) {
    const std::string& url = u.url;
    auto sep = url.find("://");
    if (sep == std::string::npos)
        l.fail(f, "expected an absolute URL such as https://api.openai.com/v1, got " + quote(url));
    std::string scheme = lower(std::string_view(url).substr(0, sep));
    if (scheme == "https") {
        u.https = true;
        u.port = 443;
    } else if (scheme == "http") {
        u.https = false;
        u.port = 80;
    } else {
        l.fail(f, "scheme must be http or https, got " + quote(url.substr(0, sep)));
    }
    return std::string_view(url).substr(sep + 3);
}

struct host_port {
    std::string_view host;
    std::optional<std::string_view> port;
};

// "[v6]" or "[v6]:port".
host_port split_bracketed(const loader& l, const field& f, const std::string& url,
                          std::string_view authority) {
    host_port out;
    auto close = authority.find(']');
    if (close == std::string_view::npos)
        l.fail(f, "unterminated IPv6 address in " + quote(url));
    out.host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
        if (after.front() != ':')
            l.fail(f, "invalid host in " + quote(url));
        out.port = after.substr(1);
    }
    std::array<unsigned char, 16> buf{};
    if (::inet_pton(AF_INET6, std::string(out.host).c_str(), buf.data()) != 1)
        l.fail(f, "invalid IPv6 address in " + quote(url));
    return out;
}

// "name" or "name:port".
host_port split_plain(const loader& l, const field& f, const std::string& url,
                      std::string_view authority) {
    host_port out{authority, std::nullopt};
    auto colon = authority.find(':');
    if (colon != std::string_view::npos) {
        out.host = authority.substr(0, colon);
        out.port = authority.substr(colon + 1);
    }
    bool ok = std::all_of(out.host.begin(), out.host.end(), [](char c) {
        return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_';
    });
    if (!ok)
        l.fail(f, "invalid host in " + quote(url));
    return out;
}

}  // namespace

std::string text(const loader& l, const field& f) {
    if (!f.node.IsScalar())
        l.fail(f, "expected a string, got " + describe(f.node));
    if (f.node.Scalar().empty())
        l.fail(f, "must not be empty");
    return f.node.Scalar();
}

std::uint64_t integer(const loader& l, const field& f, std::uint64_t min, std::uint64_t max) {
    if (!f.node.IsScalar())
        l.fail(f, "expected an integer, got " + describe(f.node));
    const std::string& s = f.node.Scalar();
    if (is_quoted(f.node))
        l.fail(f, "expected an integer, got the string " + quote(s));
    auto v = parse_unsigned(s);
    if (!v) {
        std::string_view body = s;
        if (!body.empty() && (body[0] == '-' || body[0] == '+'))
            body.remove_prefix(1);
        bool numeric = !body.empty() && (is_digit(body[0]) || body[0] == '.') &&
                       std::all_of(body.begin(), body.end(), [](char c) {
                           return is_digit(c) || c == '.' || c == 'e' || c == 'E';
                       });
        if (numeric && s[0] == '-')
            l.fail(f, "must not be negative, got " + s);
        if (all_digits(s))
            l.fail(f, "is too large, got " + quote(s));
        if (numeric && s[0] != '+')
            l.fail(f, "expected a whole number, got " + s);
        l.fail(f, "expected an integer, got " + quote(s));
    }
    if (*v < min)
        l.fail(f, "must be at least " + std::to_string(min) + ", got " + s);
    if (*v > max)
        l.fail(f, "must be at most " + std::to_string(max) + ", got " + s);
    return *v;
}

bool boolean(const loader& l, const field& f) {
    if (f.node.IsScalar() && !is_quoted(f.node)) {
        const std::string& s = f.node.Scalar();
        if (s == "true" || s == "True" || s == "TRUE")
            return true;
        if (s == "false" || s == "False" || s == "FALSE")
            return false;
    }
    l.fail(f, "expected true or false, got " +
                  (f.node.IsScalar() && is_quoted(f.node) ? "the string " : std::string()) +
                  describe(f.node));
}

double number(const loader& l, const field& f) {
    if (!f.node.IsScalar() || is_quoted(f.node))
        l.fail(f, "expected a number, got " + describe(f.node));
    const std::string& s = f.node.Scalar();
    double v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v))
        l.fail(f, "expected a number, got " + quote(s));
    return v;
}

duration read_duration(const loader& l, const field& f, bool zero_allowed) {
    const char* expected = "expected a duration such as 250ms, 10s or 2m, got ";
    if (!f.node.IsScalar())
        l.fail(f, expected + describe(f.node));
    auto d = parse_duration(f.node.Scalar());
    if (!d)
        l.fail(f, expected + quote(f.node.Scalar()));
    if (!zero_allowed && d->count() == 0)
        l.fail(f, "must be greater than 0");
    return *d;
}

std::size_t read_size(const loader& l, const field& f, std::size_t min) {
    const char* expected = "expected a size such as 512, 64KiB or 8MiB, got ";
    if (!f.node.IsScalar())
        l.fail(f, expected + describe(f.node));
    auto n = parse_size(f.node.Scalar());
    if (!n)
        l.fail(f, expected + quote(f.node.Scalar()));
    if (*n < min)
        l.fail(f, min == 1 ? "must be greater than 0"
                           : "must be at least " + format_size(min) + ", got " + f.node.Scalar());
    return *n;
}

std::string format_duration(duration d) {
    auto ms = d.count();
    if (ms != 0 && ms % 3'600'000 == 0)
        return std::to_string(ms / 3'600'000) + "h";
    if (ms != 0 && ms % 60'000 == 0)
        return std::to_string(ms / 60'000) + "m";
    if (ms != 0 && ms % 1000 == 0)
        return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

std::string format_size(std::size_t n) {
    if (n != 0 && n % (1024 * mib) == 0)
        return std::to_string(n / (1024 * mib)) + "GiB";
    if (n != 0 && n % mib == 0)
        return std::to_string(n / mib) + "MiB";
    if (n != 0 && n % kib == 0)
        return std::to_string(n / kib) + "KiB";
    return std::to_string(n);
}

bool valid_name(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
    });
}

std::optional<std::vector<ip_address>> ip_literal(const std::string& s) {
    ip_address a;
    if (s == "localhost") {
        ip_address v4, v6;
        v4.bytes = {127, 0, 0, 1};
        v6.v6 = true;
        v6.bytes[15] = 1;
        return std::vector<ip_address>{v4, v6};
    }
    if (::inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1)
        return std::vector<ip_address>{a};
    if (::inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
        static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::equal(std::begin(mapped), std::end(mapped), a.bytes.begin())) {  // ::ffff:a.b.c.d
            std::copy(a.bytes.begin() + 12, a.bytes.end(), a.bytes.begin());
            std::fill(a.bytes.begin() + 4, a.bytes.end(), 0);
        } else {
            a.v6 = true;
        }
        return std::vector<ip_address>{a};
    }
    return std::nullopt;
}

bool overlap(const ip_address& a, const ip_address& b) {
    auto wildcard = [](const ip_address& x) {
        return std::all_of(x.bytes.begin(), x.bytes.end(), [](unsigned char c) { return c == 0; });
    };
    if ((a.v6 && wildcard(a)) || (b.v6 && wildcard(b)))
        return true;
    if (a.v6 != b.v6)
        return false;
    return wildcard(a) || wildcard(b) || a.bytes == b.bytes;
}

std::string read_address(const loader& l, const field& f) {
    std::string s = text(l, f);
    if (!ip_literal(s)) {
        std::string hint = s.front() == '[' ? " (write IPv6 addresses without brackets)" : "";
        l.fail(f, "expected an IP address or localhost, got " + quote(s) + hint);
    }
    return s;
}

void parse_url(const loader& l, const field& f, upstream_config& u) {
    const std::string& url = u.url;
    std::string_view rest = read_scheme(l, f, u);
    auto authority_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, authority_end);
    std::string_view tail =
        authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
    // The URL is not echoed: it holds a credential.
    if (authority.find('@') != std::string_view::npos)
        l.fail(f, "credentials in URLs are not allowed; the client's own headers are forwarded");
    if (tail.find('#') != std::string_view::npos)
        l.fail(f, "a fragment is not allowed, got " + quote(url));
    if (tail.find('?') != std::string_view::npos)
        l.fail(f, "a query is not allowed, got " + quote(url));

    host_port hp = !authority.empty() && authority.front() == '['
                       ? split_bracketed(l, f, url, authority)
                       : split_plain(l, f, url, authority);
    if (hp.host.empty())
        l.fail(f, "a host is required, got " + quote(url));
    if (hp.port) {
        auto p = parse_unsigned(*hp.port);
        if (!p || *p < 1 || *p > 65535)
            l.fail(f, "invalid port in " + quote(url));
        u.port = static_cast<std::uint16_t>(*p);
    }
    if (!valid_path(tail))
        l.fail(f, "invalid character in the path of " + quote(url));
    std::string path(tail);
    while (!path.empty() && path.back() == '/')
        path.pop_back();
    u.host = std::string(hp.host);
    u.base_path = std::move(path);
}

bool valid_route_path(std::string_view p) {
    return std::all_of(p.begin(), p.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f && c != '?' && c != '#';
    });
}

std::string read_header_name(const loader& l, const field& f) {
    std::string s = text(l, f);
    if (!std::all_of(s.begin(), s.end(), is_tchar))
        l.fail(f, "expected an HTTP header name, got " + quote(s));
    return lower(s);
}

std::vector<std::string> read_header_list(const loader& l, const field& f) {
    std::vector<std::string> out;
    for (const field& item : sequence(l, f)) {
        std::string name = read_header_name(l, item);
        if (std::find(out.begin(), out.end(), name) != out.end())
            l.fail(item, "duplicate header " + quote(name));
        out.push_back(std::move(name));
    }
    return out;
}

std::vector<std::string> read_json_pointers(const loader& l, const field& f) {
    std::vector<std::string> out;
    for (const field& item : sequence(l, f)) {
        std::string p = text(l, item);
        if (!valid_json_pointer(p))
            l.fail(item, "expected a JSON pointer such as /user (\"~\" only as ~0 or ~1), got " +
                             quote(p));
        if (std::find(out.begin(), out.end(), p) != out.end())
            l.fail(item, "duplicate field " + quote(p));
        out.push_back(std::move(p));
    }
    return out;
}

void check_readable_file(const loader& l, const field& f, const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        int err = errno;
        l.fail(f, "cannot read " + quote(path) + ": " + errno_text(err));
    }
    if (!S_ISREG(st.st_mode))
        l.fail(f, "cannot read " + quote(path) + ": not a regular file");
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (fp == nullptr) {
        int err = errno;
        l.fail(f, "cannot read " + quote(path) + ": " + errno_text(err));
    }
    std::fclose(fp);
}

std::string errno_text(int err) {
    return std::error_code(err, std::generic_category()).message();
}

// redis://host[:port][/db] or rediss://…: no credentials (username and password_file hold
// them), no query.
void parse_redis_url(const loader& l, const field& f, cluster_config& c) {
    const std::string& url = c.url;
    const auto sep = url.find("://");
    const std::string scheme = sep == std::string::npos ? "" : lower(url.substr(0, sep));
    if (scheme != "redis" && scheme != "rediss")
        l.fail(f, "expected redis://host:port/db or rediss://host:port/db, got " + quote(url));
    c.tls = scheme == "rediss";
    std::string_view rest = std::string_view(url).substr(sep + 3);
    const auto slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    // The URL is not echoed: it may hold a credential.
    if (authority.find('@') != std::string_view::npos)
        l.fail(f, "credentials in the URL are not allowed: use username and password_file");
    if (slash != std::string_view::npos) {
        const auto db = rest.substr(slash + 1);
        const auto n = parse_unsigned(db);
        if (!db.empty() && (!n || *n > 1'000'000))
            l.fail(f, "the database after '/' must be a number, got " + quote(url));
        c.database = n ? static_cast<unsigned>(*n) : 0;
    }
    std::string_view host = authority;
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos)
            l.fail(f, "unclosed '[' in " + quote(url));
        host = authority.substr(1, close - 1);
        authority.remove_prefix(close + 1);
    } else {
        host = authority.substr(0, authority.find(':'));
        authority.remove_prefix(host.size());
    }
    if (host.empty())
        l.fail(f, "no host in " + quote(url));
    c.host = std::string(host);
    if (!authority.empty()) {
        const auto port = authority.front() == ':' ? parse_unsigned(authority.substr(1))
                                                   : std::optional<std::uint64_t>();
        if (!port || *port == 0 || *port > 65535)
            l.fail(f, "the port must be 1 to 65535, got " + quote(url));
        c.port = static_cast<std::uint16_t>(*port);
    }
}

// A secret read from a file: the whole file, less one trailing newline. Never echoed.
std::string read_secret_file(const loader& l, const field& f, const std::string& path) {
    check_readable_file(l, f, path);
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (fp == nullptr)
        l.fail(f, "cannot read " + quote(path));
    std::string secret;
    char buffer[4096];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, fp)) > 0 && secret.size() < 64 * 1024)
        secret.append(buffer, n);
    std::fclose(fp);
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r'))
        secret.pop_back();
    if (secret.empty())
        l.fail(f, quote(path) + " is empty");
    return secret;
}

}  // namespace coalescer::ops::detail

namespace coalescer::ops {

std::optional<duration> parse_duration(const std::string& text) {
    if (text == "0")
        return duration::zero();
    auto ms = detail::parse_amount(text, detail::duration_units,
                                   static_cast<std::uint64_t>(detail::max_duration.count()));
    if (!ms)
        return std::nullopt;
    return duration(static_cast<duration::rep>(*ms));
}

std::optional<std::size_t> parse_size(const std::string& text) {
    auto bytes =
        detail::parse_amount(text, detail::size_units, std::numeric_limits<std::size_t>::max());
    if (!bytes)
        return std::nullopt;
    return static_cast<std::size_t>(*bytes);
}

}  // namespace coalescer::ops
