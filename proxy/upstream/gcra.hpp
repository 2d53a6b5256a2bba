// The generic cell rate algorithm, weighted: a rate of `per_minute` units with room for a burst
// of `burst` units, held as one number, the theoretical arrival time (TAT) of the next unit. A
// take of n units is admitted when it would not put the TAT further than burst × interval
// ahead of now; otherwise the answer is how long until it would not. O(1) memory and exact:
// over any span of t seconds at most burst + t × per_minute / 60 units pass. The Redis budget
// runs the same arithmetic in a Lua script.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace coalescer::upstream {

class gcra {
  public:
    gcra(double per_minute, double burst) : interval_(60.0 / per_minute), burst_(burst) {}

    // Seconds to wait before `units` could pass at `now` (seconds on any steady clock); 0 when
    // they passed now. A take larger than the burst counts as the burst: it waits for an empty
    // bucket instead of never passing.
    double take(double now, double units) {
        const double horizon = burst_ * interval_;
        const double next = std::max(tat_, now) + std::min(units, burst_) * interval_;
        if (next - now > horizon + 1e-9)
            return next - now - horizon;
        tat_ = next;
        return 0;
    }
    // Units taken earlier turned out to be `delta` more (or fewer): the TAT moves by as much.
    void adjust(double delta_units) { tat_ += delta_units * interval_; }

    double interval() const { return interval_; }

  private:
    double interval_;  // seconds per unit
    double burst_;
    double tat_ = -std::numeric_limits<double>::infinity();  // nothing taken yet
};

// The burst allowed for a per-minute request budget: one second's worth, at least one call.
inline double request_burst(double per_minute) {
    return std::max(1.0, per_minute / 60.0);
}

}  // namespace coalescer::upstream
