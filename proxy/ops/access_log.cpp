#include "ops/access_log.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace coalescer::ops {
namespace {

std::string timestamp() {
    const auto now = std::chrono::system_clock::now();
    const auto t = std::chrono::system_clock::to_time_t(now);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[64];  // room for any int GCC imagines in each field
    std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    return text;
}

std::string quoted(std::string_view v) {
    return boost::json::serialize(boost::json::string(v));
}

std::string_view level_name(log_level l) {
    switch (l) {
        case log_level::debug:
            return "debug";
        case log_level::info:
            return "info";
        case log_level::warn:
            return "warn";
        case log_level::error:
            return "error";
    }
    return "info";
}

// One fwrite per line: stdio locks the stream per call, so lines from different workers never
// interleave. stdout is block-buffered (see main) and flushed by a timer, not per request.
void emit(std::FILE* out, const std::string& line) {
    std::fwrite(line.data(), 1, line.size(), out);
}

// ,"model":…,"tokens":{…},"provider_cost_usd":… (JSON) or model=… tokens=… cost_usd=… (text).
std::string usage_fields(const token_usage* u, std::optional<double> usd, bool json) {
    if (u == nullptr) {
        return {};
    }
    char numbers[256];
    const auto n = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
    std::snprintf(numbers, sizeof numbers,
                  json ? ",\"tokens\":{\"input\":%llu,\"cached_input\":%llu,"
                         "\"cache_write_input\":%llu,\"output\":%llu,\"reasoning\":%llu}"
                       : " tokens=input:%llu,cached_input:%llu,cache_write_input:%llu,output:%llu,"
                         "reasoning:%llu",
                  n(u->input), n(u->cached_input), n(u->cache_write_input), n(u->output),
                  n(u->reasoning));
    std::string out =
        json ? ",\"model\":" + quoted(u->model) + numbers : " model=" + quoted(u->model) + numbers;
    if (u->provider_cost_usd) {
        std::snprintf(numbers, sizeof numbers,
                      json ? ",\"provider_cost_usd\":%.9g" : " provider_cost_usd=%.9g",
                      *u->provider_cost_usd);
        out += numbers;
    }
    if (usd) {
        std::snprintf(numbers, sizeof numbers, json ? ",\"cost_usd\":%.9g" : " cost_usd=%.9g",
                      *usd);
        out += numbers;
    }
    return out;
}

}  // namespace

void access_log::request(const access_record& r) const {
    if (!enabled(log_level::info)) {
        return;
    }
    const auto path = r.target.substr(0, r.target.find('?'));
    char numbers[160];
    std::string line;
    if (config_.format == log_format::json) {
        std::snprintf(numbers, sizeof numbers,
                      ",\"status\":%u,\"bytes_out\":%llu,\"duration_ms\":%.3f,\"ttfb_ms\":%.3f,"
                      "\"upstream_attempts\":%d",
                      r.status, static_cast<unsigned long long>(r.bytes_out), r.duration_ms,
                      r.ttfb_ms, r.attempts);
        line = "{\"time\":\"" + timestamp() + "\",\"route\":" + quoted(r.route) +
               ",\"method\":" + quoted(r.method) + ",\"path\":" + quoted(path) + numbers +
               ",\"role\":\"" + std::string(to_string(r.role)) +
               "\",\"flight\":" + quoted(r.flight) + ",\"key\":" + quoted(r.key_prefix) +
               ",\"outcome\":" + quoted(r.outcome) +
               (r.detail.empty() ? std::string() : ",\"error_detail\":" + quoted(r.detail)) +
               (r.remote_producer ? ",\"producer\":\"remote\"" : "") +
               usage_fields(r.usage, r.cost_usd, true) +
               (r.trace_id.empty() ? std::string() : ",\"trace_id\":" + quoted(r.trace_id)) +
               (r.flight_trace_id.empty() ? std::string()
                                          : ",\"flight_trace_id\":" + quoted(r.flight_trace_id)) +
               "}\n";
    } else {
        std::snprintf(numbers, sizeof numbers, " %u %llub %.1fms ttfb=%.1fms", r.status,
                      static_cast<unsigned long long>(r.bytes_out), r.duration_ms, r.ttfb_ms);
        line = timestamp() + " " + std::string(r.method) + " " + std::string(path) + numbers + " " +
               std::string(to_string(r.role)) + " flight=" + std::string(r.flight) +
               " key=" + std::string(r.key_prefix) + " " + std::string(r.outcome) +
               (r.detail.empty() ? std::string() : " (" + std::string(r.detail) + ")") +
               (r.remote_producer ? " producer=remote" : "") +
               (r.trace_id.empty() ? std::string() : " trace_id=" + std::string(r.trace_id)) +
               (r.flight_trace_id.empty() ? std::string()
                                          : " flight_trace_id=" + std::string(r.flight_trace_id)) +
               usage_fields(r.usage, r.cost_usd, false) + "\n";
    }
    emit(stdout, line);
}

void access_log::message(log_level level, std::string_view text) const {
    if (!enabled(level)) {
        return;
    }
    std::string line;
    if (config_.format == log_format::json) {
        line = "{\"time\":\"" + timestamp() + "\",\"level\":\"" + std::string(level_name(level)) +
               "\",\"message\":" + quoted(text) + "}\n";
    } else {
        line = timestamp() + " " + std::string(level_name(level)) + " " + std::string(text) + "\n";
    }
    emit(stderr, line);
    std::fflush(stderr);
}

void access_log::flush() const {
    std::fflush(stdout);
}

}  // namespace coalescer::ops
