// A fleet budget: how many calls (per minute), tokens (per minute) and concurrent calls every
// replica together may make to one upstream. The exchange asks it once per upstream attempt,
// after the pacer's slot and before the call, so a flight takes one unit however many clients
// share it. This is the interface; the in-process budget is local_budget.hpp, the Redis one
// lives in cluster/ and is handed to the service by the server's wiring.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace coalescer::upstream {

struct budget_decision {
    bool admitted = false;
    // When refused: how long until the call could be admitted (the client's Retry-After).
    std::chrono::milliseconds retry_in{0};
    std::uint64_t lease = 0;     // names the admitted call's concurrency slot, if any
    std::uint64_t reserved = 0;  // tokens reserved for it
    std::size_t worker = 0;      // the worker that asked
    bool fallback = false;       // admitted by the local share while the shared budget is away
};

class fleet_budget {
  public:
    virtual ~fleet_budget() = default;
    // One call estimated at `tokens` (prompt and the most it may write), asked on `worker`'s
    // thread. Never waits longer than a command timeout.
    virtual boost::asio::awaitable<budget_decision> try_admit(std::uint64_t tokens,
                                                              std::size_t worker) = 0;
    // The admitted call ended: its slot comes back; its reservation becomes `used` tokens
    // (nullopt: unknown, the reservation stands).
    virtual void finish(const budget_decision& admitted, std::optional<std::uint64_t> used) = 0;
    // The provider said no call may start before `until` (a 429's Retry-After, a remaining
    // count of 0 until a reset).
    virtual void block_until(std::chrono::system_clock::time_point until) = 0;
    // Whether calls are admitted by this pod's fallback share now (the shared budget is away).
    virtual bool falling_back() const noexcept { return false; }
};

// An admitted call's claim on the budget: finished once, however the holder leaves.
class budget_lease {
  public:
    budget_lease() = default;
    budget_lease(fleet_budget& b, budget_decision d) : budget_(&b), decision_(d) {}
    budget_lease(budget_lease&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)),
          decision_(other.decision_),
          used_(other.used_) {}
    budget_lease& operator=(budget_lease&& other) noexcept {
        reset();
        budget_ = std::exchange(other.budget_, nullptr);
        decision_ = other.decision_;
        used_ = other.used_;
        return *this;
    }
    ~budget_lease() { reset(); }
    // The response's usage, once known: what the reservation becomes.
    void settle(std::uint64_t used) { used_ = used; }
    void reset() {
        if (budget_ != nullptr) {
            std::exchange(budget_, nullptr)->finish(decision_, used_);
        }
    }

  private:
    fleet_budget* budget_ = nullptr;
    budget_decision decision_;
    std::optional<std::uint64_t> used_;
};

// Reserved for the answer of a request that does not cap it.
inline constexpr std::uint64_t default_output_tokens = 1024;

// What a request may cost in tokens: the most it lets the model write (the first numeric
// `max_tokens`, `max_output_tokens` or `max_completion_tokens` in the body, else
// default_output_tokens) plus its prompt, estimated at one token per 4 bytes of body.
std::uint64_t estimate_tokens(std::string_view body);

}  // namespace coalescer::upstream
