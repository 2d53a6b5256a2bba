// Loads and validates the YAML configuration of DESIGN.md "Configuration and command line".
// Every problem becomes one config_error line, "FILE:LINE: KEY: problem", naming the node at
// fault: unknown keys, wrong types and impossible values are refused at every level.
#include "ops/config.hpp"

#include "http/header_rules.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

namespace coalescer::ops {
namespace {

// A config file larger than this is not a config file (and /dev/zero must not hang start-up).
constexpr std::size_t max_file_bytes = 4 * mib;
// The longest duration accepted: a deadline of now + this still fits every clock.
constexpr duration max_duration = std::chrono::hours(24 * 365 * 100);

// ---------------------------------------------------------------------------------------------
// Text helpers

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

// RFC 9110 token characters (header field names).
bool is_tchar(char c) {
    return is_digit(c) || is_alpha(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// A scalar as shown in a message: quoted, escaped, cut short. Never more than the scalar itself.
std::string quote(std::string_view s) {
    constexpr std::size_t max_shown = 80;
    std::size_t n = std::min(s.size(), max_shown);
    while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
        --n;  // whole UTF-8
    std::string out = "\"";
    for (char c : s.substr(0, n)) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else {
            out += c;
        }
    }
    out += '"';
    if (n < s.size())
        out += "...";
    return out;
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

std::string errno_text(int err) {
    return std::error_code(err, std::generic_category()).message();
}

// ---------------------------------------------------------------------------------------------
// Nodes, positions and errors

// A node with the dotted key that leads to it and the (0-based) line to blame.
struct field {
    YAML::Node node;
    std::string key;
    int line = 0;
};

int line_of(const YAML::Node& n) {
    return std::max(n.Mark().line, 0);
}

std::string describe(const YAML::Node& n) {
    if (n.IsMap())
        return "a mapping";
    if (n.IsSequence())
        return "a sequence";
    if (n.IsScalar())
        return quote(n.Scalar());
    return "an empty value";
}

// "!" is yaml-cpp's tag for a quoted scalar; "!!str" says the same explicitly.
bool is_quoted(const YAML::Node& n) {
    return n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str";
}

class loader {
  public:
    explicit loader(std::string source) : source_(std::move(source)) {}

    const std::string& source() const { return source_; }

    [[noreturn]] void fail(int line, std::string_view key, std::string_view problem) const {
        std::string msg = source_ + ":" + std::to_string(line + 1) + ": " + std::string(key) +
                          ": " + std::string(problem);
        // One line whatever the file name or the scalars contain.
        for (char& c : msg)
            if (c == '\n' || c == '\r')
                c = ' ';
        throw config_error(msg);
    }
    [[noreturn]] void fail(const field& f, std::string_view problem) const {
        fail(f.line, f.key, problem);
    }

  private:
    std::string source_;
};

std::string child_key(const std::string& parent, std::string_view key) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

// A YAML mapping whose keys are checked up front: plain strings, unique, each one allowed.
// An empty value (`listen:` with nothing under it) counts as an empty mapping.
class mapping {
  public:
    mapping(const loader& l, field self, std::initializer_list<std::string_view> allowed)
        : loader_(l), self_(std::move(self)) {
        const YAML::Node& node = self_.node;
        if (node.IsNull())
            return;
        if (!node.IsMap())
            loader_.fail(self_, "expected a mapping, got " + describe(node));
        for (auto it = node.begin(); it != node.end(); ++it) {
            // Copies: yaml-cpp's iterator hands out a temporary pair.
            const YAML::Node k = it->first;
            const YAML::Node v = it->second;
            if (!k.IsScalar())
                loader_.fail(line_of(k), child_key(self_.key, "?"),
                             "keys must be plain strings, got " + describe(k));
            const std::string& name = k.Scalar();
            std::string key = child_key(self_.key, name);
            if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
                loader_.fail(line_of(k), key, "unknown key");
            for (const auto& [seen, f] : entries_)
                if (seen == name)
                    loader_.fail(
                        line_of(k), key,
                        "duplicate key (first at line " + std::to_string(f.line + 1) + ")");
            // An empty value has no line of its own (yaml-cpp marks the next token): blame the key.
            entries_.emplace_back(name,
                                  field{v, std::move(key), v.IsNull() ? line_of(k) : line_of(v)});
        }
    }

    std::optional<field> get(std::string_view name) const {
        for (const auto& [key, f] : entries_)
            if (key == name)
                return f;
        return std::nullopt;
    }

    // A missing required key is blamed on the mapping that lacks it.
    field require(std::string_view name) const {
        if (auto f = get(name))
            return *f;
        loader_.fail(self_.line, child_key(self_.key, name), "required");
    }

    const field& self() const { return self_; }

  private:
    const loader& loader_;
    field self_;
    std::vector<std::pair<std::string, field>> entries_;
};

std::vector<field> sequence(const loader& l, const field& f) {
    if (!f.node.IsSequence())
        l.fail(f, "expected a sequence, got " + describe(f.node));
    std::vector<field> out;
    std::size_t i = 0;
    for (auto it = f.node.begin(); it != f.node.end(); ++it, ++i) {
        // An empty item has no line of its own; the first one is on the sequence's line.
        int line = it->IsNull() && i == 0 ? f.line : line_of(*it);
        out.push_back(field{*it, f.key + "[" + std::to_string(i) + "]", line});
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Typed scalars

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

template <class T>
T one_of(const loader& l, const field& f,
         std::initializer_list<std::pair<std::string_view, T>> choices) {
    std::string names;
    for (const auto& [name, value] : choices) {
        if (f.node.IsScalar() && f.node.Scalar() == name)
            return value;
        names += names.empty() ? "" : ", ";
        names += name;
    }
    l.fail(f, "expected one of " + names + ", got " + describe(f.node));
}

// ---------------------------------------------------------------------------------------------
// Checks on values

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

// An address the listeners can bind: its candidate IPs ("localhost" may be either loopback).
struct ip_address {
    bool v6 = false;
    std::array<unsigned char, 16> bytes{};
};

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

// Whether two binds on the same port collide; [::] is taken as dual-stack.
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

// http(s)://host[:port][/path]: no userinfo, query or fragment.
void parse_url(const loader& l, const field& f, upstream_config& u) {
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
    std::string_view rest = std::string_view(url).substr(sep + 3);
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

    std::string_view host = authority;
    std::string_view port;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string_view::npos)
            l.fail(f, "unterminated IPv6 address in " + quote(url));
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':')
                l.fail(f, "invalid host in " + quote(url));
            port = after.substr(1);
            has_port = true;
        }
        std::array<unsigned char, 16> buf{};
        if (::inet_pton(AF_INET6, std::string(host).c_str(), buf.data()) != 1)
            l.fail(f, "invalid IPv6 address in " + quote(url));
    } else {
        auto colon = authority.find(':');
        if (colon != std::string_view::npos) {
            host = authority.substr(0, colon);
            port = authority.substr(colon + 1);
            has_port = true;
        }
        bool ok = std::all_of(host.begin(), host.end(), [](char c) {
            return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_';
        });
        if (!ok)
            l.fail(f, "invalid host in " + quote(url));
    }
    if (host.empty())
        l.fail(f, "a host is required, got " + quote(url));
    if (has_port) {
        auto p = parse_unsigned(port);
        if (!p || *p < 1 || *p > 65535)
            l.fail(f, "invalid port in " + quote(url));
        u.port = static_cast<std::uint16_t>(*p);
    }
    if (!valid_path(tail))
        l.fail(f, "invalid character in the path of " + quote(url));
    std::string path(tail);
    while (!path.empty() && path.back() == '/')
        path.pop_back();
    u.host = std::string(host);
    u.base_path = std::move(path);
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

// RFC 6901, and never the whole document ("").
bool valid_json_pointer(std::string_view p) {
    if (p.empty() || p.front() != '/')
        return false;
    for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i] == '~' && (i + 1 == p.size() || (p[i + 1] != '0' && p[i + 1] != '1')))
            return false;
    return true;
}

// A prefix as the router compares it with request targets.
bool valid_route_path(std::string_view p) {
    return std::all_of(p.begin(), p.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f && c != '?' && c != '#';
    });
}

// ---------------------------------------------------------------------------------------------
// Sections

void read_listen(const loader& l, const field& f, listen_config& out) {
    mapping m(l, f, {"address", "port", "tls"});
    if (auto v = m.get("address"))
        out.address = read_address(l, *v);
    if (auto v = m.get("port"))
        out.port = static_cast<std::uint16_t>(integer(l, *v, 0, 65535));
    if (auto v = m.get("tls")) {
        mapping t(l, *v, {"cert_file", "key_file"});
        tls_files files;
        field cert = t.require("cert_file");
        field key = t.require("key_file");
        files.cert_file = text(l, cert);
        files.key_file = text(l, key);
        check_readable_file(l, cert, files.cert_file);
        check_readable_file(l, key, files.key_file);
        out.tls = std::move(files);
    }
}

void read_admin(const loader& l, const field& f, admin_config& out) {
    mapping m(l, f, {"address", "port"});
    if (auto v = m.get("address"))
        out.address = read_address(l, *v);
    if (auto v = m.get("port"))
        out.port = static_cast<std::uint16_t>(integer(l, *v, 0, 65535));
}

// listen and admin cannot share an address and port (0 picks a free one each).
void check_listeners(const loader& l, const config& c, const mapping& top) {
    if (c.listen.port == 0 || c.listen.port != c.admin.port)
        return;
    auto a = *ip_literal(c.listen.address);
    auto b = *ip_literal(c.admin.address);
    bool clash = std::any_of(a.begin(), a.end(), [&](const ip_address& x) {
        return std::any_of(b.begin(), b.end(), [&](const ip_address& y) { return overlap(x, y); });
    });
    if (!clash)
        return;
    // Blame what was written: admin's port, else admin's address, else listen's.
    for (const char* section : {"admin", "listen"}) {
        auto s = top.get(section);
        if (!s || !s->node.IsMap())
            continue;
        mapping m(l, *s, {"address", "port", "tls"});
        bool admin = std::string_view(section) == "admin";
        const std::string& other_address = admin ? c.listen.address : c.admin.address;
        std::string problem = std::string("same address and port as ") +
                              (admin ? "listen" : "admin") + " (" + other_address + ":" +
                              std::to_string(c.listen.port) + ")";
        if (auto v = m.get("port"))
            l.fail(*v, problem);
        if (auto v = m.get("address"))
            l.fail(*v, problem);
    }
    l.fail(top.self().line, "admin",
           "same address and port as listen");  // unreachable with the defaults
}

upstream_config read_upstream(const loader& l, const field& f,
                              const std::vector<upstream_config>& earlier) {
    if (!f.node.IsMap())
        l.fail(f, "expected a mapping with name and url, got " + describe(f.node));
    mapping m(l, f,
              {"name", "url", "tls", "max_concurrent", "queue_timeout", "timeouts", "retries",
               "rate_limit"});
    upstream_config u;
    field name = m.require("name");
    u.name = text(l, name);
    if (!std::all_of(u.name.begin(), u.name.end(), [](char c) {
            return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
        }))
        l.fail(name, "expected letters, digits, '_', '.' or '-', got " + quote(u.name));
    for (std::size_t i = 0; i < earlier.size(); ++i)
        if (earlier[i].name == u.name)
            l.fail(name, "duplicate upstream name " + quote(u.name) + " (also upstreams[" +
                             std::to_string(i) + "])");
    field url = m.require("url");
    u.url = text(l, url);
    parse_url(l, url, u);

    if (auto v = m.get("tls")) {
        // Accepted (and checked) on an http:// upstream too, where it has no effect.
        mapping t(l, *v, {"verify", "ca_file"});
        if (auto x = t.get("verify"))
            u.tls.verify = boolean(l, *x);
        if (auto x = t.get("ca_file")) {
            u.tls.ca_file = text(l, *x);
            check_readable_file(l, *x, u.tls.ca_file);
        }
    }
    if (auto v = m.get("max_concurrent"))
        u.max_concurrent = static_cast<int>(integer(l, *v, 1, std::numeric_limits<int>::max()));
    if (auto v = m.get("queue_timeout"))
        u.queue_timeout = read_duration(l, *v, false);
    if (auto v = m.get("timeouts")) {
        mapping t(l, *v, {"connect", "head", "idle", "total"});
        if (auto x = t.get("connect"))
            u.timeouts.connect = read_duration(l, *x, false);
        if (auto x = t.get("head"))
            u.timeouts.head = read_duration(l, *x, false);
        if (auto x = t.get("idle"))
            u.timeouts.idle = read_duration(l, *x, false);
        if (auto x = t.get("total"))
            u.timeouts.total = read_duration(l, *x, false);
    }
    if (auto v = m.get("retries")) {
        mapping r(l, *v, {"max_attempts", "base_delay", "max_delay"});
        if (auto x = r.get("max_attempts"))
            u.retries.max_attempts =
                static_cast<int>(integer(l, *x, 1, std::numeric_limits<int>::max()));
        auto base = r.get("base_delay");
        auto max = r.get("max_delay");
        if (base)
            u.retries.base_delay = read_duration(l, *base, true);
        if (max)
            u.retries.max_delay = read_duration(l, *max, true);
        if (u.retries.base_delay > u.retries.max_delay) {
            if (base)
                l.fail(*base,
                       "must not exceed max_delay (" + format_duration(u.retries.max_delay) + ")");
            l.fail(*max,
                   "must not be below base_delay (" + format_duration(u.retries.base_delay) + ")");
        }
    }
    if (auto v = m.get("rate_limit")) {
        mapping r(l, *v, {"requests_per_second", "burst"});
        rate_limit_config rl;
        field rps = r.require("requests_per_second");
        rl.requests_per_second = number(l, rps);
        if (!(rl.requests_per_second > 0))
            l.fail(rps, "must be greater than 0");
        if (auto x = r.get("burst"))
            rl.burst = static_cast<int>(integer(l, *x, 1, std::numeric_limits<int>::max()));
        u.rate_limit = rl;
    }
    return u;
}

route_config read_route(const loader& l, const field& f,
                        const std::vector<upstream_config>& upstreams,
                        const std::vector<route_config>& earlier) {
    if (!f.node.IsMap())
        l.fail(f, "expected a mapping with prefix and upstream, got " + describe(f.node));
    mapping m(l, f, {"prefix", "upstream", "strip_prefix", "coalesce"});
    route_config r;
    field prefix = m.require("prefix");
    r.prefix = text(l, prefix);
    if (r.prefix.front() != '/')
        l.fail(prefix, "must start with \"/\", got " + quote(r.prefix));
    if (!valid_route_path(r.prefix))
        l.fail(prefix, "expected a path without spaces, '?' or '#', got " + quote(r.prefix));
    field upstream = m.require("upstream");
    r.upstream = text(l, upstream);
    auto it = std::find_if(upstreams.begin(), upstreams.end(),
                           [&](const upstream_config& u) { return u.name == r.upstream; });
    if (it == upstreams.end())
        l.fail(upstream, "no upstream named " + quote(r.upstream));
    r.upstream_index = static_cast<std::size_t>(it - upstreams.begin());
    if (auto v = m.get("strip_prefix")) {
        r.strip_prefix = text(l, *v);
        if (r.strip_prefix.front() != '/')
            l.fail(*v, "must start with \"/\", got " + quote(r.strip_prefix));
        // What is left after stripping must still be a path: cut at a "/".
        bool boundary = r.prefix.starts_with(r.strip_prefix) &&
                        (r.strip_prefix.size() == r.prefix.size() || r.strip_prefix.back() == '/' ||
                         r.prefix[r.strip_prefix.size()] == '/');
        if (!boundary)
            l.fail(*v, "must be a leading part of prefix " + quote(r.prefix) +
                           " that ends at a \"/\", got " + quote(r.strip_prefix));
    }
    if (auto v = m.get("coalesce"))
        r.coalesce = boolean(l, *v);
    // Routes are tried in order, first match wins: a route that an earlier one always takes
    // first is a mistake (typically "/" written before the specific routes).
    for (std::size_t i = 0; i < earlier.size(); ++i) {
        const std::string& first = earlier[i].prefix;
        bool shadowed =
            r.prefix.starts_with(first) && (r.prefix.size() == first.size() ||
                                            first.back() == '/' || r.prefix[first.size()] == '/');
        if (shadowed)
            l.fail(prefix, "never matches: routes[" + std::to_string(i) + "] (prefix " +
                               quote(first) +
                               ") comes first and takes every request this one would");
    }
    return r;
}

// Credential-like headers the operator knows to be the same for every tenant. The credentials
// themselves can't be listed (two different values would share answers), nor a name that is not
// keyed as a credential anyway (a typo would go unnoticed), nor one identity_headers lists.
void read_shared_headers(const loader& l, const field& f, coalesce_config& out) {
    const auto items = sequence(l, f);
    out.shared_headers = read_header_list(l, f);
    for (std::size_t i = 0; i < items.size(); ++i) {
        const std::string& name = out.shared_headers[i];
        if (http::is_known_credential(name))
            l.fail(items[i], quote(name) +
                                 " carries a credential: tenants with different values must never "
                                 "share answers");
        if (!http::looks_like_credential(name))
            l.fail(items[i], quote(name) +
                                 " is not keyed as a credential (only names ending in -key, "
                                 "-token or -secret, or containing auth, are): nothing to share");
        if (std::find(out.identity_headers.begin(), out.identity_headers.end(), name) !=
            out.identity_headers.end())
            l.fail(items[i], quote(name) + " is also in identity_headers");
    }
}

void read_coalesce(const loader& l, const field& f, coalesce_config& out) {
    mapping m(l, f,
              {"result_ttl", "max_response_bytes", "max_cache_bytes", "identity_headers",
               "shared_headers", "vary_headers", "ignore_fields", "bypass_header", "orphan",
               "max_subscribers_per_flight"});
    if (auto v = m.get("result_ttl"))
        out.result_ttl = read_duration(l, *v, true);
    auto response = m.get("max_response_bytes");
    auto cache = m.get("max_cache_bytes");
    if (response)
        out.max_response_bytes = read_size(l, *response, 1);
    if (cache)
        out.max_cache_bytes = read_size(l, *cache, 0);
    if (out.result_ttl.count() != 0 && out.max_cache_bytes < out.max_response_bytes) {
        if (cache)
            l.fail(*cache, "must be at least max_response_bytes (" +
                               format_size(out.max_response_bytes) + ") unless result_ttl is 0");
        l.fail(*response, "must not exceed max_cache_bytes (" + format_size(out.max_cache_bytes) +
                              ") unless result_ttl is 0");
    }
    if (auto v = m.get("identity_headers")) {
        out.identity_headers = read_header_list(l, *v);
        // Tenant isolation is absolute: the credentials are always part of the key; the list
        // only adds tenant headers (such as x-org-id) to them.
        for (const char* always : {"authorization", "x-api-key"})
            if (std::find(out.identity_headers.begin(), out.identity_headers.end(), always) ==
                out.identity_headers.end())
                out.identity_headers.emplace_back(always);
    }
    if (auto v = m.get("shared_headers"))
        read_shared_headers(l, *v, out);
    if (auto v = m.get("vary_headers"))
        out.vary_headers = read_header_list(l, *v);
    if (auto v = m.get("ignore_fields")) {
        out.ignore_fields.clear();
        for (const field& item : sequence(l, *v)) {
            std::string p = text(l, item);
            if (!valid_json_pointer(p))
                l.fail(item,
                       "expected a JSON pointer such as /user (\"~\" only as ~0 or ~1), got " +
                           quote(p));
            if (std::find(out.ignore_fields.begin(), out.ignore_fields.end(), p) !=
                out.ignore_fields.end())
                l.fail(item, "duplicate field " + quote(p));
            out.ignore_fields.push_back(std::move(p));
        }
    }
    if (auto v = m.get("bypass_header"))
        out.bypass_header = read_header_name(l, *v);
    if (auto v = m.get("orphan"))
        out.orphan = one_of<orphan_policy>(
            l, *v, {{"finish", orphan_policy::finish}, {"cancel", orphan_policy::cancel}});
    if (auto v = m.get("max_subscribers_per_flight"))
        out.max_subscribers_per_flight =
            static_cast<std::size_t>(integer(l, *v, 1, std::numeric_limits<std::size_t>::max()));
}

void read_limits(const loader& l, const field& f, limits_config& out) {
    mapping m(l, f,
              {"max_request_body", "max_header_bytes", "header_timeout", "idle_timeout",
               "write_timeout", "max_connections"});
    if (auto v = m.get("max_request_body"))
        out.max_request_body = read_size(l, *v, 1);
    if (auto v = m.get("max_header_bytes"))
        out.max_header_bytes = read_size(l, *v, kib);
    if (auto v = m.get("header_timeout"))
        out.header_timeout = read_duration(l, *v, false);
    if (auto v = m.get("idle_timeout"))
        out.idle_timeout = read_duration(l, *v, false);
    if (auto v = m.get("write_timeout"))
        out.write_timeout = read_duration(l, *v, false);
    if (auto v = m.get("max_connections"))
        out.max_connections =
            static_cast<std::size_t>(integer(l, *v, 1, std::numeric_limits<std::size_t>::max()));
}

void read_shutdown(const loader& l, const field& f, shutdown_config& out) {
    mapping m(l, f, {"drain_delay", "drain_timeout"});
    if (auto v = m.get("drain_delay"))
        out.drain_delay = read_duration(l, *v, true);
    if (auto v = m.get("drain_timeout"))
        out.drain_timeout = read_duration(l, *v, false);
}

void read_log(const loader& l, const field& f, log_config& out) {
    mapping m(l, f, {"level", "format"});
    if (auto v = m.get("level"))
        out.level = one_of<log_level>(l, *v,
                                      {{"debug", log_level::debug},
                                       {"info", log_level::info},
                                       {"warn", log_level::warn},
                                       {"error", log_level::error}});
    if (auto v = m.get("format"))
        out.format =
            one_of<log_format>(l, *v, {{"json", log_format::json}, {"text", log_format::text}});
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

cluster_config read_cluster(const loader& l, const field& f) {
    mapping m(l, f,
              {"redis", "username", "password_file", "tls", "key_secret_file", "lease",
               "timeouts"});
    cluster_config c;
    const field url = m.require("redis");
    c.url = text(l, url);
    parse_redis_url(l, url, c);
    if (auto v = m.get("username"); v && !v->node.IsNull() && !v->node.Scalar().empty())
        c.username = text(l, *v);
    if (auto v = m.get("password_file"); v && !v->node.IsNull() && !v->node.Scalar().empty())
        c.password = read_secret_file(l, *v, text(l, *v));
    if (!c.username.empty() && c.password.empty())
        l.fail(*m.get("username"), "needs password_file (Redis ACL users authenticate with both)");
    if (auto v = m.get("tls")) {
        mapping t(l, *v, {"verify", "ca_file"});
        if (auto x = t.get("verify"))
            c.tls_verify = boolean(l, *x);
        if (auto x = t.get("ca_file")) {
            c.ca_file = text(l, *x);
            check_readable_file(l, *x, c.ca_file);
        }
    }
    const field secret = m.require("key_secret_file");
    c.key_secret_file = text(l, secret);
    c.key_secret = read_secret_file(l, secret, c.key_secret_file);
    if (auto v = m.get("lease")) {
        c.lease = read_duration(l, *v, false);
        if (c.lease < 300ms)
            l.fail(*v, "must be at least 300ms (it is renewed every lease/3)");
    }
    if (auto v = m.get("timeouts")) {
        mapping t(l, *v, {"connect", "command"});
        if (auto x = t.get("connect"))
            c.connect_timeout = read_duration(l, *x, false);
        if (auto x = t.get("command"))
            c.command_timeout = read_duration(l, *x, false);
    }
    return c;
}

std::shared_ptr<const config> read_config(const loader& l, const YAML::Node& root) {
    if (!root.IsMap())
        l.fail(0, "document",
               "expected a mapping with upstreams and routes, got " + describe(root));
    mapping top(l, field{root, "", line_of(root)},
                {"workers", "pin_workers", "listen", "admin", "upstreams", "routes", "coalesce",
                 "limits", "shutdown", "log", "cluster"});
    auto c = std::make_shared<config>();
    c->source = l.source();
    if (auto v = top.get("workers"))
        c->workers = static_cast<unsigned>(integer(l, *v, 0, 1024));
    if (auto v = top.get("pin_workers"))
        c->pin_workers = boolean(l, *v);
    if (auto v = top.get("listen"))
        read_listen(l, *v, c->listen);
    if (auto v = top.get("admin"))
        read_admin(l, *v, c->admin);
    check_listeners(l, *c, top);

    field upstreams = top.require("upstreams");
    for (const field& item : sequence(l, upstreams))
        c->upstreams.push_back(read_upstream(l, item, c->upstreams));
    if (c->upstreams.empty())
        l.fail(upstreams, "must list at least one upstream");

    field routes = top.require("routes");
    for (const field& item : sequence(l, routes))
        c->routes.push_back(read_route(l, item, c->upstreams, c->routes));
    if (c->routes.empty())
        l.fail(routes, "must list at least one route");

    if (auto v = top.get("coalesce"))
        read_coalesce(l, *v, c->coalesce);
    if (auto v = top.get("limits"))
        read_limits(l, *v, c->limits);
    if (auto v = top.get("shutdown"))
        read_shutdown(l, *v, c->shutdown);
    if (auto v = top.get("log"))
        read_log(l, *v, c->log);
    if (auto v = top.get("cluster"))
        c->cluster = read_cluster(l, *v);
    return c;
}

}  // namespace

std::optional<duration> parse_duration(const std::string& text) {
    if (text == "0")
        return duration::zero();
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits]))
        ++digits;
    auto value = parse_unsigned(std::string_view(text).substr(0, digits));
    if (!value)
        return std::nullopt;
    std::string_view unit = std::string_view(text).substr(digits);
    std::uint64_t ms_per_unit = 0;
    if (unit == "ms")
        ms_per_unit = 1;
    else if (unit == "s")
        ms_per_unit = 1000;
    else if (unit == "m")
        ms_per_unit = 60'000;
    else if (unit == "h")
        ms_per_unit = 3'600'000;
    else
        return std::nullopt;
    auto limit = static_cast<std::uint64_t>(max_duration.count());
    if (*value > limit / ms_per_unit)
        return std::nullopt;
    return duration(static_cast<duration::rep>(*value * ms_per_unit));
}

std::optional<std::size_t> parse_size(const std::string& text) {
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits]))
        ++digits;
    auto value = parse_unsigned(std::string_view(text).substr(0, digits));
    if (!value)
        return std::nullopt;
    std::string_view unit = std::string_view(text).substr(digits);
    std::uint64_t multiplier = 0;
    if (unit.empty())
        multiplier = 1;
    else if (unit == "KiB")
        multiplier = 1ULL << 10;
    else if (unit == "MiB")
        multiplier = 1ULL << 20;
    else if (unit == "GiB")
        multiplier = 1ULL << 30;
    else if (unit == "KB")
        multiplier = 1000;
    else if (unit == "MB")
        multiplier = 1000'000;
    else if (unit == "GB")
        multiplier = 1000'000'000;
    else
        return std::nullopt;
    if (*value > std::numeric_limits<std::size_t>::max() / multiplier)
        return std::nullopt;
    return static_cast<std::size_t>(*value * multiplier);
}

namespace {

// Counts documents and where each starts, nothing more.
class document_counter final : public YAML::EventHandler {
  public:
    int documents = 0;
    int last_line = 0;
    void OnDocumentStart(const YAML::Mark& mark) override {
        ++documents;
        last_line = std::max(mark.line, 0);
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// The one document of `yaml`. Not YAML::LoadAll: yaml-cpp 0.7's never returns on some inputs
// (a lone ","), finding one empty document after another until memory runs out
// (jbeder/yaml-cpp#1040, found by the config fuzzer). At most two documents are looked for.
YAML::Node the_document(const loader& l, const std::string& yaml) {
    try {
        std::istringstream in(yaml);
        YAML::Parser parser(in);
        document_counter counter;
        for (int i = 0; i < 2 && parser.HandleNextDocument(counter); ++i) {
        }
        if (counter.documents == 0)
            l.fail(0, "document", "empty; expected a mapping with upstreams and routes");
        if (counter.documents > 1)
            l.fail(counter.last_line, "document", "expected one YAML document, found another");
        return YAML::Load(yaml);
    } catch (const YAML::Exception& e) {
        l.fail(std::max(e.mark.line, 0), "invalid YAML", e.msg);
    }
}

}  // namespace

std::shared_ptr<const config> load_config_text(const std::string& yaml, const std::string& source) {
    loader l(source);
    const YAML::Node document = the_document(l, yaml);
    if (document.IsNull())
        l.fail(0, "document", "empty; expected a mapping with upstreams and routes");
    try {
        return read_config(l, document);
    } catch (const YAML::Exception& e) {  // not expected: the walk only reads what it has checked
        l.fail(std::max(e.mark.line, 0), "document", e.msg);
    }
}

std::shared_ptr<const config> load_config_file(const std::string& path) {
    auto cannot_read = [&](const std::string& why) -> config_error {
        std::string msg = path + ": cannot read: " + why;
        for (char& c : msg)
            if (c == '\n' || c == '\r')
                c = ' ';
        return config_error(msg);
    };
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (fp == nullptr)
        throw cannot_read(errno_text(errno));
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(fp, &std::fclose);
    struct stat st {};
    if (::fstat(::fileno(fp), &st) != 0)
        throw cannot_read(errno_text(errno));
    if (S_ISDIR(st.st_mode))
        throw cannot_read(errno_text(EISDIR));
    std::string text;
    char buf[16384];
    while (true) {
        std::size_t n = std::fread(buf, 1, sizeof buf, fp);
        text.append(buf, n);
        if (text.size() > max_file_bytes)
            throw cannot_read("larger than " + format_size(max_file_bytes));
        if (n < sizeof buf)
            break;
    }
    if (std::ferror(fp))
        throw cannot_read(errno_text(errno));
    return load_config_text(text, path);
}

}  // namespace coalescer::ops
