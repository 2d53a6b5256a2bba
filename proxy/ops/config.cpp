// Loads and validates the YAML configuration of DESIGN.md "Configuration and command line".
// Every problem becomes one config_error line, "FILE:LINE: KEY: problem", naming the node at
// fault: unknown keys, wrong types and impossible values are refused at every level. This file
// is the schema: which sections and keys exist, what each becomes, and the checks between them.
#include "ops/config.hpp"

#include "http/header_rules.hpp"
#include "ops/config_values.hpp"
#include "ops/yaml_walk.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <string_view>
#include <utility>

namespace coalescer::ops::detail {
namespace {

// A config file larger than this is not a config file (and /dev/zero must not hang start-up).
constexpr std::size_t max_file_bytes = 4 * mib;

constexpr int max_int = std::numeric_limits<int>::max();
constexpr std::size_t max_size = std::numeric_limits<std::size_t>::max();

// Whether `path` begins with `head` and `head` ends at a "/" of it (or is all of it).
bool starts_with_segments(std::string_view path, std::string_view head) {
    return path.starts_with(head) &&
           (head.size() == path.size() || head.back() == '/' || path[head.size()] == '/');
}

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

std::string read_upstream_name(const loader& l, const field& f,
                               const std::vector<upstream_config>& earlier) {
    std::string name = text(l, f);
    if (!valid_name(name))
        l.fail(f, "expected letters, digits, '_', '.' or '-', got " + quote(name));
    for (std::size_t i = 0; i < earlier.size(); ++i)
        if (earlier[i].name == name)
            l.fail(f, "duplicate upstream name " + quote(name) + " (also upstreams[" +
                          std::to_string(i) + "])");
    return name;
}

// Accepted (and checked) on an http:// upstream too, where it has no effect.
void read_upstream_tls(const loader& l, const field& f, upstream_tls_config& out) {
    mapping t(l, f, {"verify", "ca_file"});
    if (auto x = t.get("verify"))
        out.verify = boolean(l, *x);
    if (auto x = t.get("ca_file")) {
        out.ca_file = text(l, *x);
        check_readable_file(l, *x, out.ca_file);
    }
}

void read_timeouts(const loader& l, const field& f, upstream_timeouts& out) {
    mapping t(l, f, {"connect", "head", "idle", "total"});
    if (auto x = t.get("connect"))
        out.connect = read_duration(l, *x, false);
    if (auto x = t.get("head"))
        out.head = read_duration(l, *x, false);
    if (auto x = t.get("idle"))
        out.idle = read_duration(l, *x, false);
    if (auto x = t.get("total"))
        out.total = read_duration(l, *x, false);
}

void read_retries(const loader& l, const field& f, retry_config& out) {
    mapping r(l, f, {"max_attempts", "base_delay", "max_delay"});
    if (auto x = r.get("max_attempts"))
        out.max_attempts = static_cast<int>(integer(l, *x, 1, max_int));
    auto base = r.get("base_delay");
    auto max = r.get("max_delay");
    if (base)
        out.base_delay = read_duration(l, *base, true);
    if (max)
        out.max_delay = read_duration(l, *max, true);
    if (out.base_delay > out.max_delay) {
        if (base)
            l.fail(*base, "must not exceed max_delay (" + format_duration(out.max_delay) + ")");
        l.fail(*max, "must not be below base_delay (" + format_duration(out.base_delay) + ")");
    }
}

rate_limit_config read_rate_limit(const loader& l, const field& f) {
    mapping r(l, f, {"requests_per_second", "burst"});
    rate_limit_config out;
    field rps = r.require("requests_per_second");
    out.requests_per_second = number(l, rps);
    if (!(out.requests_per_second > 0))
        l.fail(rps, "must be greater than 0");
    if (auto x = r.get("burst"))
        out.burst = static_cast<int>(integer(l, *x, 1, max_int));
    return out;
}

// A whole number of at least 1 (a limit of 0 would refuse every call: leave the key out).
std::uint64_t positive(const loader& l, const field& f) {
    return integer(l, f, 1, std::numeric_limits<std::int64_t>::max());
}

fleet_limits_config read_fleet_limits(const loader& l, const field& f) {
    mapping m(l, f,
              {"requests_per_minute", "tokens_per_minute", "max_concurrent", "fallback_share"});
    fleet_limits_config out;
    if (auto x = m.get("requests_per_minute"))
        out.requests_per_minute = positive(l, *x);
    if (auto x = m.get("tokens_per_minute"))
        out.tokens_per_minute = positive(l, *x);
    if (auto x = m.get("max_concurrent"))
        out.max_concurrent = positive(l, *x);
    if (auto x = m.get("fallback_share")) {
        out.fallback_share = number(l, *x);
        if (!(out.fallback_share > 0 && out.fallback_share <= 1))
            l.fail(*x, "expected a share above 0 and at most 1, got " + quote(x->node.Scalar()));
    }
    if (out.requests_per_minute == 0 && out.tokens_per_minute == 0 && out.max_concurrent == 0)
        l.fail(f,
               "expected at least one of requests_per_minute, tokens_per_minute, "
               "max_concurrent");
    return out;
}

double price_value(const loader& l, const field& f) {
    const double v = number(l, f);
    if (v < 0)
        l.fail(f, "must not be negative");
    return v;
}

price_config read_price(const loader& l, const field& f) {
    mapping m(l, f,
              {"input_per_mtok", "output_per_mtok", "per_request", "cached_input_per_mtok",
               "cache_write_input_per_mtok"});
    if (!f.node.IsMap())
        l.fail(f, "expected a mapping with input_per_mtok, output_per_mtok or per_request, got " +
                      describe(f.node));
    price_config out;
    if (auto x = m.get("input_per_mtok"))
        out.input_per_mtok = price_value(l, *x);
    if (auto x = m.get("output_per_mtok"))
        out.output_per_mtok = price_value(l, *x);
    if (auto x = m.get("per_request"))
        out.per_request = price_value(l, *x);
    if (auto x = m.get("cached_input_per_mtok"))
        out.cached_input_per_mtok = price_value(l, *x);
    if (auto x = m.get("cache_write_input_per_mtok"))
        out.cache_write_input_per_mtok = price_value(l, *x);
    return out;
}

// A model name, or a prefix ending in one '*': "sonar", "sonar-*", "*".
std::vector<model_price> read_prices(const loader& l, const field& f) {
    std::vector<model_price> out;
    for (auto& [name, value] : free_mapping(l, f)) {
        const auto star = name.find('*');
        if (star != std::string::npos && star + 1 != name.size())
            l.fail(value, "'*' may only end a model name, got " + quote(name));
        out.push_back({name, read_price(l, value)});
    }
    return out;
}

upstream_config read_upstream(const loader& l, const field& f,
                              const std::vector<upstream_config>& earlier) {
    if (!f.node.IsMap())
        l.fail(f, "expected a mapping with name and url, got " + describe(f.node));
    mapping m(l, f,
              {"name", "url", "tls", "max_concurrent", "queue_timeout", "timeouts", "retries",
               "rate_limit", "fleet_limits", "prices"});
    upstream_config u;
    u.name = read_upstream_name(l, m.require("name"), earlier);
    field url = m.require("url");
    u.url = text(l, url);
    parse_url(l, url, u);
    if (auto v = m.get("tls"))
        read_upstream_tls(l, *v, u.tls);
    if (auto v = m.get("max_concurrent"))
        u.max_concurrent = static_cast<int>(integer(l, *v, 1, max_int));
    if (auto v = m.get("queue_timeout"))
        u.queue_timeout = read_duration(l, *v, false);
    if (auto v = m.get("timeouts"))
        read_timeouts(l, *v, u.timeouts);
    if (auto v = m.get("retries"))
        read_retries(l, *v, u.retries);
    if (auto v = m.get("rate_limit"))
        u.rate_limit = read_rate_limit(l, *v);
    if (auto v = m.get("fleet_limits"))
        u.fleet_limits = read_fleet_limits(l, *v);
    if (auto v = m.get("prices"))
        u.prices = read_prices(l, *v);
    return u;
}

std::string read_route_prefix(const loader& l, const field& f) {
    std::string prefix = text(l, f);
    if (prefix.front() != '/')
        l.fail(f, "must start with \"/\", got " + quote(prefix));
    if (!valid_route_path(prefix))
        l.fail(f, "expected a path without spaces, '?' or '#', got " + quote(prefix));
    return prefix;
}

std::size_t find_upstream(const loader& l, const field& f, const std::string& name,
                          const std::vector<upstream_config>& upstreams) {
    auto it = std::find_if(upstreams.begin(), upstreams.end(),
                           [&](const upstream_config& u) { return u.name == name; });
    if (it == upstreams.end())
        l.fail(f, "no upstream named " + quote(name));
    return static_cast<std::size_t>(it - upstreams.begin());
}

// What is left after stripping must still be a path: cut at a "/".
std::string read_strip_prefix(const loader& l, const field& f, const std::string& prefix) {
    std::string strip = text(l, f);
    if (strip.front() != '/')
        l.fail(f, "must start with \"/\", got " + quote(strip));
    if (!starts_with_segments(prefix, strip))
        l.fail(f, "must be a leading part of prefix " + quote(prefix) +
                      " that ends at a \"/\", got " + quote(strip));
    return strip;
}

// Routes are tried in order, first match wins: a route that an earlier one always takes first is
// a mistake (typically "/" written before the specific routes).
void check_reachable(const loader& l, const field& f, const std::string& prefix,
                     const std::vector<route_config>& earlier) {
    for (std::size_t i = 0; i < earlier.size(); ++i) {
        const std::string& first = earlier[i].prefix;
        if (starts_with_segments(prefix, first))
            l.fail(f, "never matches: routes[" + std::to_string(i) + "] (prefix " + quote(first) +
                          ") comes first and takes every request this one would");
    }
}

route_config read_route(const loader& l, const field& f,
                        const std::vector<upstream_config>& upstreams,
                        const std::vector<route_config>& earlier) {
    if (!f.node.IsMap())
        l.fail(f, "expected a mapping with prefix and upstream, got " + describe(f.node));
    mapping m(l, f, {"prefix", "upstream", "strip_prefix", "coalesce"});
    route_config r;
    field prefix = m.require("prefix");
    r.prefix = read_route_prefix(l, prefix);
    field upstream = m.require("upstream");
    r.upstream = text(l, upstream);
    r.upstream_index = find_upstream(l, upstream, r.upstream, upstreams);
    if (auto v = m.get("strip_prefix"))
        r.strip_prefix = read_strip_prefix(l, *v, r.prefix);
    if (auto v = m.get("coalesce"))
        r.coalesce = boolean(l, *v);
    check_reachable(l, prefix, r.prefix, earlier);
    return r;
}

// A cache smaller than one response could keep nothing.
void read_cache_sizes(const loader& l, const mapping& m, coalesce_config& out) {
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
}

// Tenant isolation is absolute: the credentials are always part of the key; the list only adds
// tenant headers (such as x-org-id) to them.
std::vector<std::string> read_identity_headers(const loader& l, const field& f) {
    std::vector<std::string> out = read_header_list(l, f);
    for (const char* always : {"authorization", "x-api-key"})
        if (std::find(out.begin(), out.end(), always) == out.end())
            out.emplace_back(always);
    return out;
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
    read_cache_sizes(l, m, out);
    if (auto v = m.get("identity_headers"))
        out.identity_headers = read_identity_headers(l, *v);
    if (auto v = m.get("shared_headers"))
        read_shared_headers(l, *v, out);
    if (auto v = m.get("vary_headers"))
        out.vary_headers = read_header_list(l, *v);
    if (auto v = m.get("ignore_fields"))
        out.ignore_fields = read_json_pointers(l, *v);
    if (auto v = m.get("bypass_header"))
        out.bypass_header = read_header_name(l, *v);
    if (auto v = m.get("orphan"))
        out.orphan = one_of<orphan_policy>(
            l, *v, {{"finish", orphan_policy::finish}, {"cancel", orphan_policy::cancel}});
    if (auto v = m.get("max_subscribers_per_flight"))
        out.max_subscribers_per_flight = static_cast<std::size_t>(integer(l, *v, 1, max_size));
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
        out.max_connections = static_cast<std::size_t>(integer(l, *v, 1, max_size));
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

cluster_config read_cluster(const loader& l, const field& f) {
    mapping m(
        l, f,
        {"redis", "username", "password_file", "tls", "key_secret_file", "lease", "timeouts"});
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

void read_upstreams(const loader& l, const mapping& top, config& c) {
    field upstreams = top.require("upstreams");
    for (const field& item : sequence(l, upstreams))
        c.upstreams.push_back(read_upstream(l, item, c.upstreams));
    if (c.upstreams.empty())
        l.fail(upstreams, "must list at least one upstream");
}

void read_routes(const loader& l, const mapping& top, config& c) {
    field routes = top.require("routes");
    for (const field& item : sequence(l, routes))
        c.routes.push_back(read_route(l, item, c.upstreams, c.routes));
    if (c.routes.empty())
        l.fail(routes, "must list at least one route");
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
    read_upstreams(l, top, *c);
    read_routes(l, top, *c);
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
}  // namespace coalescer::ops::detail

namespace coalescer::ops {

std::shared_ptr<const config> load_config_text(const std::string& yaml, const std::string& source) {
    detail::loader l(source);
    const YAML::Node document = detail::the_document(l, yaml);
    if (document.IsNull())
        l.fail(0, "document", "empty; expected a mapping with upstreams and routes");
    try {
        return detail::read_config(l, document);
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
        throw cannot_read(detail::errno_text(errno));
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(fp, &std::fclose);
    struct stat st {};
    if (::fstat(::fileno(fp), &st) != 0)
        throw cannot_read(detail::errno_text(errno));
    if (S_ISDIR(st.st_mode))
        throw cannot_read(detail::errno_text(EISDIR));
    std::string text;
    char buf[16384];
    while (true) {
        std::size_t n = std::fread(buf, 1, sizeof buf, fp);
        text.append(buf, n);
        if (text.size() > detail::max_file_bytes)
            throw cannot_read("larger than " + detail::format_size(detail::max_file_bytes));
        if (n < sizeof buf)
            break;
    }
    if (std::ferror(fp))
        throw cannot_read(detail::errno_text(errno));
    return load_config_text(text, path);
}

}  // namespace coalescer::ops
