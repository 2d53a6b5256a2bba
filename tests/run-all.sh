#!/usr/bin/env bash
# Builds and runs every test three times: optimised, under AddressSanitizer+UBSan, and under
# ThreadSanitizer; then the fuzz targets briefly (tests/fuzz/run.sh, 20 s each; a longer run is
# COALESCER_FUZZ_SECONDS=600 tests/fuzz/run.sh). Installs missing Debian packages first.
# Exit status: 0 only if all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
sh deploy/install-deps.sh
presets=${COALESCER_TEST_PRESETS:-"release asan-ubsan tsan"}
for preset in $presets; do
    echo "=== $preset ==="
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset"
    ctest --preset "$preset"
done
if [ "${COALESCER_SKIP_FUZZ:-0}" != 1 ]; then
    echo "=== fuzz ==="
    bash tests/fuzz/run.sh
fi
