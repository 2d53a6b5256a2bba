#include "upstream/retry_policy.hpp"

#include "ops/errors.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <string>

namespace coalescer::upstream {
using ops::proxy_errc;

bool retryable_failure(boost::system::error_code ec) noexcept {
    return ec == proxy_errc::upstream_connect_failed || ec == proxy_errc::upstream_tls_failed ||
           ec == proxy_errc::upstream_connect_timeout || ec == proxy_errc::upstream_resolve_failed;
}

bool retryable_status(unsigned status) noexcept {
    return status == 429 || status == 503;
}

namespace {

std::optional<double> number(std::string_view text) {
    while (!text.empty() && text.front() == ' ')
        text.remove_prefix(1);
    while (!text.empty() && text.back() == ' ')
        text.remove_suffix(1);
    if (text.empty())
        return std::nullopt;
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
        value < 0) {
        return std::nullopt;
    }
    return value;
}

// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::optional<std::chrono::system_clock::time_point> http_date(std::string_view text) {
    std::tm tm{};
    const std::string copy(text);
    const char* end = ::strptime(copy.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == nullptr || *end != '\0')
        return std::nullopt;
    return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

}  // namespace

std::optional<std::chrono::milliseconds> retry_hint(std::string_view retry_after_ms,
                                                    std::string_view retry_after,
                                                    std::chrono::system_clock::time_point now) {
    using std::chrono::milliseconds;
    if (const auto ms = number(retry_after_ms)) {
        return milliseconds(static_cast<long long>(std::min(*ms, 1e12)));
    }
    if (const auto seconds = number(retry_after)) {
        return milliseconds(static_cast<long long>(std::min(*seconds, 1e9) * 1000));
    }
    if (const auto when = http_date(retry_after)) {
        return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(*when - now));
    }
    return std::nullopt;
}

std::chrono::milliseconds backoff(const ops::retry_config& cfg, int attempt, double unit) {
    const double base = static_cast<double>(cfg.base_delay.count());
    const double cap = static_cast<double>(cfg.max_delay.count());
    const double ceiling = std::min(cap, base * std::pow(2.0, std::max(0, attempt - 1)));
    // Jitter over the upper half keeps retries from many sidecars apart without ever
    // retrying sooner than base_delay.
    const double delay = std::max(base, ceiling * (0.5 + 0.5 * std::clamp(unit, 0.0, 1.0)));
    return std::chrono::milliseconds(static_cast<long long>(std::min(delay, cap)));
}

}  // namespace coalescer::upstream
