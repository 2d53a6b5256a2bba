// What a provider's answer says about its own rate limit, as the moment before which no call
// should start: a 429's retry-after (or retry-after-ms), and a remaining count of 0 with its
// reset, in OpenAI's form (x-ratelimit-remaining-requests / -tokens with
// x-ratelimit-reset-requests / -tokens, durations such as "6m0s" or "20ms") and Anthropic's
// (anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining with -reset,
// RFC 3339 times). The fleet budget is closed until then.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string_view>

namespace coalescer::upstream {

// A header's value by lower-case name; empty when absent.
using header_lookup = std::function<std::string_view(std::string_view name)>;

std::optional<std::chrono::system_clock::time_point> provider_blocked_until(
    unsigned status, const header_lookup& header, std::chrono::system_clock::time_point now);

// "1s", "6m0s", "20ms", "1h2m3.5s" → a duration; nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_go_duration(std::string_view text);
// "2024-05-01T12:00:30Z", "2024-05-01T12:00:30.25+02:00" → a time; nullopt when malformed.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text);

}  // namespace coalescer::upstream
