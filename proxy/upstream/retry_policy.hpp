// When an upstream attempt may be repeated, and after how long. Only before the response head,
// and only where the provider cannot have done the work: connect/TLS failures before the
// request was written, and 429/503 answers.
#pragma once

#include "ops/config.hpp"

#include <boost/system/error_code.hpp>

#include <chrono>
#include <optional>
#include <string_view>

namespace coalescer::upstream {

bool retryable_failure(boost::system::error_code ec) noexcept;
bool retryable_status(unsigned status) noexcept;

// The server's own hint: `retry-after-ms` first, then `Retry-After` (delta seconds or an
// HTTP-date, relative to `now`). nullopt when absent or unreadable.
std::optional<std::chrono::milliseconds> retry_hint(std::string_view retry_after_ms,
                                                    std::string_view retry_after,
                                                    std::chrono::system_clock::time_point now);

// Capped exponential backoff with jitter: attempt 1 waits around base_delay, doubling up to
// max_delay; `unit` in [0, 1) picks the point in the jitter range.
std::chrono::milliseconds backoff(const ops::retry_config& cfg, int attempt, double unit);

}  // namespace coalescer::upstream
