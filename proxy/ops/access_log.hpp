// One line per client request on stdout (JSON or text), and operational messages on stderr.
// Records are built from an allow-list of fields: no header values, no query strings, no
// bodies, so no credential can reach the log.
#pragma once

#include "ops/config.hpp"
#include "ops/role.hpp"
#include "ops/token_usage.hpp"

#include <cstdint>
#include <optional>
#include <string_view>

namespace coalescer::ops {

struct access_record {
    std::string_view route;
    std::string_view method;
    std::string_view target;  // the query part is dropped here
    unsigned status = 0;
    ops::role role = ops::role::pass;
    std::string_view flight;
    std::string_view key_prefix;
    std::uint64_t bytes_out = 0;
    double duration_ms = 0;
    double ttfb_ms = 0;
    int attempts = 0;              // upstream attempts of the flight this client was served from
    std::string_view outcome;      // "ok", "cut", "client_gone", or an error code
    std::string_view detail;       // for upstream protocol errors: what the upstream broke
    bool remote_producer = false;  // the flight's upstream call was made by another replica
    std::string_view trace_id;     // this request's W3C trace id, if it carried one
    std::string_view flight_trace_id;  // a follower's or hit's: the trace id of the call it shared
    // The provider's usage of the answer this client received whole (for a follower or hit:
    // what it saved); null when unknown.
    const token_usage* usage = nullptr;
    std::optional<double> cost_usd;  // of that answer: the provider's figure, else the prices
};

class access_log {
  public:
    explicit access_log(const log_config& cfg) : config_(cfg) {}
    void request(const access_record& r) const;
    void message(log_level level, std::string_view text) const;
    bool enabled(log_level level) const noexcept { return level >= config_.level; }
    void flush() const;  // the access log is block-buffered: the server calls this periodically

  private:
    log_config config_;
};

}  // namespace coalescer::ops
