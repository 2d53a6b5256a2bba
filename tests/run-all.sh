#!/usr/bin/env bash
# Builds and runs every test three times: optimised, under AddressSanitizer+UBSan, and under
# ThreadSanitizer (two tests at a time: most of a test's time is spent waiting on sockets); then
# the fuzz targets briefly (10 s each here; a longer run is COALESCER_FUZZ_SECONDS=600
# tests/fuzz/run.sh). Installs missing Debian packages first. Each stage prints its duration:
# CI must finish within 25 minutes.
# Exit status: 0 only if all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
sh deploy/install-deps.sh
presets=${COALESCER_TEST_PRESETS:-"release asan-ubsan tsan"}
stage() { echo "=== $1 done after $SECONDS s"; }
stage deps
for preset in $presets; do
    echo "=== $preset ==="
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset"
    stage "$preset build"
    ctest --preset "$preset"
    stage "$preset tests"
done
if [ "${COALESCER_SKIP_FUZZ:-0}" != 1 ]; then
    echo "=== fuzz ==="
    COALESCER_FUZZ_SECONDS=${COALESCER_FUZZ_SECONDS:-10} bash tests/fuzz/run.sh
    stage fuzz
fi
