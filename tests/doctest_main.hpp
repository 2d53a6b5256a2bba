// What the tests' own main (doctest_main.cpp) adds to doctest.
#pragma once

#include <string_view>

namespace coalescer::test {

// Marks the running test case as skipped, with `reason` printed in its output; the test then
// returns. A ctest entry whose test case skipped itself (and failed nothing) exits 77, which
// ctest reports as "Skipped" (SKIP_RETURN_CODE), so a test that did not run never counts as a
// pass. Use it for a test that cannot run in this build or on this machine, never to hide a
// failure.
void skip_test(std::string_view reason);

}  // namespace coalescer::test
