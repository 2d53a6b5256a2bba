// The sidecar's configuration: the schema of DESIGN.md "Configuration and command line"
// as plain values. A loaded config is immutable and shared as shared_ptr<const config>.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace coalescer::ops {

using duration = std::chrono::milliseconds;
using namespace std::chrono_literals;

inline constexpr std::size_t kib = 1024;
inline constexpr std::size_t mib = 1024 * kib;

struct tls_files {
    std::string cert_file;
    std::string key_file;
};

struct listen_config {
    std::string address = "127.0.0.1";
    std::uint16_t port = 8080;  // 0 = pick a free port (tests)
    std::optional<tls_files> tls;
};

struct admin_config {
    std::string address = "127.0.0.1";
    std::uint16_t port = 9090;
};

struct upstream_tls_config {
    bool verify = true;
    std::string ca_file;  // empty: the system store
};

struct upstream_timeouts {
    duration connect = 5s;   // TCP connect + TLS handshake
    duration head = 120s;    // request written → response head received
    duration idle = 60s;     // between two body reads
    duration total = 10min;  // the whole exchange
};

struct retry_config {
    int max_attempts = 3;
    duration base_delay = 200ms;
    duration max_delay = 5s;
};

struct rate_limit_config {
    double requests_per_second = 0;
    int burst = 1;
};

// A budget the whole fleet shares for one upstream (DESIGN.md "Beyond one machine"); 0 = no
// limit of that kind. Without `cluster:` the one process is the fleet.
struct fleet_limits_config {
    std::uint64_t requests_per_minute = 0;
    std::uint64_t tokens_per_minute = 0;
    std::uint64_t max_concurrent = 0;
    // Each pod's share of every limit while the shared budget (Redis) is unreachable.
    double fallback_share = 1.0;
};

// USD per million tokens of each kind, and per upstream call. Cached and cache-write input
// cost what input costs unless priced apart.
struct price_config {
    double input_per_mtok = 0;
    double output_per_mtok = 0;
    double per_request = 0;
    std::optional<double> cached_input_per_mtok;
    std::optional<double> cache_write_input_per_mtok;
};

// `model` is a name, or a prefix when it ends in '*'.
struct model_price {
    std::string model;
    price_config price;
};

struct upstream_config {
    std::string name;
    std::string url;  // as written
    // Parsed from url:
    bool https = true;
    std::string host;  // no brackets, no port
    std::uint16_t port = 443;
    std::string base_path;  // "" or "/v1" (no trailing slash)
    upstream_tls_config tls;
    int max_concurrent = 64;
    duration queue_timeout = 30s;
    upstream_timeouts timeouts;
    retry_config retries;
    std::optional<rate_limit_config> rate_limit;
    std::optional<fleet_limits_config> fleet_limits;
    std::vector<model_price> prices;  // as written
};

struct route_config {
    std::string prefix;
    std::string upstream;
    std::size_t upstream_index = 0;  // into config::upstreams
    std::string strip_prefix;
    bool coalesce = true;
};

enum class orphan_policy { finish, cancel };

struct coalesce_config {
    duration result_ttl = 10s;
    std::size_t max_response_bytes = 8 * mib;
    std::size_t max_cache_bytes = 256 * mib;
    std::vector<std::string> identity_headers{"authorization", "x-api-key"};  // lower case
    std::vector<std::string> shared_headers;  // credential-like, the same for every tenant
    std::vector<std::string> vary_headers{"openai-organization", "openai-project",
                                          "anthropic-version", "anthropic-beta"};
    std::vector<std::string> ignore_fields;  // JSON pointers
    std::string bypass_header = "x-coalesce-bypass";
    orphan_policy orphan = orphan_policy::finish;
    std::size_t max_subscribers_per_flight = 10000;
};

struct limits_config {
    std::size_t max_request_body = 16 * mib;
    std::size_t max_header_bytes = 16 * kib;
    duration header_timeout = 10s;
    duration idle_timeout = 60s;
    duration write_timeout = 30s;
    std::size_t max_connections = 20000;
};

struct shutdown_config {
    duration drain_delay = 2s;
    duration drain_timeout = 30s;
};

enum class log_level { debug, info, warn, error };
enum class log_format { json, text };

struct log_config {
    log_level level = log_level::info;
    log_format format = log_format::json;
};

// Coalescing across replicas over Redis (the optional top-level `cluster:` section).
struct cluster_config {
    std::string url;  // as configured: redis://host:port/db or rediss://…, never credentials
    std::string host;
    std::uint16_t port = 6379;
    unsigned database = 0;
    bool tls = false;  // rediss://
    bool tls_verify = true;
    std::string ca_file;          // empty: the system's trust store
    std::string username;         // Redis ACL user, with password
    std::string password;         // read from password_file; never logged
    std::string key_secret;       // read from key_secret_file; never logged
    std::string key_secret_file;  // for messages
    duration lease = 5s;
    duration connect_timeout = 500ms;
    duration command_timeout = 250ms;
};

struct config {
    std::string source;        // the file it was loaded from
    unsigned workers = 0;      // 0 = one per allowed core
    bool pin_workers = false;  // worker i runs on the i-th allowed CPU only
    listen_config listen;
    admin_config admin;
    std::vector<upstream_config> upstreams;
    std::vector<route_config> routes;
    coalesce_config coalesce;
    limits_config limits;
    shutdown_config shutdown;
    log_config log;
    std::optional<cluster_config> cluster;
};

// Thrown by the loader: what() is one line, "FILE:LINE: KEY: problem".
class config_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Parses and validates a YAML file. Throws config_error.
std::shared_ptr<const config> load_config_file(const std::string& path);
// The same for YAML text; `source` names it in errors.
std::shared_ptr<const config> load_config_text(const std::string& yaml, const std::string& source);

// "250ms", "10s", "2m", "1h" → duration; nullopt when malformed.
std::optional<duration> parse_duration(const std::string& text);
// "512", "64KiB", "8MiB", "1GiB" (also KB/MB/GB as powers of 1000) → bytes; nullopt when malformed.
std::optional<std::size_t> parse_size(const std::string& text);

}  // namespace coalescer::ops
