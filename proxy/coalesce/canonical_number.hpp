// The canonical spelling of a JSON number (the rules are in canonical_json.hpp): its exact
// decimal value, never a double, so that "1.50", "15e-1" and "1.5" key alike while 1e400 and
// 1e401, or two integers past 2^53, never do.
#pragma once

#include <string>
#include <string_view>

namespace coalescer::coalesce {

// Appends the canonical spelling of the JSON number `text` to `out`. `digits` is scratch that
// the caller keeps, so that steady-state use does not allocate. False when `text` is not a JSON
// number or its value's exponent is beyond any sane range (|e| > 10^15 in scientific notation:
// the canonical spelling must itself be accepted).
bool append_canonical_number(std::string_view text, std::string& out, std::string& digits);

}  // namespace coalescer::coalesce
