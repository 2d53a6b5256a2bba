#include "upstream/local_budget.hpp"

#include <algorithm>
#include <cmath>

namespace coalescer::upstream {
namespace {

double scaled(std::uint64_t limit, double share) {
    return std::max(1.0, std::floor(static_cast<double>(limit) * share));
}

std::chrono::milliseconds ceil_ms(double seconds) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1000.0 - 1e-6)));
}

}  // namespace

local_budget::local_budget(const ops::fleet_limits_config& limits, double share) {
    if (limits.requests_per_minute != 0) {
        const double rpm = scaled(limits.requests_per_minute, share);
        requests_.emplace(rpm, request_burst(rpm));
    }
    if (limits.tokens_per_minute != 0) {
        const double tpm = scaled(limits.tokens_per_minute, share);
        tokens_.emplace(tpm, tpm);
        tokens_per_minute_ = static_cast<std::uint64_t>(tpm);
    }
    if (limits.max_concurrent != 0) {
        max_concurrent_ = static_cast<std::uint64_t>(scaled(limits.max_concurrent, share));
    }
}

double local_budget::seconds(clock::time_point t) const {
    return std::chrono::duration<double>(t - epoch_).count();
}

boost::asio::awaitable<budget_decision> local_budget::try_admit(std::uint64_t tokens,
                                                                std::size_t worker) {
    auto decision = admit(tokens);
    decision.worker = worker;
    co_return decision;
}

budget_decision local_budget::admit(std::uint64_t tokens, clock::time_point now) {
    budget_decision out;
    std::lock_guard lock(mutex_);
    if (now < blocked_until_) {
        out.retry_in = std::chrono::ceil<std::chrono::milliseconds>(blocked_until_ - now);
        return out;
    }
    if (max_concurrent_ != 0 && in_use_ >= max_concurrent_) {
        out.retry_in = concurrency_poll;
        return out;
    }
    if (tokens_)
        tokens = std::min(tokens, tokens_per_minute_);  // else it could never pass
    const double at = seconds(now);
    // Tokens first: a refusal there must not have used up a request unit.
    if (tokens_) {
        if (const double wait = tokens_->take(at, static_cast<double>(tokens)); wait > 0) {
            out.retry_in = ceil_ms(wait);
            return out;
        }
    }
    if (requests_) {
        if (const double wait = requests_->take(at, 1); wait > 0) {
            if (tokens_)
                tokens_->adjust(-static_cast<double>(tokens));
            out.retry_in = ceil_ms(wait);
            return out;
        }
    }
    ++in_use_;
    out.admitted = true;
    out.lease = next_lease_++;
    out.reserved = tokens;
    return out;
}

void local_budget::finish(const budget_decision& admitted, std::optional<std::uint64_t> used) {
    std::lock_guard lock(mutex_);
    if (in_use_ > 0)
        --in_use_;
    if (tokens_ && used)
        tokens_->adjust(static_cast<double>(*used) - static_cast<double>(admitted.reserved));
}

void local_budget::block_until(std::chrono::system_clock::time_point until) {
    const auto steady = clock::now() + (until - std::chrono::system_clock::now());
    std::lock_guard lock(mutex_);
    blocked_until_ =
        std::max(blocked_until_, std::chrono::time_point_cast<clock::duration>(steady));
}

std::chrono::milliseconds local_budget::blocked_for() const {
    const auto now = clock::now();
    std::lock_guard lock(mutex_);
    return blocked_until_ > now ? std::chrono::ceil<std::chrono::milliseconds>(blocked_until_ - now)
                                : std::chrono::milliseconds(0);
}

std::uint64_t local_budget::in_use() const {
    std::lock_guard lock(mutex_);
    return in_use_;
}

}  // namespace coalescer::upstream
