// The YAML configuration loader: the shipped configs, the defaults, durations and sizes, and
// one test per class of error with the exact "FILE:LINE: KEY:" it must name.
#include "ops/config.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

using namespace coalescer::ops;

namespace {

// Enough to load: everything else takes its default. Five lines.
const std::string minimal = R"(upstreams:
  - name: mock
    url: http://127.0.0.1:8081
routes:
  - {prefix: /, upstream: mock}
)";

std::shared_ptr<const config> load(const std::string& yaml) {
    return load_config_text(yaml, "t.yaml");
}

std::string error_of(const std::string& yaml) {
    try {
        load(yaml);
    } catch (const config_error& e) {
        return e.what();
    }
    return "(loaded without an error)";
}

std::string file_error_of(const std::string& path) {
    try {
        load_config_file(path);
    } catch (const config_error& e) {
        return e.what();
    }
    return "(loaded without an error)";
}

// The message names FILE:LINE: KEY: (`prefix`) and is one line.
#define CHECK_CONFIG_ERROR(yaml, prefix)                 \
    do {                                                 \
        const std::string message_ = error_of(yaml);     \
        CAPTURE(message_);                               \
        CHECK(message_.starts_with(prefix));             \
        CHECK(message_.find('\n') == std::string::npos); \
        CHECK(message_.find('\r') == std::string::npos); \
    } while (false)

// A scratch directory for files the loader must (or must not) be able to read.
struct scratch_dir {
    std::filesystem::path path = std::filesystem::temp_directory_path() /
                                 ("coalescer_config_test_" + std::to_string(::getpid()));
    scratch_dir() { std::filesystem::create_directories(path); }
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string write(const std::string& name, const std::string& content) const {
        auto p = path / name;
        std::ofstream(p) << content;
        return p.string();
    }
};

std::string source_file(const std::string& relative) {
    return std::string(COALESCER_SOURCE_DIR "/") + relative;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The shipped configs

TEST_CASE("config: config/coalescer.yaml loads with Perplexity at the root") {
    auto c = load_config_file(source_file("config/coalescer.yaml"));
    CHECK(c->source == source_file("config/coalescer.yaml"));
    CHECK(c->listen.address == "127.0.0.1");
    CHECK(c->listen.port == 8080);
    CHECK_FALSE(c->listen.tls.has_value());
    CHECK(c->admin.address == "127.0.0.1");
    CHECK(c->admin.port == 9090);

    REQUIRE(c->upstreams.size() == 1);
    const auto& u = c->upstreams[0];
    CHECK(u.name == "perplexity");
    CHECK(u.url == "https://api.perplexity.ai");
    CHECK(u.https);
    CHECK(u.host == "api.perplexity.ai");
    CHECK(u.port == 443);
    CHECK(u.base_path == "");
    CHECK(u.tls.verify);
    CHECK(u.tls.ca_file.empty());
    CHECK(u.max_concurrent == 64);
    CHECK(u.timeouts.total == std::chrono::minutes(10));
    CHECK(u.retries.base_delay == std::chrono::milliseconds(200));

    REQUIRE(c->routes.size() == 3);
    CHECK(c->routes[0].prefix == "/chat/completions");
    CHECK(c->routes[0].coalesce);
    CHECK(c->routes[1].prefix == "/search");
    CHECK(c->routes[1].coalesce);
    CHECK(c->routes[2].prefix == "/");
    CHECK_FALSE(c->routes[2].coalesce);
    for (const auto& r : c->routes) {
        CHECK(r.upstream == "perplexity");
        CHECK(r.upstream_index == 0);
        CHECK(r.strip_prefix.empty());
    }
    CHECK(c->coalesce.max_response_bytes == 8 * mib);
    CHECK(c->coalesce.orphan == orphan_policy::finish);
    CHECK(c->limits.max_header_bytes == 16 * kib);
    CHECK(c->log.format == log_format::json);
}

TEST_CASE("config: config/multi-provider.yaml routes three providers by prefix") {
    auto c = load_config_file(source_file("config/multi-provider.yaml"));
    REQUIRE(c->upstreams.size() == 3);
    CHECK(c->upstreams[0].name == "perplexity");
    CHECK(c->upstreams[1].name == "openai");
    CHECK(c->upstreams[1].host == "api.openai.com");
    CHECK(c->upstreams[1].base_path == "/v1");
    CHECK(c->upstreams[1].port == 443);
    CHECK(c->upstreams[2].name == "anthropic");
    CHECK(c->upstreams[2].host == "api.anthropic.com");
    CHECK(c->upstreams[2].base_path == "");

    REQUIRE(c->routes.size() == 6);
    struct expected_route {
        const char* prefix;
        std::size_t upstream;
        const char* strip;
        bool coalesce;
    };
    const expected_route expected[] = {
        {"/perplexity/chat/completions", 0, "/perplexity", true},
        {"/perplexity/", 0, "/perplexity", false},
        {"/openai/chat/completions", 1, "/openai", true},
        {"/openai/", 1, "/openai", false},
        {"/anthropic/v1/messages", 2, "/anthropic", true},
        {"/anthropic/", 2, "/anthropic", false},
    };
    for (std::size_t i = 0; i < 6; ++i) {
        CAPTURE(i);
        CHECK(c->routes[i].prefix == expected[i].prefix);
        CHECK(c->routes[i].upstream_index == expected[i].upstream);
        CHECK(c->routes[i].upstream == c->upstreams[expected[i].upstream].name);
        CHECK(c->routes[i].strip_prefix == expected[i].strip);
        CHECK(c->routes[i].coalesce == expected[i].coalesce);
    }
    // What the OpenAI SDK sends (base URL http://127.0.0.1:8080/openai) reaches
    // /v1/chat/completions.
    const auto& r = c->routes[2];
    std::string upstream_path =
        c->upstreams[r.upstream_index].base_path +
        std::string("/openai/chat/completions").substr(r.strip_prefix.size());
    CHECK(upstream_path == "/v1/chat/completions");
}

TEST_CASE("config: config/mock.yaml points at the mock provider with short timeouts") {
    auto c = load_config_file(source_file("config/mock.yaml"));
    REQUIRE(c->upstreams.size() == 1);
    const auto& u = c->upstreams[0];
    CHECK(u.name == "mock");
    CHECK_FALSE(u.https);
    CHECK(u.host == "127.0.0.1");
    CHECK(u.port == 8081);
    CHECK(u.base_path == "");
    CHECK(u.timeouts.connect == std::chrono::seconds(2));
    CHECK(u.timeouts.head == std::chrono::seconds(30));
    CHECK(u.timeouts.idle == std::chrono::seconds(30));
    CHECK(u.timeouts.total == std::chrono::minutes(2));
    CHECK(u.retries.max_attempts == 3);
    CHECK(u.retries.max_delay == std::chrono::seconds(5));
    REQUIRE(c->routes.size() == 2);
    CHECK(c->routes[0].prefix == "/chat/completions");
    CHECK(c->routes[0].coalesce);
    CHECK(c->routes[1].prefix == "/");
    CHECK_FALSE(c->routes[1].coalesce);
    CHECK(c->listen.port == 8080);
    CHECK(c->admin.port == 9090);
}

// ---------------------------------------------------------------------------------------------
// Defaults: DESIGN.md's numbers when only upstreams and routes are given

TEST_CASE("config: only upstreams and routes given, everything else is DESIGN.md's default") {
    auto c = load(minimal);
    CHECK(c->source == "t.yaml");
    CHECK(c->workers == 0);
    CHECK_FALSE(c->pin_workers);
    CHECK(c->listen.address == "127.0.0.1");
    CHECK(c->listen.port == 8080);
    CHECK_FALSE(c->listen.tls.has_value());
    CHECK(c->admin.address == "127.0.0.1");
    CHECK(c->admin.port == 9090);

    REQUIRE(c->upstreams.size() == 1);
    const auto& u = c->upstreams[0];
    CHECK(u.tls.verify);
    CHECK(u.tls.ca_file.empty());
    CHECK(u.max_concurrent == 64);
    CHECK(u.queue_timeout == std::chrono::seconds(30));
    CHECK(u.timeouts.connect == std::chrono::seconds(5));
    CHECK(u.timeouts.head == std::chrono::seconds(120));
    CHECK(u.timeouts.idle == std::chrono::seconds(60));
    CHECK(u.timeouts.total == std::chrono::minutes(10));
    CHECK(u.retries.max_attempts == 3);
    CHECK(u.retries.base_delay == std::chrono::milliseconds(200));
    CHECK(u.retries.max_delay == std::chrono::seconds(5));
    CHECK_FALSE(u.rate_limit.has_value());

    REQUIRE(c->routes.size() == 1);
    CHECK(c->routes[0].coalesce);
    CHECK(c->routes[0].strip_prefix.empty());
    CHECK(c->routes[0].upstream_index == 0);

    const auto& k = c->coalesce;
    CHECK(k.result_ttl == std::chrono::seconds(10));
    CHECK(k.max_response_bytes == 8 * 1024 * 1024);
    CHECK(k.max_cache_bytes == 256 * 1024 * 1024);
    CHECK(k.identity_headers == std::vector<std::string>{"authorization", "x-api-key"});
    CHECK(k.vary_headers == std::vector<std::string>{"openai-organization", "openai-project",
                                                     "anthropic-version", "anthropic-beta"});
    CHECK(k.ignore_fields.empty());
    CHECK(k.bypass_header == "x-coalesce-bypass");
    CHECK(k.orphan == orphan_policy::finish);
    CHECK(k.max_subscribers_per_flight == 10000);

    CHECK(c->limits.max_request_body == 16 * 1024 * 1024);
    CHECK(c->limits.max_header_bytes == 16 * 1024);
    CHECK(c->limits.header_timeout == std::chrono::seconds(10));
    CHECK(c->limits.idle_timeout == std::chrono::seconds(60));
    CHECK(c->limits.write_timeout == std::chrono::seconds(30));
    CHECK(c->limits.max_connections == 20000);
    CHECK(c->shutdown.drain_delay == std::chrono::seconds(2));
    CHECK(c->shutdown.drain_timeout == std::chrono::seconds(30));
    CHECK(c->log.level == log_level::info);
    CHECK(c->log.format == log_format::json);
}

TEST_CASE("config: every section written out is read") {
    scratch_dir dir;
    std::string ca = dir.write("ca.pem", "ca");
    std::string cert = dir.write("cert.pem", "cert");
    std::string key = dir.write("key.pem", "key");
    auto c = load(
        "workers: 4\n"
        "pin_workers: true\n"
        "listen: {address: '::1', port: 0, tls: {cert_file: " +
        cert + ", key_file: " + key + "}}\n" +
        "admin: {address: localhost, port: 0}\n"
        "upstreams:\n"
        "  - name: a.b_c-1\n"
        "    url: HTTPS://[::1]:8443/api/v2/\n"
        "    tls: {verify: false, ca_file: " +
        ca + "}\n" +
        "    max_concurrent: 5\n"
        "    queue_timeout: 1h\n"
        "    timeouts: {connect: 250ms, head: 1s, idle: 2s, total: 3m}\n"
        "    retries: {max_attempts: 1, base_delay: 0, max_delay: 0s}\n"
        "    rate_limit: {requests_per_second: 2.5, burst: 10}\n"
        "routes:\n"
        "  - {prefix: /x/y, upstream: a.b_c-1, strip_prefix: /x, coalesce: false}\n"
        "coalesce:\n"
        "  result_ttl: 0\n"
        "  max_response_bytes: 1MB\n"
        "  max_cache_bytes: 0\n"
        "  identity_headers: [X-Org-Id]\n"
        "  shared_headers: [X-Gateway-Token]\n"
        "  vary_headers: []\n"
        "  ignore_fields: [/user, /metadata/a~1b, /x~0y]\n"
        "  bypass_header: X-No-Coalesce\n"
        "  orphan: cancel\n"
        "  max_subscribers_per_flight: 1\n"
        "limits: {max_request_body: 1, max_header_bytes: 1KiB, header_timeout: 1ms, idle_timeout: "
        "2ms,\n"
        "         write_timeout: 3ms, max_connections: 1}\n"
        "shutdown: {drain_delay: 0, drain_timeout: 1s}\n"
        "log: {level: debug, format: text}\n");
    CHECK(c->workers == 4);
    CHECK(c->pin_workers);
    CHECK(c->listen.address == "::1");
    CHECK(c->listen.port == 0);
    REQUIRE(c->listen.tls.has_value());
    CHECK(c->listen.tls->cert_file == cert);
    CHECK(c->listen.tls->key_file == key);
    CHECK(c->admin.address == "localhost");
    const auto& u = c->upstreams.at(0);
    CHECK(u.https);
    CHECK(u.host == "::1");
    CHECK(u.port == 8443);
    CHECK(u.base_path == "/api/v2");
    CHECK_FALSE(u.tls.verify);
    CHECK(u.tls.ca_file == ca);
    CHECK(u.max_concurrent == 5);
    CHECK(u.queue_timeout == std::chrono::hours(1));
    CHECK(u.timeouts.connect == std::chrono::milliseconds(250));
    CHECK(u.timeouts.total == std::chrono::minutes(3));
    CHECK(u.retries.max_attempts == 1);
    CHECK(u.retries.base_delay == duration::zero());
    REQUIRE(u.rate_limit.has_value());
    CHECK(u.rate_limit->requests_per_second == doctest::Approx(2.5));
    CHECK(u.rate_limit->burst == 10);
    CHECK(c->routes.at(0).strip_prefix == "/x");
    CHECK_FALSE(c->routes.at(0).coalesce);
    CHECK(c->coalesce.result_ttl == duration::zero());
    CHECK(c->coalesce.max_response_bytes == 1000000);
    CHECK(c->coalesce.max_cache_bytes == 0);
    // Header names are stored lower case; the credentials always stay in the key.
    CHECK(c->coalesce.identity_headers ==
          std::vector<std::string>{"x-org-id", "authorization", "x-api-key"});
    CHECK(c->coalesce.shared_headers == std::vector<std::string>{"x-gateway-token"});
    CHECK(c->coalesce.vary_headers.empty());
    CHECK(c->coalesce.ignore_fields ==
          std::vector<std::string>{"/user", "/metadata/a~1b", "/x~0y"});
    CHECK(c->coalesce.bypass_header == "x-no-coalesce");
    CHECK(c->coalesce.orphan == orphan_policy::cancel);
    CHECK(c->coalesce.max_subscribers_per_flight == 1);
    CHECK(c->limits.max_request_body == 1);
    CHECK(c->limits.max_header_bytes == 1024);
    CHECK(c->limits.write_timeout == std::chrono::milliseconds(3));
    CHECK(c->shutdown.drain_delay == duration::zero());
    CHECK(c->log.level == log_level::debug);
    CHECK(c->log.format == log_format::text);
}

TEST_CASE("config: upstream URLs are split into scheme, host, port and base path") {
    struct row {
        const char* url;
        bool https;
        const char* host;
        int port;
        const char* base_path;
    };
    const row rows[] = {
        {"https://api.openai.com/v1", true, "api.openai.com", 443, "/v1"},
        {"https://api.openai.com/v1/", true, "api.openai.com", 443, "/v1"},
        {"https://api.perplexity.ai", true, "api.perplexity.ai", 443, ""},
        {"https://api.perplexity.ai/", true, "api.perplexity.ai", 443, ""},
        {"http://127.0.0.1:8081", false, "127.0.0.1", 8081, ""},
        {"http://localhost", false, "localhost", 80, ""},
        {"http://[::1]:9000/a/b", false, "::1", 9000, "/a/b"},
        {"https://[2001:db8::1]", true, "2001:db8::1", 443, ""},
        {"https://h:1/%7Euser", true, "h", 1, "/%7Euser"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.url);
        auto c = load(std::string("upstreams: [{name: u, url: '") + r.url +
                      "'}]\nroutes: [{prefix: /, upstream: u}]\n");
        const auto& u = c->upstreams.at(0);
        CHECK(u.url == r.url);
        CHECK(u.https == r.https);
        CHECK(u.host == r.host);
        CHECK(u.port == r.port);
        CHECK(u.base_path == r.base_path);
    }
    const char* bad[] = {"api.openai.com/v1", "ftp://h",        "https://",     "https://:443",
                         "http://h:0",        "http://h:65536", "http://h:x",   "http://h:",
                         "http://h/a?b=1",    "http://h/#f",    "http://h?q",   "http://h o",
                         "http://[::1",       "http://[zz]:1",  "http://h/a b", "http://h/%zz"};
    for (const char* url : bad) {
        CAPTURE(url);
        CHECK_CONFIG_ERROR(std::string("upstreams: [{name: u, url: '") + url +
                               "'}]\nroutes: [{prefix: /, upstream: u}]\n",
                           "t.yaml:1: upstreams[0].url: ");
    }
}

// ---------------------------------------------------------------------------------------------
// Durations and sizes

TEST_CASE("config: parse_duration") {
    using namespace std::chrono;
    CHECK(parse_duration("250ms") == milliseconds(250));
    CHECK(parse_duration("10s") == seconds(10));
    CHECK(parse_duration("2m") == minutes(2));
    CHECK(parse_duration("1h") == hours(1));
    CHECK(parse_duration("0") == milliseconds(0));
    CHECK(parse_duration("0s") == milliseconds(0));
    CHECK(parse_duration("0ms") == milliseconds(0));
    CHECK(parse_duration("007s") == seconds(7));
    CHECK(parse_duration("876000h") == hours(876000));  // a hundred years: the longest

    for (const char* bad : {"",
                            "10",
                            "5",
                            "s",
                            "ms",
                            "-1s",
                            "+1s",
                            "1.5s",
                            "1 s",
                            " 1s",
                            "1s ",
                            "10S",
                            "1d",
                            "1sec",
                            "1m30s",
                            "fast",
                            "0x10s",
                            "1e3ms",
                            "876001h",
                            "99999999999999999999ms",
                            "18446744073709551615h"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_duration(bad).has_value());
    }
}

TEST_CASE("config: parse_size") {
    CHECK(parse_size("0") == 0u);
    CHECK(parse_size("512") == 512u);
    CHECK(parse_size("64KiB") == 64u * 1024);
    CHECK(parse_size("8MiB") == 8u * 1024 * 1024);
    CHECK(parse_size("1GiB") == 1024u * 1024 * 1024);
    CHECK(parse_size("2KB") == 2000u);
    CHECK(parse_size("3MB") == 3000000u);
    CHECK(parse_size("4GB") == 4000000000u);
    CHECK(parse_size("18446744073709551615") == 18446744073709551615u);
    CHECK(parse_size("17179869183GiB") == 17179869183ull << 30);

    for (const char* bad :
         {"", "KiB", "-1", "+1", "1.5MiB", "1 KiB", "1kib", "1KIB", "1k", "1K", "1Ki", "1B", "1TiB",
          "big", "0x10", "18446744073709551616", "17179869184GiB", "18446744073709552KB"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_size(bad).has_value());
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: one line each, naming FILE:LINE: KEY

TEST_CASE("config error: unknown keys, at the top level and nested") {
    CHECK(error_of("listne: {port: 1}\n" + minimal) == "t.yaml:1: listne: unknown key");
    CHECK(error_of("listen:\n  address: 127.0.0.1\n  prot: 8080\n" + minimal) ==
          "t.yaml:3: listen.prot: unknown key");
    CHECK_CONFIG_ERROR(R"(upstreams:
  - name: mock
    url: http://127.0.0.1:8081
  - name: other
    url: http://127.0.0.1:8082
    timeouts:
      conect: 1s
routes:
  - {prefix: /, upstream: mock}
)",
                       "t.yaml:7: upstreams[1].timeouts.conect: unknown key");
    CHECK_CONFIG_ERROR(minimal + "  - {prefix: /a, upstream: mock, strip: /a}\n",
                       "t.yaml:6: routes[1].strip: unknown key");
    CHECK_CONFIG_ERROR(minimal + "coalesce: {ttl: 1s}\n", "t.yaml:6: coalesce.ttl: unknown key");
    CHECK_CONFIG_ERROR(minimal + "listen: {tls: {cert: a}}\n",
                       "t.yaml:6: listen.tls.cert: unknown key");
    CHECK_CONFIG_ERROR(minimal + "log:\n  level: info\n  level: debug\n",
                       "t.yaml:8: log.level: duplicate key");
    CHECK_CONFIG_ERROR(minimal + "? [a]\n: 1\n", "t.yaml:6: ?: keys must be plain strings");
}

TEST_CASE("config error: wrong types") {
    CHECK_CONFIG_ERROR("listen: {port: \"8080\"}\n" + minimal,
                       "t.yaml:1: listen.port: expected an integer, got the string");
    CHECK_CONFIG_ERROR("listen: {port: [8080]}\n" + minimal,
                       "t.yaml:1: listen.port: expected an integer, got a sequence");
    CHECK_CONFIG_ERROR("listen: {port: }\n" + minimal,
                       "t.yaml:1: listen.port: expected an integer, got an empty value");
    CHECK_CONFIG_ERROR("listen:\n  port:\n" + minimal,
                       "t.yaml:2: listen.port: expected an integer, got an empty value");
    CHECK_CONFIG_ERROR("workers: 1.5\n" + minimal,
                       "t.yaml:1: workers: expected a whole number, got 1.5");
    CHECK_CONFIG_ERROR("workers: -1\n" + minimal, "t.yaml:1: workers: must not be negative");
    CHECK_CONFIG_ERROR("workers: four\n" + minimal,
                       "t.yaml:1: workers: expected an integer, got \"four\"");
    CHECK_CONFIG_ERROR("workers: +4\n" + minimal,
                       "t.yaml:1: workers: expected an integer, got \"+4\"");
    CHECK_CONFIG_ERROR("workers: 0x10\n" + minimal,
                       "t.yaml:1: workers: expected an integer, got \"0x10\"");
    CHECK_CONFIG_ERROR("workers: 99999999999999999999999\n" + minimal,
                       "t.yaml:1: workers: is too large");
    CHECK_CONFIG_ERROR("workers: {n: 1}\n" + minimal,
                       "t.yaml:1: workers: expected an integer, got a mapping");
    CHECK_CONFIG_ERROR("pin_workers: yes please\n" + minimal,
                       "t.yaml:1: pin_workers: expected true or false, got \"yes please\"");
    CHECK_CONFIG_ERROR("listen: [127.0.0.1, 8080]\n" + minimal,
                       "t.yaml:1: listen: expected a mapping, got a sequence");
    CHECK_CONFIG_ERROR("listen: {address: {ip: 1}}\n" + minimal,
                       "t.yaml:1: listen.address: expected a string, got a mapping");
    CHECK_CONFIG_ERROR(
        minimal + "  - {prefix: /a, upstream: mock, coalesce: \"true\"}\n",
        "t.yaml:6: routes[1].coalesce: expected true or false, got the string \"true\"");
    CHECK_CONFIG_ERROR(minimal + "  - {prefix: /a, upstream: mock, coalesce: yes}\n",
                       "t.yaml:6: routes[1].coalesce: expected true or false");
    CHECK_CONFIG_ERROR(
        minimal + "coalesce: {identity_headers: authorization}\n",
        "t.yaml:6: coalesce.identity_headers: expected a sequence, got \"authorization\"");
    CHECK_CONFIG_ERROR(minimal + "coalesce: {max_response_bytes: 1.5MiB}\n",
                       "t.yaml:6: coalesce.max_response_bytes: expected a size such as 512, 64KiB "
                       "or 8MiB, got \"1.5MiB\"");
    CHECK_CONFIG_ERROR(minimal + "limits: {max_request_body: -1}\n",
                       "t.yaml:6: limits.max_request_body: expected a size");
    CHECK_CONFIG_ERROR(minimal + "limits: {max_connections: 1e9}\n",
                       "t.yaml:6: limits.max_connections: expected a whole number");
    CHECK(error_of("upstreams:\n  - name: a\n    url: http://h\n    timeouts: {connect: "
                   "fast}\nroutes: [{prefix: /, upstream: a}]\n") ==
          "t.yaml:4: upstreams[0].timeouts.connect: expected a duration such as 250ms, 10s or 2m, "
          "got \"fast\"");
    CHECK_CONFIG_ERROR(minimal + "shutdown: {drain_delay: 10}\n",
                       "t.yaml:6: shutdown.drain_delay: expected a duration");
    CHECK_CONFIG_ERROR(
        minimal + "log: {level: verbose}\n",
        "t.yaml:6: log.level: expected one of debug, info, warn, error, got \"verbose\"");
    CHECK_CONFIG_ERROR(minimal + "log: {format: xml}\n",
                       "t.yaml:6: log.format: expected one of json, text");
    CHECK_CONFIG_ERROR("upstreams: {name: a}\nroutes: []\n",
                       "t.yaml:1: upstreams: expected a sequence, got a mapping");
}

TEST_CASE("config error: out-of-range ports, workers and counts") {
    CHECK(error_of("listen: {port: 65536}\n" + minimal) ==
          "t.yaml:1: listen.port: must be at most 65535, got 65536");
    CHECK_CONFIG_ERROR(minimal + "admin:\n  port: 100000\n",
                       "t.yaml:7: admin.port: must be at most 65535");
    CHECK_CONFIG_ERROR("workers: 1025\n" + minimal, "t.yaml:1: workers: must be at most 1024");
    CHECK(load("workers: 1024\n" + minimal)->workers == 1024);
    CHECK(load("listen: {port: 65535}\n" + minimal)->listen.port == 65535);
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', max_concurrent: 0}]\nroutes: [{prefix: /, "
        "upstream: a}]\n",
        "t.yaml:1: upstreams[0].max_concurrent: must be at least 1");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', retries: {max_attempts: 0}}]\nroutes: [{prefix: /, "
        "upstream: a}]\n",
        "t.yaml:1: upstreams[0].retries.max_attempts: must be at least 1");
    CHECK_CONFIG_ERROR(minimal + "coalesce: {max_subscribers_per_flight: 0}\n",
                       "t.yaml:6: coalesce.max_subscribers_per_flight: must be at least 1");
    CHECK_CONFIG_ERROR(minimal + "limits: {max_connections: 0}\n",
                       "t.yaml:6: limits.max_connections: must be at least 1");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', rate_limit: {requests_per_second: 0}}]\nroutes: "
        "[{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].rate_limit.requests_per_second: must be greater than 0");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', rate_limit: {requests_per_second: -3}}]\nroutes: "
        "[{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].rate_limit.requests_per_second: must be greater than 0");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', rate_limit: {requests_per_second: .nan}}]\nroutes: "
        "[{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].rate_limit.requests_per_second: expected a number");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', rate_limit: {requests_per_second: 5, burst: "
        "0}}]\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].rate_limit.burst: must be at least 1");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', rate_limit: {burst: 2}}]\nroutes: [{prefix: /, "
        "upstream: a}]\n",
        "t.yaml:1: upstreams[0].rate_limit.requests_per_second: required");
}

TEST_CASE("config error: zero timeouts and sizes, and zero where it means none") {
    CHECK(error_of(R"(upstreams:
  - name: a
    url: http://h
    timeouts:
      head: 1s
      connect: 0s
routes: [{prefix: /, upstream: a}]
)") == "t.yaml:6: upstreams[0].timeouts.connect: must be greater than 0");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', queue_timeout: 0}]\nroutes: [{prefix: /, upstream: "
        "a}]\n",
        "t.yaml:1: upstreams[0].queue_timeout: must be greater than 0");
    CHECK_CONFIG_ERROR(minimal + "limits: {header_timeout: 0ms}\n",
                       "t.yaml:6: limits.header_timeout: must be greater than 0");
    CHECK_CONFIG_ERROR(minimal + "limits: {idle_timeout: 0}\n",
                       "t.yaml:6: limits.idle_timeout: must be greater than 0");
    CHECK_CONFIG_ERROR(minimal + "limits: {write_timeout: 0s}\n",
                       "t.yaml:6: limits.write_timeout: must be greater than 0");
    CHECK_CONFIG_ERROR(minimal + "shutdown: {drain_timeout: 0s}\n",
                       "t.yaml:6: shutdown.drain_timeout: must be greater than 0");
    CHECK_CONFIG_ERROR(minimal + "limits: {max_request_body: 0}\n",
                       "t.yaml:6: limits.max_request_body: must be greater than 0");
    CHECK_CONFIG_ERROR(minimal + "limits: {max_header_bytes: 1023}\n",
                       "t.yaml:6: limits.max_header_bytes: must be at least 1KiB, got 1023");
    CHECK_CONFIG_ERROR(minimal + "coalesce: {max_response_bytes: 0}\n",
                       "t.yaml:6: coalesce.max_response_bytes: must be greater than 0");
    // result_ttl and drain_delay may be 0.
    CHECK(load(minimal + "coalesce: {result_ttl: 0s}\nshutdown: {drain_delay: 0ms}\n")
              ->coalesce.result_ttl.count() == 0);
}

TEST_CASE("config error: base_delay above max_delay, cache smaller than a response") {
    CHECK(error_of(R"(upstreams:
  - name: a
    url: http://h
    retries:
      base_delay: 10s
      max_delay: 2s
routes: [{prefix: /, upstream: a}]
)") == "t.yaml:5: upstreams[0].retries.base_delay: must not exceed max_delay (2s)");
    // Only max_delay written: it is the one to blame.
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', retries: {max_delay: 100ms}}]\nroutes: [{prefix: "
        "/, upstream: a}]\n",
        "t.yaml:1: upstreams[0].retries.max_delay: must not be below base_delay (200ms)");
    CHECK_CONFIG_ERROR(
        minimal + "coalesce:\n  max_response_bytes: 8MiB\n  max_cache_bytes: 4MiB\n",
        "t.yaml:8: coalesce.max_cache_bytes: must be at least max_response_bytes (8MiB)");
    CHECK_CONFIG_ERROR(
        minimal + "coalesce:\n  max_response_bytes: 1GiB\n",
        "t.yaml:7: coalesce.max_response_bytes: must not exceed max_cache_bytes (256MiB)");
    CHECK(load(minimal + "coalesce: {result_ttl: 0, max_cache_bytes: 0}\n")
              ->coalesce.max_cache_bytes == 0);
}

TEST_CASE("config error: routes name defined upstreams and reachable prefixes") {
    CHECK(error_of(R"(upstreams:
  - name: perplexity
    url: https://api.perplexity.ai
routes:
  - {prefix: /, upstream: perplexty}
)") == "t.yaml:5: routes[0].upstream: no upstream named \"perplexty\"");
    CHECK_CONFIG_ERROR(minimal + "  - {upstream: mock}\n", "t.yaml:6: routes[1].prefix: required");
    CHECK_CONFIG_ERROR(minimal + "  - prefix: /b\n", "t.yaml:6: routes[1].upstream: required");
    CHECK_CONFIG_ERROR(minimal + "  - {prefix: chat, upstream: mock}\n",
                       "t.yaml:6: routes[1].prefix: must start with \"/\"");
    CHECK_CONFIG_ERROR(minimal + "  - {prefix: '/a b', upstream: mock}\n",
                       "t.yaml:6: routes[1].prefix: expected a path");
    // "/" first takes every request: the route after it never matches.
    CHECK_CONFIG_ERROR(minimal + "  - {prefix: /chat/completions, upstream: mock}\n",
                       "t.yaml:6: routes[1].prefix: never matches: routes[0] (prefix \"/\")");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h'}]\nroutes:\n  - {prefix: /x, upstream: a}\n  - "
        "{prefix: /x/y, upstream: a}\n",
        "t.yaml:4: routes[1].prefix: never matches");
    // Not a path-segment prefix: both can match.
    CHECK(load("upstreams: [{name: a, url: 'http://h'}]\nroutes:\n  - {prefix: /search, upstream: "
               "a}\n  - {prefix: /searches, upstream: a}\n")
              ->routes.size() == 2);
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h'}]\nroutes: [{prefix: /openai/, upstream: a, "
        "strip_prefix: /anthropic}]\n",
        "t.yaml:2: routes[0].strip_prefix: must be a leading part of prefix \"/openai/\"");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h'}]\nroutes: [{prefix: /openai/, upstream: a, "
        "strip_prefix: /open}]\n",
        "t.yaml:2: routes[0].strip_prefix: must be a leading part");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h'}]\nroutes: [{prefix: /openai/, upstream: a, "
        "strip_prefix: openai}]\n",
        "t.yaml:2: routes[0].strip_prefix: must start with \"/\"");
    CHECK(load("upstreams: [{name: a, url: 'http://h'}]\nroutes: [{prefix: /openai/, upstream: a, "
               "strip_prefix: /openai/}]\n")
              ->routes[0]
              .strip_prefix == "/openai/");
    CHECK_CONFIG_ERROR("upstreams: [{name: a, url: 'http://h'}]\nroutes: []\n",
                       "t.yaml:2: routes: must list at least one route");
}

TEST_CASE("config error: upstream names, schemes and credentials in URLs") {
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'ftp://files.example.com'}]\nroutes: [{prefix: /, upstream: "
        "a}]\n",
        "t.yaml:1: upstreams[0].url: scheme must be http or https, got \"ftp\"");
    CHECK_CONFIG_ERROR(R"(upstreams:
  - name: a
    url: http://127.0.0.1:1
  - name: b
    url: api.openai.com
routes: [{prefix: /, upstream: a}]
)",
                       "t.yaml:5: upstreams[1].url: expected an absolute URL");
    const std::string secret =
        "upstreams: [{name: a, url: 'https://user:sk-live-123@api.openai.com/v1'}]\n"
        "routes: [{prefix: /, upstream: a}]\n";
    CHECK_CONFIG_ERROR(secret, "t.yaml:1: upstreams[0].url: credentials in URLs are not allowed");
    CHECK(error_of(secret).find("sk-live-123") == std::string::npos);
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h/v1?x=1'}]\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].url: a query is not allowed");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h/v1#top'}]\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].url: a fragment is not allowed");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h:99999'}]\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].url: invalid port");
    CHECK_CONFIG_ERROR("upstreams: [{url: 'http://h'}]\nroutes: [{prefix: /, upstream: a}]\n",
                       "t.yaml:1: upstreams[0].name: required");
    CHECK_CONFIG_ERROR("upstreams:\n  - name: a\nroutes: [{prefix: /, upstream: a}]\n",
                       "t.yaml:2: upstreams[0].url: required");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: 'a b', url: 'http://h'}]\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].name: expected letters, digits");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: '', url: 'http://h'}]\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:1: upstreams[0].name: must not be empty");
    CHECK_CONFIG_ERROR(
        minimal.substr(0, minimal.find("routes:")) +
            "  - {name: mock, url: 'http://h'}\nroutes: [{prefix: /, upstream: mock}]\n",
        "t.yaml:4: upstreams[1].name: duplicate upstream name \"mock\" (also upstreams[0])");
    CHECK_CONFIG_ERROR("upstreams: []\nroutes: [{prefix: /, upstream: a}]\n",
                       "t.yaml:1: upstreams: must list at least one upstream");
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h', tls: {verify: 1}}]\nroutes: [{prefix: /, upstream: "
        "a}]\n",
        "t.yaml:1: upstreams[0].tls.verify: expected true or false");
}

TEST_CASE("config error: coalesce header names, JSON pointers and orphan") {
    CHECK_CONFIG_ERROR(
        minimal + "coalesce:\n  ignore_fields: [/user, \"/a~2b\"]\n",
        "t.yaml:7: coalesce.ignore_fields[1]: expected a JSON pointer such as /user");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  ignore_fields:\n    - user\n",
                       "t.yaml:8: coalesce.ignore_fields[0]: expected a JSON pointer");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  ignore_fields: [/a~]\n",
                       "t.yaml:7: coalesce.ignore_fields[0]: expected a JSON pointer");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  ignore_fields: [/user, /user]\n",
                       "t.yaml:7: coalesce.ignore_fields[1]: duplicate field");
    CHECK(error_of(minimal + "coalesce:\n  orphan: stop\n") ==
          "t.yaml:7: coalesce.orphan: expected one of finish, cancel, got \"stop\"");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  vary_headers: [ok, 'bad header']\n",
                       "t.yaml:7: coalesce.vary_headers[1]: expected an HTTP header name");
    CHECK_CONFIG_ERROR(
        minimal + "coalesce:\n  identity_headers: [Authorization, authorization]\n",
        "t.yaml:7: coalesce.identity_headers[1]: duplicate header \"authorization\"");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  shared_headers: [x-api-key]\n",
                       "t.yaml:7: coalesce.shared_headers[0]: \"x-api-key\" carries a credential");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  shared_headers: [Cookie]\n",
                       "t.yaml:7: coalesce.shared_headers[0]: \"cookie\" carries a credential");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  shared_headers: [x-org-id]\n",
                       "t.yaml:7: coalesce.shared_headers[0]: \"x-org-id\" is not keyed as a "
                       "credential");
    CHECK_CONFIG_ERROR(minimal +
                           "coalesce:\n  identity_headers: [x-team-token]\n  shared_headers: "
                           "[x-team-token]\n",
                       "t.yaml:8: coalesce.shared_headers[0]: \"x-team-token\" is also in "
                       "identity_headers");
    CHECK_CONFIG_ERROR(minimal + "coalesce:\n  bypass_header: 'x:y'\n",
                       "t.yaml:7: coalesce.bypass_header: expected an HTTP header name");
}

TEST_CASE("config error: listen and admin addresses") {
    CHECK_CONFIG_ERROR(
        "listen: {address: example.com}\n" + minimal,
        "t.yaml:1: listen.address: expected an IP address or localhost, got \"example.com\"");
    CHECK_CONFIG_ERROR("admin: {address: '[::1]'}\n" + minimal,
                       "t.yaml:1: admin.address: expected an IP address or localhost");
    CHECK_CONFIG_ERROR("admin: {address: 127.0.0.1, port: 8080}\n" + minimal,
                       "t.yaml:1: admin.port: same address and port as listen (127.0.0.1:8080)");
    CHECK_CONFIG_ERROR("listen:\n  port: 9090\n" + minimal,
                       "t.yaml:2: listen.port: same address and port as admin");
    CHECK_CONFIG_ERROR("listen: {address: 0.0.0.0, port: 9000}\nadmin: {port: 9000}\n" + minimal,
                       "t.yaml:2: admin.port: same address");
    CHECK_CONFIG_ERROR(
        "listen: {address: localhost, port: 9000}\nadmin: {address: '::1', port: 9000}\n" + minimal,
        "t.yaml:2: admin.port: same address");
    // Port 0 picks a free port each; different addresses may share a port.
    CHECK(load("listen: {port: 0}\nadmin: {port: 0}\n" + minimal)->admin.port == 0);
    CHECK(
        load("listen: {address: 127.0.0.1, port: 9000}\nadmin: {address: 127.0.0.2, port: 9000}\n" +
             minimal)
            ->admin.port == 9000);
    CHECK(load("listen: {address: '::1', port: 9000}\nadmin: {address: 127.0.0.1, port: 9000}\n" +
               minimal)
              ->admin.port == 9000);
}

TEST_CASE("config error: missing upstreams or routes, empty or odd documents") {
    CHECK(error_of("routes:\n  - {prefix: /, upstream: a}\n") == "t.yaml:1: upstreams: required");
    CHECK(error_of(
              "# a comment first\nlisten: {port: 1}\nupstreams: [{name: a, url: 'http://h'}]\n") ==
          "t.yaml:2: routes: required");
    CHECK_CONFIG_ERROR(
        "upstreams:\n  -\nroutes: [{prefix: /, upstream: a}]\n",
        "t.yaml:2: upstreams[0]: expected a mapping with name and url, got an empty value");
    CHECK_CONFIG_ERROR("upstreams: [a]\nroutes: [{prefix: /, upstream: a}]\n",
                       "t.yaml:1: upstreams[0]: expected a mapping");
    CHECK_CONFIG_ERROR(minimal + "  - /chat\n",
                       "t.yaml:6: routes[1]: expected a mapping with prefix and upstream");
    CHECK_CONFIG_ERROR("", "t.yaml:1: document: empty");
    CHECK_CONFIG_ERROR("# nothing here\n", "t.yaml:1: document: empty");
    CHECK_CONFIG_ERROR("- a\n- b\n", "t.yaml:1: document: expected a mapping");
    CHECK_CONFIG_ERROR("just text\n", "t.yaml:1: document: expected a mapping");
    CHECK_CONFIG_ERROR(minimal + "---\n" + minimal,  // the line of the "---" that starts it
                       "t.yaml:6: document: expected one YAML document");
    // yaml-cpp 0.7's LoadAll never returned on this one (found by the config fuzzer).
    CHECK_CONFIG_ERROR(",", "t.yaml:1: document: ");
    CHECK_CONFIG_ERROR(minimal + ",\n", "t.yaml:");
}

TEST_CASE("config error: YAML syntax errors are one line too") {
    CHECK_CONFIG_ERROR(
        "upstreams: [{name: a, url: 'http://h'}\nroutes: [{prefix: /, upstream: a}]\n", "t.yaml:");
    CHECK_CONFIG_ERROR("listen:\n  port: 1\n    address: x\n" + minimal,
                       "t.yaml:3: invalid YAML: ");
    CHECK_CONFIG_ERROR("a: 'unterminated\n", "t.yaml:");
    std::string message = error_of("listen: {port: 1\n" + minimal);
    CAPTURE(message);
    CHECK(message.find("invalid YAML: ") != std::string::npos);
    CHECK(message.find('\n') == std::string::npos);
}

TEST_CASE("config error: scalars in messages are escaped and cut short") {
    std::string message = error_of("listen: {address: \"a\\nb\"}\n" + minimal);
    CHECK(message ==
          "t.yaml:1: listen.address: expected an IP address or localhost, got \"a\\x0ab\"");
    message = error_of("listen: {address: " + std::string(500, 'x') + "}\n" + minimal);
    CHECK(message.size() < 200);
    CHECK(message.find("...") != std::string::npos);
}

TEST_CASE("config error: certificate and CA files must be readable") {
    scratch_dir dir;
    std::string cert = dir.write("cert.pem", "cert");
    std::string missing = (dir.path / "missing.pem").string();
    CHECK(error_of("listen:\n  tls:\n    cert_file: " + missing + "\n    key_file: " + cert + "\n" +
                   minimal) == "t.yaml:3: listen.tls.cert_file: cannot read \"" + missing +
                                   "\": No such file or directory");
    CHECK_CONFIG_ERROR(
        "listen:\n  tls:\n    cert_file: " + cert + "\n    key_file: " + missing + "\n" + minimal,
        "t.yaml:4: listen.tls.key_file: cannot read");
    CHECK_CONFIG_ERROR("listen:\n  tls:\n    cert_file: " + dir.path.string() +
                           "\n    key_file: " + cert + "\n" + minimal,
                       "t.yaml:3: listen.tls.cert_file: cannot read");
    CHECK_CONFIG_ERROR("listen:\n  tls:\n    cert_file: " + cert + "\n" + minimal,
                       "t.yaml:3: listen.tls.key_file: required");
    CHECK_CONFIG_ERROR("upstreams: [{name: a, url: 'https://h', tls: {ca_file: " + missing +
                           "}}]\nroutes: [{prefix: /, upstream: a}]\n",
                       "t.yaml:1: upstreams[0].tls.ca_file: cannot read");
    auto c = load("listen:\n  tls:\n    cert_file: " + cert + "\n    key_file: " + cert + "\n" +
                  minimal);
    CHECK(c->listen.tls.has_value());
}

TEST_CASE("config error: files that cannot be read, errors that name the file") {
    scratch_dir dir;
    std::string missing = (dir.path / "missing.yaml").string();
    CHECK(file_error_of(missing) == missing + ": cannot read: No such file or directory");
    CHECK(file_error_of(dir.path.string()) == dir.path.string() + ": cannot read: Is a directory");
    std::string bad = dir.write("bad.yaml", minimal + "listen: {port: x}\n");
    CHECK(file_error_of(bad) == bad + ":6: listen.port: expected an integer, got \"x\"");
    std::string good = dir.write("good.yaml", minimal);
    CHECK(load_config_file(good)->source == good);
}

TEST_CASE("config: the cluster section is parsed, its secrets read from files and never echoed") {
    scratch_dir dir;
    const auto secret = dir.write("key-secret", "fleet-secret-value\n");
    const auto password = dir.write("password", "redis-pass\n");
    const auto c = load(minimal +
                        "cluster:\n  redis: rediss://redis.example:6380/3\n"
                        "  username: pod\n  password_file: " +
                        password + "\n  key_secret_file: " + secret +
                        "\n  lease: 2s\n  timeouts: {connect: 1s, command: 100ms}\n");
    REQUIRE(c->cluster);
    const auto& k = *c->cluster;
    CHECK(k.host == "redis.example");
    CHECK(k.port == 6380);
    CHECK(k.database == 3);
    CHECK(k.tls);
    CHECK(k.tls_verify);
    CHECK(k.username == "pod");
    CHECK(k.password == "redis-pass");
    CHECK(k.key_secret == "fleet-secret-value");
    CHECK(k.lease == std::chrono::seconds(2));
    CHECK(k.connect_timeout == std::chrono::seconds(1));
    CHECK(k.command_timeout == std::chrono::milliseconds(100));
    const auto plain =
        load(minimal + "cluster: {redis: 'redis://127.0.0.1', key_secret_file: " + secret + "}\n");
    CHECK(plain->cluster->port == 6379);
    CHECK(plain->cluster->database == 0);
    CHECK_FALSE(plain->cluster->tls);
    CHECK_FALSE(load(minimal)->cluster);

    const auto with = [&](const std::string& fields) { return minimal + "cluster:\n" + fields; };
    const auto key = "  key_secret_file: " + secret + "\n";
    CHECK_CONFIG_ERROR(with("  redis: redis://127.0.0.1\n"),
                       "t.yaml:7: cluster.key_secret_file: required");
    CHECK_CONFIG_ERROR(with("  redis: 'redis://u:hunter2@h:1'\n" + key),
                       "t.yaml:7: cluster.redis: credentials in the URL are not allowed");
    CHECK(error_of(with("  redis: 'redis://u:hunter2@h:1'\n" + key)).find("hunter2") ==
          std::string::npos);
    CHECK_CONFIG_ERROR(with("  redis: http://h:1\n" + key), "t.yaml:7: cluster.redis: expected");
    CHECK_CONFIG_ERROR(with("  redis: redis://h:0\n" + key), "t.yaml:7: cluster.redis: the port");
    CHECK_CONFIG_ERROR(with("  redis: redis://h/x\n" + key),
                       "t.yaml:7: cluster.redis: the database");
    CHECK_CONFIG_ERROR(with("  redis: redis://h\n  username: u\n" + key),
                       "t.yaml:8: cluster.username: needs password_file");
    CHECK_CONFIG_ERROR(
        with("  redis: redis://h\n  key_secret_file: " + dir.write("empty", "\n") + "\n"),
        "t.yaml:8: cluster.key_secret_file: ");
    CHECK_CONFIG_ERROR(with("  redis: redis://h\n  lease: 100ms\n" + key),
                       "t.yaml:8: cluster.lease: must be at least 300ms");
    CHECK_CONFIG_ERROR(with("  redis: redis://h\n  bogus: 1\n" + key),
                       "t.yaml:8: cluster.bogus: unknown key");
    CHECK(error_of(with("  redis: redis://h\n  password_file: " + password + "\n" + key +
                        "  bogus: 1\n"))
              .find("redis-pass") == std::string::npos);
}

TEST_CASE("config: fleet_limits and prices per upstream") {
    const auto c = load(R"(upstreams:
  - name: p
    url: http://127.0.0.1:8081
    fleet_limits:
      requests_per_minute: 600
      tokens_per_minute: 200000
      max_concurrent: 100
      fallback_share: 0.25
    prices:
      sonar: {input_per_mtok: 1.0, output_per_mtok: 1.5, per_request: 0.005}
      "claude-*": {input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3,
                   cache_write_input_per_mtok: 3.75}
  - name: q
    url: http://127.0.0.1:8082
    fleet_limits: {requests_per_minute: 10}
routes:
  - {prefix: /, upstream: p}
)");
    const auto& p = c->upstreams[0];
    REQUIRE(p.fleet_limits.has_value());
    CHECK(p.fleet_limits->requests_per_minute == 600);
    CHECK(p.fleet_limits->tokens_per_minute == 200000);
    CHECK(p.fleet_limits->max_concurrent == 100);
    CHECK(p.fleet_limits->fallback_share == doctest::Approx(0.25));
    REQUIRE(p.prices.size() == 2);
    CHECK(p.prices[0].model == "sonar");
    CHECK(p.prices[0].price.input_per_mtok == doctest::Approx(1.0));
    CHECK(p.prices[0].price.output_per_mtok == doctest::Approx(1.5));
    CHECK(p.prices[0].price.per_request == doctest::Approx(0.005));
    CHECK_FALSE(p.prices[0].price.cached_input_per_mtok.has_value());
    CHECK(p.prices[1].model == "claude-*");
    CHECK(*p.prices[1].price.cached_input_per_mtok == doctest::Approx(0.3));
    CHECK(*p.prices[1].price.cache_write_input_per_mtok == doctest::Approx(3.75));
    const auto& q = c->upstreams[1];
    REQUIRE(q.fleet_limits.has_value());
    CHECK(q.fleet_limits->requests_per_minute == 10);
    CHECK(q.fleet_limits->tokens_per_minute == 0);
    CHECK(q.fleet_limits->max_concurrent == 0);
    CHECK(q.fleet_limits->fallback_share == doctest::Approx(1.0));
    CHECK(q.prices.empty());
    CHECK_FALSE(load(minimal)->upstreams[0].fleet_limits.has_value());
}

TEST_CASE("config error: fleet_limits and prices name the key at fault") {
    const auto with = [](const std::string& extra) {
        return "upstreams:\n  - name: a\n    url: http://h\n" + extra +
               "routes: [{prefix: /, upstream: a}]\n";
    };
    CHECK_CONFIG_ERROR(
        with("    fleet_limits: {requests_per_minute: 0}\n"),
        "t.yaml:4: upstreams[0].fleet_limits.requests_per_minute: must be at least 1");
    CHECK_CONFIG_ERROR(with("    fleet_limits: {tokens_per_minute: -5}\n"),
                       "t.yaml:4: upstreams[0].fleet_limits.tokens_per_minute:");
    CHECK_CONFIG_ERROR(with("    fleet_limits: {max_concurrent: 2, fallback_share: 0}\n"),
                       "t.yaml:4: upstreams[0].fleet_limits.fallback_share: expected a share");
    CHECK_CONFIG_ERROR(with("    fleet_limits: {max_concurrent: 2, fallback_share: 1.5}\n"),
                       "t.yaml:4: upstreams[0].fleet_limits.fallback_share: expected a share");
    CHECK_CONFIG_ERROR(with("    fleet_limits: {fallback_share: 0.5}\n"),
                       "t.yaml:4: upstreams[0].fleet_limits: expected at least one of");
    CHECK_CONFIG_ERROR(with("    fleet_limits: {rpm: 5}\n"),
                       "t.yaml:4: upstreams[0].fleet_limits.rpm: unknown key");
    CHECK_CONFIG_ERROR(with("    prices: {sonar: {input_per_mtok: -1}}\n"),
                       "t.yaml:4: upstreams[0].prices.sonar.input_per_mtok: must not be negative");
    CHECK_CONFIG_ERROR(with("    prices: {sonar: {input: 1}}\n"),
                       "t.yaml:4: upstreams[0].prices.sonar.input: unknown key");
    CHECK_CONFIG_ERROR(with("    prices:\n      'so*nar': {per_request: 1}\n"),
                       "t.yaml:5: upstreams[0].prices.so*nar: '*' may only end a model name");
    CHECK_CONFIG_ERROR(with("    prices:\n      sonar: {per_request: 1}\n      sonar: {}\n"),
                       "t.yaml:6: upstreams[0].prices.sonar: duplicate key (first at line 5)");
    CHECK_CONFIG_ERROR(with("    prices: [sonar]\n"),
                       "t.yaml:4: upstreams[0].prices: expected a mapping");
    CHECK_CONFIG_ERROR(with("    prices: {sonar: 1}\n"),
                       "t.yaml:4: upstreams[0].prices.sonar: expected a mapping");
}
