#!/usr/bin/env bash
# Builds and runs every test three times: optimised (the ci-release preset: the release build
# with its sources compiled several at a time and without the benchmark programs, which
# tests/bench/run-bench.sh builds), under AddressSanitizer+UBSan, and under ThreadSanitizer
# (three tests at a time: most of a test's time is spent waiting on sockets); then the fuzz
# targets briefly (5 s each here; a longer run is COALESCER_FUZZ_SECONDS=600 tests/fuzz/run.sh).
# Installs missing Debian packages first. Each stage prints when it ended: CI must finish
# within 25 minutes on 2 cores, and the three builds are most of it.
# Exit status: 0 only if all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
sh deploy/install-deps.sh
presets=${COALESCER_TEST_PRESETS:-"ci-release asan-ubsan tsan"}
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
    COALESCER_FUZZ_SECONDS=${COALESCER_FUZZ_SECONDS:-5} bash tests/fuzz/run.sh
    stage fuzz
fi
