#include "upstream/provider_limits.hpp"

#include "upstream/retry_policy.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <ctime>
#include <string>

namespace coalescer::upstream {
namespace {

using system_clock = std::chrono::system_clock;

// A reset further away than this is taken for a mistake (a misread unit), not obeyed.
constexpr std::chrono::hours longest_reset{1};

bool zero(std::string_view text) {
    unsigned long long n = 1;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    return ec == std::errc() && end == text.data() + text.size() && n == 0;
}

std::optional<double> unit_seconds(std::string_view unit) {
    static constexpr std::array<std::pair<std::string_view, double>, 7> units{
        {{"h", 3600}, {"m", 60}, {"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"µs", 1e-6}, {"ns", 1e-9}}};
    for (const auto& [name, seconds] : units)
        if (name == unit)
            return seconds;
    return std::nullopt;
}

int digits(std::string_view s, std::size_t at, std::size_t n) {
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
        if (i >= s.size() || s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

void later(std::optional<system_clock::time_point>& out, system_clock::time_point t) {
    if (!out || t > *out)
        out = t;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_go_duration(std::string_view text) {
    if (text.empty())
        return std::nullopt;
    double total = 0;
    while (!text.empty()) {
        double n = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (ec != std::errc() || !(n >= 0))
            return std::nullopt;
        text.remove_prefix(static_cast<std::size_t>(end - text.data()));
        std::size_t u = 0;
        while (u < text.size() && !(text[u] >= '0' && text[u] <= '9') && text[u] != '.')
            ++u;
        const auto seconds = unit_seconds(text.substr(0, u));
        if (!seconds)
            return std::nullopt;
        total += n * *seconds;
        text.remove_prefix(u);
    }
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(total * 1000)));
}

std::optional<system_clock::time_point> parse_rfc3339(std::string_view s) {
    const int year = digits(s, 0, 4), month = digits(s, 5, 2), day = digits(s, 8, 2);
    const int hour = digits(s, 11, 2), minute = digits(s, 14, 2), second = digits(s, 17, 2);
    if (s.size() < 20 || year < 0 || month < 1 || day < 1 || hour < 0 || minute < 0 || second < 0 ||
        s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return std::nullopt;
    std::size_t i = 19;
    double fraction = 0;
    if (s[i] == '.') {
        const auto start = i;
        while (++i < s.size() && s[i] >= '0' && s[i] <= '9') {
        }
        fraction = std::stod("0" + std::string(s.substr(start, i - start)));
    }
    int offset = 0;  // seconds east of UTC
    if (i < s.size() && (s[i] == 'Z' || s[i] == 'z') && i + 1 == s.size()) {
    } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':' &&
               digits(s, i + 1, 2) >= 0 && digits(s, i + 4, 2) >= 0) {
        offset = (digits(s, i + 1, 2) * 3600 + digits(s, i + 4, 2) * 60) * (s[i] == '-' ? -1 : 1);
    } else {
        return std::nullopt;
    }
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    const std::time_t t = timegm(&tm);
    return system_clock::from_time_t(t - offset) +
           std::chrono::duration_cast<system_clock::duration>(
               std::chrono::duration<double>(fraction));
}

std::optional<system_clock::time_point> provider_blocked_until(unsigned status,
                                                               const header_lookup& header,
                                                               system_clock::time_point now) {
    std::optional<system_clock::time_point> out;
    if (status == 429) {
        if (const auto hint = retry_hint(header("retry-after-ms"), header("retry-after"), now))
            later(out, now + *hint);
    }
    for (const std::string_view kind : {"requests", "tokens"}) {
        const std::string k(kind);
        if (!zero(header("x-ratelimit-remaining-" + k)))
            continue;
        if (const auto d = parse_go_duration(header("x-ratelimit-reset-" + k)))
            later(out, now + *d);
    }
    for (const std::string_view kind : {"requests", "tokens", "input-tokens", "output-tokens"}) {
        const std::string k = "anthropic-ratelimit-" + std::string(kind);
        if (!zero(header(k + "-remaining")))
            continue;
        if (const auto t = parse_rfc3339(header(k + "-reset")); t && *t > now)
            later(out, *t);
    }
    if (out && *out - now > longest_reset)
        out = now + longest_reset;
    return out;
}

}  // namespace coalescer::upstream
