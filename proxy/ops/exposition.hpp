// The Prometheus text exposition format (0.0.4), written by hand: the counters are our own
// preallocated atomics (see metrics.hpp), so all that is needed is the text.
#pragma once

#include <string>
#include <string_view>

namespace coalescer::ops {

// name="value", the value escaped.
std::string label(std::string_view name, std::string_view value);
// The # HELP and # TYPE lines of a metric family.
void header(std::string& out, std::string_view name, std::string_view type, std::string_view help);
// One sample line; `labels` as label() makes them, comma-separated (or empty).
void sample(std::string& out, std::string_view name, std::string_view labels,
            std::string_view value);

}  // namespace coalescer::ops
