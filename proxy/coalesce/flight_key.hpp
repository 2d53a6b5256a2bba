// The coalesce key (DESIGN.md "Coalesce key"): requests with equal keys share one upstream call.
//
// key = SHA-256 over length-prefixed fields (8-byte little-endian length, then the bytes):
//   "coalescer-key-v2", the ignore-list fingerprint, upstream, method, target,
//   the number of distinct tenant headers present (tenant_headers.hpp: credentials by name and
//       by pattern, plus identity_headers, minus shared_headers; 8 bytes, not length-prefixed),
//       then for each in byte order of its lower-case name: name, HMAC-SHA256(secret, value)
//       (several lines of one header: joined with "\n", in order),
//   for each vary header (config order): name, then "\x01" + raw value or "\x00" when absent,
//   "json" + canonical body (canonical_json.hpp) or "raw" + the body bytes.
// The secret is 32 random bytes made once per process unless configured (replicas that coalesce
// together share one): a credential digest can neither be confirmed against a guessed credential
// nor correlated outside the processes that share the secret.
// Header names match case-insensitively. Content-Type is not consulted: every body is tried as
// JSON; an empty body or one that is not acceptable JSON is keyed on its raw bytes.
#pragma once

#include "coalesce/canonical_json.hpp"
#include "coalesce/tenant_headers.hpp"
#include "ops/config.hpp"

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coalescer::coalesce {

struct flight_key {
    std::array<unsigned char, 32> digest{};

    bool operator==(const flight_key&) const = default;
    std::string hex() const;     // 64 lower-case hex characters
    std::string prefix() const;  // the first 12 of them, for logs
};

struct flight_key_hash {
    std::size_t operator()(const flight_key& key) const noexcept;  // from the digest bytes
};

// What the router hands over. Views: valid for the duration of make().
struct key_request {
    std::string_view upstream;  // the route's upstream name
    std::string_view method;
    std::string_view target;  // upstream path + query, as sent upstream
    // Request headers in arrival order, names as received (any case). Only identity and vary
    // headers are used. nullptr: no headers.
    const std::vector<std::pair<std::string_view, std::string_view>>* headers = nullptr;
    std::string_view body;
};

enum class body_kind { json, raw };

class flight_key_builder {
  public:
    // Copies what it needs. `secret` keys the credential HMACs: replicas that share one compute
    // the same keys (cluster.key_secret_file); empty, 32 random bytes made once per process are
    // used. Throws std::invalid_argument for a malformed ignore_fields pointer and
    // std::runtime_error when the process secret cannot be made (start-up only).
    explicit flight_key_builder(const ops::coalesce_config& cfg, std::string_view secret = {});
    ~flight_key_builder();
    flight_key_builder(const flight_key_builder&) = delete;
    flight_key_builder& operator=(const flight_key_builder&) = delete;

    flight_key make(const key_request& request) const;
    // The same, also telling which body path was taken (for metrics).
    flight_key make(const key_request& request, body_kind& kind) const;

  private:
    tenant_headers tenants_;
    std::string secret_;  // wiped when the builder goes
    ignore_list ignore_;
    std::string fingerprint_;  // the ignore pointers, length-prefixed
    std::uint64_t id_;         // which builder's secret a thread's HMAC pads were made from
};

namespace detail {
// HMAC-SHA256 computed the way the builder computes credential digests (precomputed pads).
// Exposed for tests against RFC 4231.
std::array<unsigned char, 32> hmac_sha256(std::string_view key, std::string_view message);
}  // namespace detail

}  // namespace coalescer::coalesce
