#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-16, ASan+UBSan) in build/fuzz, runs each over its seed
# corpus (every file once, at full size: the regression inputs among them), then fuzzes each for
# COALESCER_FUZZ_SECONDS seconds (default 20). New inputs go to build/fuzz/corpus/<target>, never
# to tests/fuzz/corpus; a crash, leak, timeout or out-of-memory input is saved as
# build/fuzz/artifacts/<target>-*, and the log is build/fuzz/logs/<target>.log.
# Exit status: 0 only if no target failed.
#
#   COALESCER_FUZZ_SECONDS=600 tests/fuzz/run.sh               # a longer run
#   COALESCER_FUZZ_TARGETS="canonical_json" tests/fuzz/run.sh  # some targets only
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${COALESCER_FUZZ_SECONDS:-20}
targets=${COALESCER_FUZZ_TARGETS:-"request_head canonical_json response_head sse_usage config_loader"}
build=build/fuzz
seeds=tests/fuzz/corpus

# clang-16 and its libFuzzer and sanitizer runtimes, installed when missing (as
# deploy/install-deps.sh does for the main build).
missing=""
for p in clang-16 libfuzzer-16-dev libclang-rt-16-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # a list of package names
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

launcher=()
if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
CC=clang-16 CXX=clang++-16 cmake -S tests/fuzz -B "$build" "${launcher[@]}" >/dev/null
cmake --build "$build" -j2

dict_for() {
    case $1 in
        request_head | response_head) echo tests/fuzz/dict/http.dict ;;
        canonical_json) echo tests/fuzz/dict/json.dict ;;
        sse_usage) echo tests/fuzz/dict/usage.dict ;;
        config_loader) echo tests/fuzz/dict/yaml.dict ;;
    esac
}

# Stacks with function names and lines.
for symbolizer in llvm-symbolizer-16 llvm-symbolizer; do
    if command -v "$symbolizer" >/dev/null; then
        export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v "$symbolizer")}
        break
    fi
done
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/artifacts" "$build/logs"
failed=()
for target in $targets; do
    exe=$build/$target
    log=$build/logs/$target.log
    mkdir -p "$build/corpus/$target"
    options=(-rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=10
             -artifact_prefix="$build/artifacts/$target-" -dict="$(dict_for "$target")")
    echo "=== $target: $(find "$seeds/$target" -type f | wc -l) seed inputs, then ${seconds}s of fuzzing"
    # The seeds, each once and whole (no -max_len: it would cut them). `timeout -s KILL`:
    # libFuzzer's own limits end a slow or growing input, but its report of a huge process can
    # itself hang.
    if ! find "$seeds/$target" -type f -print0 | sort -z |
        timeout -s KILL 300 xargs -0 "$exe" "${options[@]}" >"$log" 2>&1; then
        echo "FAILED on a seed input: see $log"
        tail -n 40 "$log"
        failed+=("$target")
        continue
    fi
    # Fuzzing: new inputs are written to the first directory only; the seeds are only read.
    if ! timeout -s KILL $((seconds + 120)) "$exe" "${options[@]}" -max_total_time="$seconds" \
        -max_len=4096 -print_final_stats=1 "$build/corpus/$target" "$seeds/$target" >>"$log" 2>&1; then
        echo "FAILED while fuzzing: see $log and $build/artifacts/"
        tail -n 60 "$log"
        failed+=("$target")
        continue
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
done
if ((${#failed[@]} != 0)); then
    echo "fuzzing failed: ${failed[*]}"
    exit 1
fi
echo "fuzzing: all targets passed"
