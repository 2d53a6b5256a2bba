#!/usr/bin/env bash
# The performance benchmark suite: one command, not part of CI, that starts everything itself on
# 127.0.0.1, repeats each measurement, and ends with a Markdown table for README.md in which
# every figure is "median (min–max)" over the runs.
#
#   bash tests/bench/run-bench.sh          (from anywhere; about 8-9 minutes on 2 cores after the build,
#                                           estimated from the rows timed on their own)
#
#   a. pass-through and coalescing path against nginx: wrk POSTs a small /chat/completions body,
#      different on every request (distinct.lua), through nginx (plain keep-alive reverse proxy),
#      through coalescer on a non-coalescing route, through coalescer on a coalescing route (each
#      request keyed, a leader, its answer retained), and directly, to one fast upstream (nginx
#      answering `return 200` with a fixed JSON body). BENCH_PAIRS rounds, the order of the paths
#      rotating every round; per-round ratios against nginx. The CPUs are split: the proxy under
#      test on the upper half of the CPUs this shell may use, wrk and the upstream on the lower
#      half (2 CPUs: proxy on CPU 1, wrk + upstream on CPU 0).
#   b. coalesced burst: burst_bench (N identical concurrent requests, mock provider with latency L).
#   c. fan-out: fanout_bench (one SSE flight to N subscribers, on an absolute schedule), each run
#      next to the same client against a bare send() loop (the floor), at 10,000 subscribers
#      (p99 delay) and at 1,000 (the spread of each event from first to last subscriber).
#   d. key cost: key_bench (canonical JSON + SHA-256 MB/s).
#   e. key memory: key_memory_bench (peak heap bytes of keying per body byte; exact, one run).
#   f. big bodies: bigbody_bench (small coalescing requests with and without 16 MiB bodies
#      arriving at the same one-worker sidecar, in front of two mock-provider processes).
#
# Exit status 0 whether or not the targets are met (a benchmark, not a test); non-zero only when
# something could not be built or started.
#
# Knobs (environment):
#   BENCH_PAIRS=10                 rounds of row a (each: nginx, coalescer, coalescer-coalesce,
#                                  direct, in rotating order)
#   BENCH_REPEAT=5                 runs of rows b, c, d and f
#   BENCH_WORKERS=                 coalescer `workers` = nginx proxy `worker_processes` in row a
#                                  (default: the number of CPUs the proxies get, 1 on 2 CPUs)
#   BENCH_UPSTREAM_WORKERS=1       worker_processes of the "return 200" upstream nginx
#   BENCH_WRK_THREADS=1 BENCH_WRK_CONNECTIONS=50 BENCH_WRK_DURATION=5s BENCH_WRK_WARMUP=1s
#   BENCH_DIRECT=1                 0: leave the direct path out of row a
#   BENCH_SPLIT_CPUS=1             0: row a without taskset (everything floats over all CPUs)
#   BENCH_BURST_REQUESTS=1000 BENCH_BURST_LATENCY_MS=500 BENCH_BURST_WORKERS=2
#   BENCH_FANOUT_N=10000 BENCH_FANOUT_SPREAD_N=1000 BENCH_FANOUT_SPREAD_CHUNKS=100
#   BENCH_FANOUT_WORKERS=2
#   BENCH_KEY_SECONDS=1            seconds per key_bench measurement
#   BENCH_BIG_MIB=16 BENCH_BIG_SECONDS=5 BENCH_BIG_RATE=200
#   BENCH_SECTIONS="a b c d e f"   which rows to run
#   BENCH_SKIP_BUILD=1             use the binaries already in build/release
#   BENCH_KEEP=1                   keep the temporary directory (configs, logs, raw outputs)
#   BENCH_PERF=1                   after row a's measurements, one more (unmeasured) wrk run
#                                  against coalescer's pass-through route under `perf record
#                                  $BENCH_PERF_ARGS` (default -g; the release build has no frame
#                                  pointers: BENCH_PERF_ARGS="--call-graph dwarf,16384 -F 999"
#                                  for full stacks); perf.data in the kept temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build/release
LUA=$ROOT/tests/bench/distinct.lua

PAIRS=${BENCH_PAIRS:-10}
REPEAT=${BENCH_REPEAT:-5}
UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-50}
WRK_DURATION=${BENCH_WRK_DURATION:-5s}
WRK_WARMUP=${BENCH_WRK_WARMUP:-1s}
DIRECT=${BENCH_DIRECT:-1}
SPLIT_CPUS=${BENCH_SPLIT_CPUS:-1}
BURST_REQUESTS=${BENCH_BURST_REQUESTS:-1000}
BURST_LATENCY_MS=${BENCH_BURST_LATENCY_MS:-500}
BURST_WORKERS=${BENCH_BURST_WORKERS:-2}
FANOUT_N=${BENCH_FANOUT_N:-10000}
SPREAD_N=${BENCH_FANOUT_SPREAD_N:-1000}
SPREAD_CHUNKS=${BENCH_FANOUT_SPREAD_CHUNKS:-100}
FANOUT_WORKERS=${BENCH_FANOUT_WORKERS:-2}
KEY_SECONDS=${BENCH_KEY_SECONDS:-1}
BIG_MIB=${BENCH_BIG_MIB:-16}
BIG_SECONDS=${BENCH_BIG_SECONDS:-5}
BIG_RATE=${BENCH_BIG_RATE:-200}
SECTIONS=${BENCH_SECTIONS:-a b c d e f}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
PERF=${BENCH_PERF:-0}
PERF_ARGS=${BENCH_PERF_ARGS:--g}
KEEP=${BENCH_KEEP:-0}
[[ $PERF == 1 ]] && KEEP=1

log() { printf '%s\n' "$*" >&2; }
die() { log "run-bench: $*"; exit 1; }
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# ------------------------------------------------------------------------------------------------
# Tools: wrk, nginx, taskset and ss from the Debian packages, the release build of the project.

install_packages() {
    local missing=()
    want a && ! command -v wrk >/dev/null && missing+=(wrk)
    want a && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]] && missing+=(nginx-light)
    ! command -v ss >/dev/null && missing+=(iproute2)     # free_port
    ! command -v taskset >/dev/null && missing+=(util-linux)  # row a's CPU split
    ((${#missing[@]} == 0)) && return 0
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || die "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
        sudo=(sudo)
    fi
    log "run-bench: installing ${missing[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2; then
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2
    fi
}

install_packages
if [[ $PERF == 1 ]] && ! command -v perf >/dev/null; then
    die "BENCH_PERF=1 needs perf (Debian: apt-get install linux-perf)"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

TARGETS=(coalescer mock-provider fanout_bench key_bench burst_bench key_memory_bench bigbody_bench)
if [[ $SKIP_BUILD != 1 ]]; then
    log "run-bench: building the release preset (cmake --preset release; cmake --build --preset release --target ${TARGETS[*]})"
    (cd "$ROOT" && cmake --preset release >&2 &&
        cmake --build --preset release --target "${TARGETS[@]}" >&2) ||
        die "the build failed"
fi
COALESCER=$BUILD/proxy/coalescer
MOCK=$BUILD/tests/mock_provider/mock-provider
for bin in "$COALESCER" "$MOCK" "$BUILD"/tests/bench/{burst_bench,fanout_bench,key_bench,key_memory_bench,bigbody_bench}; do
    [[ -x $bin ]] || die "$bin is missing (build the release preset)"
done

# ------------------------------------------------------------------------------------------------
# Scratch space and clean-up: everything started here is stopped on exit.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/coalescer-bench.XXXXXX")
chmod 755 "$TMP"  # nginx workers run as nobody when started by root
PIDS=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then
        log "run-bench: kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port no socket uses (and not handed out before in this run), below the kernel's ephemeral
# range: a port a client connection took as its own, even one now in TIME_WAIT, cannot be
# bound by a listener, and wrk and curl leave thousands of those behind.
USED_PORTS=" "
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local p low=10000
    for _ in $(seq 200); do
        p=$((low + RANDOM % (EPHEMERAL_LOW - low)))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -tanH "( sport = :$p )" 2>/dev/null) ]] &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_http() {  # URL [seconds]: until it answers 200
    local url=$1 deadline=$((SECONDS + ${2:-10}))
    until curl -s -o /dev/null -m 1 -f "$url"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stats FORMAT NUMBERS...: "median (min–max)" of the numbers, each printed with FORMAT; "-" if none.
stats() {
    local format=$1
    shift
    printf '%s\n' "$@" | awk NF | sort -g | awk -v f="$format" '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf f " (" f "\xe2\x80\x93" f ")\n", m, v[1], v[NR] }'
}
median() {  # NUMBERS... -> their median ("nan" if none)
    printf '%s\n' "$@" | awk NF | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# results FILE NAME: the values of every "result: NAME VALUE" line, one per line.
results() { awk -v n="$2" '$1 == "result:" && $2 == n { print $3 }' "$1"; }
count_if() {  # EXPR NUMBERS...: how many numbers x satisfy the awk expression EXPR (on x)
    local expr=$1
    shift
    printf '%s\n' "$@" | awk NF | awk "{ x = \$1; if ($expr) n++ } END { print n + 0 }"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a <= b) }'; }
verdict() { if "$@"; then echo "met"; else echo "**not met**"; fi; }

HOST_LINE="$(uname -n), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ { print $2 }') GiB"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT+=" (with uncommitted changes)"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_SECONDS=$SECONDS
ROWS=()     # the README table's rows
DETAILS=()  # lines printed above it

# ------------------------------------------------------------------------------------------------
# CPU split for row a: the proxy under test on the upper half of the CPUs this shell may use, wrk
# and the upstream on the lower half. With 2 CPUs that is CPU 1 for the proxy and CPU 0 for wrk
# and the upstream together: they cannot get one each.

expand_cpus() {  # "0-2,5" -> "0 1 2 5"
    local part parts
    IFS=',' read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            seq "${part%-*}" "${part#*-}"
        else
            echo "$part"
        fi
    done | tr '\n' ' '
}
read -r -a ALLOWED <<<"$(expand_cpus "$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)")"
LOAD_CPUS="" PROXY_CPUS=""
if [[ $SPLIT_CPUS == 1 ]] && ((${#ALLOWED[@]} >= 2)); then
    half=$((${#ALLOWED[@]} / 2))
    LOAD_CPUS=$(IFS=,; echo "${ALLOWED[*]:0:half}")
    PROXY_CPUS=$(IFS=,; echo "${ALLOWED[*]:half}")
    PROXY_CPU_COUNT=$((${#ALLOWED[@]} - half))
    if ((${#ALLOWED[@]} == 2)); then
        CPU_NOTE="the proxy under test alone on CPU $PROXY_CPUS; wrk and the upstream together on CPU $LOAD_CPUS (2 CPUs: they cannot have one each, so wrk's load is itself limited by sharing a CPU with the upstream, the same for both proxies); other processes on the machine are not confined"
    else
        CPU_NOTE="the proxy under test on CPUs $PROXY_CPUS; wrk and the upstream on CPUs $LOAD_CPUS; other processes on the machine are not confined"
    fi
else
    PROXY_CPU_COUNT=${#ALLOWED[@]}
    CPU_NOTE="no CPU split (BENCH_SPLIT_CPUS=0 or a single CPU): wrk, the upstream and the proxy float over CPUs $(IFS=,; echo "${ALLOWED[*]}")"
fi
WORKERS=${BENCH_WORKERS:-$PROXY_CPU_COUNT}

on_cpus() {  # CPUS COMMAND...: runs COMMAND (in the foreground) confined to CPUS
    local cpus=$1
    shift
    if [[ -n $cpus ]]; then
        taskset -c "$cpus" "$@"
    else
        "$@"
    fi
}

# start_bg CPUS OUT ERR COMMAND...: COMMAND as a background job of this shell, confined to CPUS,
# stdout to OUT and stderr to ERR; sets BG_PID to the command's own PID (taskset execs it; a
# function run with & would leave a subshell in between, whose PID neither stops the command
# nor counts its children's CPU time).
start_bg() {
    local cpus=$1 out=$2 err=$3
    shift 3
    local cmd=("$@")
    if [[ -n $cpus ]]; then
        cmd=(taskset -c "$cpus" "${cmd[@]}")
    fi
    "${cmd[@]}" >"$out" 2>"$err" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# ------------------------------------------------------------------------------------------------
# a. Pass-through and the coalescing path, against nginx

UPSTREAM_BODY='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"sonar","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":8,"total_tokens":22}}'

nginx_common() {  # DIR WORKERS
    cat <<EOF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
EOF
}

nginx_temp_paths() {  # DIR
    cat <<EOF
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

# start_nginx DIR CPUS: runs nginx on DIR/nginx.conf (daemon off, as a background job of this
# shell) confined to CPUS; sets NGINX_PID.
start_nginx() {
    "$NGINX" -t -q -e "$1/error.log" -p "$1" -c "$1/nginx.conf" -g 'daemon off;' 2>"$1/check.log" ||
        die "nginx rejects $1/nginx.conf: $(cat "$1/check.log")"
    start_bg "$2" "$1/stdout.log" "$1/stderr.log" "$NGINX" -e "$1/error.log" -p "$1" -c "$1/nginx.conf" -g 'daemon off;'
    NGINX_PID=$BG_PID
}

# CPU seconds (user + system) of a process and its children (nginx master + workers; coalescer's threads).
cpu_seconds() {
    local pids hz
    pids="$1 $(pgrep -P "$1" | tr '\n' ' ' || true)"
    hz=$(getconf CLK_TCK)
    for p in $pids; do
        # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }'
    done | awk -v hz="$hz" '{ s += $1 } END { printf "%.3f\n", s / hz }'
}

to_ms() {  # a wrk duration (520.00us, 1.23ms, 1.05s, 2.00m) -> milliseconds
    awk -v t="$1" 'BEGIN {
        if (t ~ /us$/) { sub(/us$/, "", t); printf "%.3f\n", t / 1000 }
        else if (t ~ /ms$/) { sub(/ms$/, "", t); printf "%.3f\n", t }
        else if (t ~ /m$/) { sub(/m$/, "", t); printf "%.3f\n", t * 60000 }
        else if (t ~ /s$/) { sub(/s$/, "", t); printf "%.3f\n", t * 1000 }
        else print "nan" }'
}

# run_wrk NAME URL ROUND PID: one measured wrk run (after a warm-up), wrk on the load CPUs;
# appends to the NAME lists (one entry per round, so that lists of two paths pair by index).
declare -A RPS P50 P99 CPU_US BAD LOADS
run_wrk() {
    local name=$1 url=$2 round=$3 pid=${4:-} out="$TMP/wrk-$1-$3.txt" load cpu0 cpu1 perf_pid=""
    on_cpus "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_WARMUP" -s "$LUA" "$url" \
        -- "$name-$round-warmup" >"$TMP/wrk-$name-$round-warmup.txt" 2>&1 ||
        die "wrk failed against $name ($url): $(tail -3 "$TMP/wrk-$name-$round-warmup.txt")"
    load=$(load1)
    [[ -n $pid ]] && cpu0=$(cpu_seconds "$pid")
    if [[ $round == perf ]]; then
        # shellcheck disable=SC2086  # PERF_ARGS is a list of options
        perf record $PERF_ARGS -o "$TMP/perf.data" -p "$pid" >"$TMP/perf.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    on_cpus "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency -s "$LUA" \
        "$url" -- "$name-$round" >"$out" 2>&1 ||
        die "wrk failed against $name ($url): $(tail -3 "$out")"
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    [[ -n $pid ]] && cpu1=$(cpu_seconds "$pid")
    local rps p50 p99 requests non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk -F': ' '/Non-2xx/ { print $2 }' "$out")
    sockerr=$(awk '/Socket errors/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s + 0 }' "$out")
    [[ -n $rps && -n $requests ]] || die "cannot read wrk's output for $name: $(cat "$out")"
    if [[ $round == perf ]]; then
        log "  a. $name under perf record $PERF_ARGS (not in the table): $rps req/s"
        return 0
    fi
    RPS[$name]+="$rps "
    P50[$name]+="$p50 "
    P99[$name]+="$p99 "
    BAD[$name]=$((${BAD[$name]:-0} + ${non2xx:-0} + ${sockerr:-0}))
    LOADS[$name]+="${LOADS[$name]:+/}$load"
    if [[ -n $pid ]]; then
        # CPU of the proxy alone (not wrk's, not the upstream's) per request served.
        CPU_US[$name]+="$(awk -v a="$cpu0" -v b="$cpu1" -v n="$requests" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }') "
    fi
    log "  a. round $round $name: $rps req/s, p50 $p50 ms, p99 $p99 ms (load $load)"
}

proxy_nginx_conf() {  # DIR PORT UPSTREAM_PORT: the plain keep-alive reverse proxy
    { nginx_common "$1" "$WORKERS"; cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$1")
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream fast {
        server 127.0.0.1:$3;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / {
            proxy_pass http://fast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$1/nginx.conf"
}

# coalescer_conf FILE PORT ADMIN_PORT UPSTREAM_PORT: /co/... coalesces (the prefix stripped),
# everything else passes through.
coalescer_conf() {
    local max_concurrent=$((WRK_CONNECTIONS > 64 ? WRK_CONNECTIONS : 64))
    cat >"$1" <<EOF
# Generated by tests/bench/run-bench.sh, row a: to the "return 200" nginx, no access log.
workers: $WORKERS
listen: {address: 127.0.0.1, port: $2}
admin: {address: 127.0.0.1, port: $3}
upstreams:
  - name: fast
    url: http://127.0.0.1:$4
    max_concurrent: $max_concurrent
routes:
  - {prefix: /co/, upstream: fast, strip_prefix: /co, coalesce: true}
  - {prefix: /, upstream: fast, coalesce: false}
log: {level: warn}
EOF
    "$COALESCER" --check-config "$1" >&2 || die "coalescer rejects $1"
}

# start_coalescer CONFIG ADMIN_PORT NAME CPUS: a background job of this shell; sets CO_PID.
start_coalescer() {
    start_bg "$4" "$TMP/$3.stdout.log" "$TMP/$3.stderr.log" "$COALESCER" --config "$1"
    CO_PID=$BG_PID
    wait_http "http://127.0.0.1:$2/readyz" || die "$3 did not start: $(cat "$TMP/$3.stderr.log")"
}

roles() {  # ADMIN_PORT ROUTE_PREFIX: "role status=count, ..." of coalescer_requests_total on that route
    curl -s -m 5 "http://127.0.0.1:$1/metrics" | awk -v route="route=\"$2\"" '
        /^coalescer_requests_total/ && index($0, route) {
            match($0, /role="[^"]*"/); r = substr($0, RSTART + 6, RLENGTH - 7)
            match($0, /status_class="[^"]*"/); c = substr($0, RSTART + 14, RLENGTH - 15)
            n[r " " c] += $NF }
        END { for (k in n) { printf "%s%s=%d", sep, k, n[k]; sep = ", " } }'
}

pass_through() {
    local up_dir=$TMP/upstream px_dir=$TMP/nginx-proxy
    local up_port nginx_port co_port admin_port
    up_port=$(free_port) nginx_port=$(free_port) co_port=$(free_port) admin_port=$(free_port)
    mkdir -p "$up_dir" "$px_dir"

    { nginx_common "$up_dir" "$UPSTREAM_WORKERS"; cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$up_dir")
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$up_port backlog=4096;
        location / {
            default_type application/json;
            return 200 '$UPSTREAM_BODY';
        }
    }
}
EOF
    } >"$up_dir/nginx.conf"
    proxy_nginx_conf "$px_dir" "$nginx_port" "$up_port"
    coalescer_conf "$TMP/coalescer.yaml" "$co_port" "$admin_port" "$up_port"

    local up_pid nginx_pid co_pid
    start_nginx "$up_dir" "$LOAD_CPUS"
    up_pid=$NGINX_PID
    start_nginx "$px_dir" "$PROXY_CPUS"
    nginx_pid=$NGINX_PID
    start_coalescer "$TMP/coalescer.yaml" "$admin_port" coalescer "$PROXY_CPUS"
    co_pid=$CO_PID
    declare -A url=(
        [direct]="http://127.0.0.1:$up_port/chat/completions"
        [nginx]="http://127.0.0.1:$nginx_port/chat/completions"
        [coalescer]="http://127.0.0.1:$co_port/chat/completions"
        [coalescer-coalesce]="http://127.0.0.1:$co_port/co/chat/completions"
    )
    declare -A pid=([direct]="" [nginx]=$nginx_pid [coalescer]=$co_pid [coalescer-coalesce]=$co_pid)
    local name got
    for name in "${!url[@]}"; do
        wait_http "${url[$name]%/chat/completions}/" || die "nothing answers for $name: see the error.log files under $TMP"
        # The same request through each path must get the upstream's body.
        got=$(curl -s -m 5 -X POST -H 'Content-Type: application/json' -d '{"model":"sonar","check":1}' "${url[$name]}")
        [[ $got == "$UPSTREAM_BODY" ]] || die "unexpected answer from $name (${url[$name]}): $got"
    done
    curl -s -m 5 -D - -o /dev/null -X POST -d '{"check":2}' "${url[coalescer]}" | grep -qi '^x-coalesce: pass' ||
        die "coalescer's pass-through route did not answer x-coalesce: pass"
    curl -s -m 5 -D - -o /dev/null -X POST -d '{"check":3}' "${url[coalescer-coalesce]}" | grep -qi '^x-coalesce: leader' ||
        die "coalescer's coalescing route did not answer x-coalesce: leader"
    affinity() { taskset -pc "$1" 2>/dev/null | awk '{ print $NF }'; }
    AFFINITY_NOTE="CPUs allowed, as the kernel reports them: upstream nginx $(affinity "$up_pid"), nginx proxy $(affinity "$nginx_pid") (workers $(pgrep -P "$nginx_pid" | while read -r p; do affinity "$p"; done | paste -sd' ')), coalescer $(affinity "$co_pid"); wrk runs under taskset -c ${LOAD_CPUS:-(none)}"
    log "  a. $CPU_NOTE"
    log "  a. $AFFINITY_NOTE"

    local paths=(nginx coalescer coalescer-coalesce) round i k order
    [[ $DIRECT == 1 ]] && paths+=(direct)
    local roles_before
    roles_before=$(roles "$admin_port" /co/)
    for round in $(seq "$PAIRS"); do
        # The order rotates every round: the VM's speed drifts within minutes, and a fixed order
        # would hand that drift to whichever path always went later.
        order=()
        k=${#paths[@]}
        for i in $(seq 0 $((k - 1))); do
            order+=("${paths[$(((i + round - 1) % k))]}")
        done
        for name in "${order[@]}"; do
            run_wrk "$name" "${url[$name]}" "$round" "${pid[$name]}"
        done
    done
    if [[ $PERF == 1 ]]; then
        run_wrk coalescer "${url[coalescer]}" perf "$co_pid"
    fi
    ROLES_NOTE="requests by role and status on the coalescing route: $(roles "$admin_port" /co/) (before the rounds: ${roles_before:-none}; expected: leaders only)"
    if [[ -s $TMP/coalescer.stdout.log ]]; then
        log "  (coalescer printed $(wc -l <"$TMP/coalescer.stdout.log") stdout lines: expected none at level warn)"
    fi
}

# ratios A B FIELD: per-round A/B of one of the arrays RPS P99 CPU_US (by name), one per line.
ratios() {
    local -n field=$3
    local a b i
    read -r -a a <<<"${field[$1]:-}"
    read -r -a b <<<"${field[$2]:-}"
    for i in "${!a[@]}"; do
        [[ -n ${b[$i]:-} ]] && awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { if (y > 0) printf "%.4f\n", x / y }'
    done
}

report_a() {
    local name
    DETAILS+=("a. wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency (after a $WRK_WARMUP warm-up), distinct.lua (every body different),"
        "   a ${#UPSTREAM_BODY}-byte JSON answer from nginx 'return 200' ($UPSTREAM_WORKERS worker); proxies: $WORKERS worker(s) each, no access log;"
        "   CPUs: $CPU_NOTE"
        "   $AFFINITY_NOTE"
        "   $PAIRS rounds, paths in rotating order; median (min–max) over the rounds:$( ((PAIRS >= 10)) || echo " (FEWER THAN 10 ROUNDS: a smoke run, not figures for README)")")
    DETAILS+=("$(printf '   %-19s %-26s %-26s %-26s %-26s %s' path "req/s" "p50 ms" "p99 ms" "CPU µs/req" "errors")")
    local names=(nginx coalescer coalescer-coalesce)
    [[ $DIRECT == 1 ]] && names+=(direct)
    for name in "${names[@]}"; do
        # shellcheck disable=SC2086  # the lists are space-separated numbers
        DETAILS+=("$(printf '   %-19s %-26s %-26s %-26s %-26s %s' "$name" "$(stats '%.0f' ${RPS[$name]:-})" \
            "$(stats '%.3f' ${P50[$name]:-})" "$(stats '%.3f' ${P99[$name]:-})" \
            "$(stats '%.1f' ${CPU_US[$name]:-})" "${BAD[$name]:-0}")")
    done
    DETAILS+=("   1-minute load average before nginx's run in each round: ${LOADS[nginx]:-}" "   $ROLES_NOTE")
    local t p c tc pc cc
    mapfile -t t < <(ratios coalescer nginx RPS)
    mapfile -t p < <(ratios coalescer nginx P99)
    mapfile -t c < <(ratios coalescer nginx CPU_US)
    mapfile -t tc < <(ratios coalescer-coalesce nginx RPS)
    mapfile -t pc < <(ratios coalescer-coalesce nginx P99)
    mapfile -t cc < <(ratios coalescer-coalesce nginx CPU_US)
    DETAILS+=("   per round, then median (min–max): coalescer/nginx throughput $(stats '%.2f' "${t[@]}")×, p99 $(stats '%.2f' "${p[@]}")×, CPU/request $(stats '%.2f' "${c[@]}")×"
        "   coalescer-coalesce/nginx throughput $(stats '%.2f' "${tc[@]}")×, p99 $(stats '%.2f' "${pc[@]}")×, CPU/request $(stats '%.2f' "${cc[@]}")×"
        "   throughput ratios per round: ${t[*]}"
        "")
    local ok=false
    ge "$(median "${t[@]}")" 1.0 && le "$(median "${p[@]}")" 1.0 && ok=true
    local cpu_layout="1 worker each on CPU $PROXY_CPUS, wrk and upstream on CPU $LOAD_CPUS"
    [[ ${#ALLOWED[@]} == 2 && -n $PROXY_CPUS ]] || cpu_layout="$WORKERS worker(s) each; $CPU_NOTE"
    # shellcheck disable=SC2086
    ROWS+=("| a. pass-through (route \`coalesce: false\`), wrk -c$WRK_CONNECTIONS, $cpu_layout; $PAIRS rounds | coalescer/nginx: throughput $(stats '%.2f' "${t[@]}")×, p99 $(stats '%.2f' "${p[@]}")×, CPU/request $(stats '%.2f' "${c[@]}")×. coalescer $(stats '%.0f' ${RPS[coalescer]:-}) req/s, p99 $(stats '%.2f' ${P99[coalescer]:-}) ms, $(stats '%.1f' ${CPU_US[coalescer]:-}) µs/req; nginx $(stats '%.0f' ${RPS[nginx]:-}) req/s, p99 $(stats '%.2f' ${P99[nginx]:-}) ms, $(stats '%.1f' ${CPU_US[nginx]:-}) µs/req | throughput ≥ 1.0× nginx and p99 ≤ 1.0×: $(verdict "$ok") |")
    # shellcheck disable=SC2086
    ROWS+=("| a. coalescing route, every body different (each request keyed, a leader, its answer retained), same load | coalescer/nginx: throughput $(stats '%.2f' "${tc[@]}")×, p99 $(stats '%.2f' "${pc[@]}")×, CPU/request $(stats '%.2f' "${cc[@]}")×. coalescer $(stats '%.0f' ${RPS[coalescer-coalesce]:-}) req/s, p99 $(stats '%.2f' ${P99[coalescer-coalesce]:-}) ms, $(stats '%.1f' ${CPU_US[coalescer-coalesce]:-}) µs/req | none (the price of keying and a flight per request) |")
}

# ------------------------------------------------------------------------------------------------
# b, c, d, e, f: the C++ benchmark programs

burst() {
    local out=$TMP/burst.txt
    log "  b. burst_bench --requests $BURST_REQUESTS --latency-ms $BURST_LATENCY_MS --runs $REPEAT --workers $BURST_WORKERS (load $(load1))"
    "$BUILD/tests/bench/burst_bench" --requests "$BURST_REQUESTS" --latency-ms "$BURST_LATENCY_MS" --runs "$REPEAT" \
        --workers "$BURST_WORKERS" >"$out" 2>&1 || die "burst_bench failed: $(tail -5 "$out")"
    local calls ok200 p99 p50 max one all200 ok_p99=false
    mapfile -t calls < <(results "$out" burst.calls)
    mapfile -t ok200 < <(results "$out" burst.ok_200)
    mapfile -t p50 < <(results "$out" burst.p50_ms)
    mapfile -t p99 < <(results "$out" burst.p99_ms)
    mapfile -t max < <(results "$out" burst.max_ms)
    ((${#calls[@]} > 0)) || die "cannot read burst_bench's results: $(tail -5 "$out")"
    one=$(count_if 'x == 1' "${calls[@]}")
    all200=$(count_if "x == $BURST_REQUESTS" "${ok200[@]}")
    le "$(median "${p99[@]}")" $((BURST_LATENCY_MS + 20)) && [[ $one == "${#calls[@]}" && $all200 == "${#calls[@]}" ]] && ok_p99=true
    DETAILS+=("b. burst_bench: $BURST_REQUESTS identical concurrent requests on a coalescing route, mock answering after $BURST_LATENCY_MS ms,"
        "   $BURST_WORKERS sidecar workers; client, mock and sidecar in one process, floating over all CPUs; ${#calls[@]} runs:"
        "   exactly 1 upstream call in $one/${#calls[@]} runs, all $BURST_REQUESTS answered 200 in $all200/${#calls[@]};"
        "   latency p50 $(stats '%.1f' "${p50[@]}") ms, p99 $(stats '%.1f' "${p99[@]}") ms, max $(stats '%.1f' "${max[@]}") ms"
        "")
    DETAILS+=("$(sed -n '/^ *run /,/^ *(!/p' "$out" | sed 's/^/   /')" "")
    ROWS+=("| b. $BURST_REQUESTS identical requests at once, upstream answering after $BURST_LATENCY_MS ms; ${#calls[@]} runs | 1 upstream call in $one/${#calls[@]} runs; p50 $(stats '%.1f' "${p50[@]}") ms, p99 $(stats '%.1f' "${p99[@]}") ms | 1 call, p99 ≤ $((BURST_LATENCY_MS + 20)) ms: $(verdict "$ok_p99") |")
}

fanout() {
    local out=$TMP/fanout-$FANOUT_N.txt out2=$TMP/fanout-$SPREAD_N.txt
    log "  c. fanout_bench --subscribers $FANOUT_N --runs $REPEAT --floor --workers $FANOUT_WORKERS (load $(load1))"
    "$BUILD/tests/bench/fanout_bench" --subscribers "$FANOUT_N" --runs "$REPEAT" --floor --workers "$FANOUT_WORKERS" \
        >"$out" 2>&1 || die "fanout_bench failed: $(tail -5 "$out")"
    log "  c. fanout_bench --subscribers $SPREAD_N --chunks $SPREAD_CHUNKS --runs $REPEAT --floor --workers $FANOUT_WORKERS (load $(load1))"
    "$BUILD/tests/bench/fanout_bench" --subscribers "$SPREAD_N" --chunks "$SPREAD_CHUNKS" --runs "$REPEAT" --floor \
        --workers "$FANOUT_WORKERS" >"$out2" 2>&1 || die "fanout_bench failed: $(tail -5 "$out2")"
    local s=fanout.$FANOUT_N.sidecar f=fanout.$FANOUT_N.floor
    local p99 fp99 n complete calls kib busy fbusy all_in=0 i ok_p99=false ok_kib=false
    mapfile -t p99 < <(results "$out" "$s.p99_ms")
    mapfile -t fp99 < <(results "$out" "$f.p99_ms")
    mapfile -t n < <(results "$out" "$s.n")
    mapfile -t complete < <(results "$out" "$s.complete")
    mapfile -t calls < <(results "$out" "$s.calls")
    mapfile -t kib < <(results "$out" "$s.kib_per_sub")
    mapfile -t busy < <(results "$out" "$s.client_busy")
    mapfile -t fbusy < <(results "$out" "$f.client_busy")
    local late_runs late late_note=""
    mapfile -t late_runs < <(results "$out" "$s.late_join")
    late=$(count_if 'x == 1' "${late_runs[@]}")
    ((late == 0)) || late_note="; in $late runs a subscriber joined after the first event was due (its first events were replays)"
    ((${#p99[@]} > 0)) || die "cannot read fanout_bench's results: $(tail -5 "$out")"
    for i in "${!complete[@]}"; do
        [[ ${complete[$i]} == "$FANOUT_N" && ${n[$i]} == "$FANOUT_N" && ${calls[$i]} == 1 ]] && all_in=$((all_in + 1))
    done
    local ratio=()
    for i in "${!p99[@]}"; do
        [[ -n ${fp99[$i]:-} ]] && ratio+=("$(awk -v a="${p99[$i]}" -v b="${fp99[$i]}" 'BEGIN { if (b > 0) printf "%.3f", a / b }')")
    done
    le "$(median "${p99[@]}")" 50 && [[ $all_in == "${#p99[@]}" ]] && ok_p99=true
    le "$(median "${kib[@]}")" 20 && ok_kib=true
    local s2=fanout.$SPREAD_N.sidecar f2=fanout.$SPREAD_N.floor
    local sp50 sp99 fsp50 fsp99 d99 fd99
    mapfile -t sp50 < <(results "$out2" "$s2.spread_p50_ms")
    mapfile -t sp99 < <(results "$out2" "$s2.spread_p99_ms")
    mapfile -t fsp50 < <(results "$out2" "$f2.spread_p50_ms")
    mapfile -t fsp99 < <(results "$out2" "$f2.spread_p99_ms")
    mapfile -t d99 < <(results "$out2" "$s2.p99_ms")
    mapfile -t fd99 < <(results "$out2" "$f2.p99_ms")
    DETAILS+=("c. fanout_bench: one SSE flight, events on the mock's absolute schedule, each stamped with its due time (the floor, a bare"
        "   send() loop from 2 threads, stamps the same way); $FANOUT_WORKERS sidecar workers; client (threads: one per CPU), mock and sidecar"
        "   floating over all CPUs; sidecar and floor back to back in each of ${#p99[@]} runs, the order swapping every run."
        "   N=$FANOUT_N, 20 events 50 ms apart: delay p99 sidecar $(stats '%.1f' "${p99[@]}") ms, floor $(stats '%.1f' "${fp99[@]}") ms,"
        "   sidecar/floor per run $(stats '%.2f' "${ratio[@]}")×; all $FANOUT_N complete with 1 upstream call in $all_in/${#p99[@]} runs;"
        "   sidecar RSS $(stats '%.2f' "${kib[@]}") KiB per subscriber; busiest client thread $(stats '%.2f' "${busy[@]}") of the stream (floor runs: $(stats '%.2f' "${fbusy[@]}"))"
        "   N=$SPREAD_N, $SPREAD_CHUNKS events 50 ms apart: per event, last subscriber's arrival - first's: median over events sidecar $(stats '%.2f' "${sp50[@]}") ms,"
        "   floor $(stats '%.2f' "${fsp50[@]}") ms; p99 over events sidecar $(stats '%.2f' "${sp99[@]}") ms, floor $(stats '%.2f' "${fsp99[@]}") ms;"
        "   delay p99 sidecar $(stats '%.2f' "${d99[@]}") ms, floor $(stats '%.2f' "${fd99[@]}") ms"
        "   fanout_bench's own summaries:")
    DETAILS+=("$(sed -n '/^summary,/,/^result:/p' "$out" "$out2" | grep -v '^result:' | sed 's/^/   /')" "")
    ROWS+=("| c. fan-out: one SSE flight to $FANOUT_N subscribers, 20 events 50 ms apart, delay from each event's due time; ${#p99[@]} runs, each next to the floor (a bare \`send()\` loop, same client) | p99 delay $(stats '%.0f' "${p99[@]}") ms, floor $(stats '%.0f' "${fp99[@]}") ms (sidecar/floor $(stats '%.2f' "${ratio[@]}")×); all complete, 1 call, in $all_in/${#p99[@]} runs; $(stats '%.1f' "${kib[@]}") KiB RSS per subscriber$late_note | p99 ≤ 50 ms: $(verdict "$ok_p99"); ≤ 20 KiB: $(verdict "$ok_kib") |")
    ROWS+=("| c. fan-out, $SPREAD_N subscribers (unsaturated), $SPREAD_CHUNKS events: per event, the time from the first subscriber receiving it to the last | median over events: sidecar $(stats '%.2f' "${sp50[@]}") ms, floor $(stats '%.2f' "${fsp50[@]}") ms; p99 over events: sidecar $(stats '%.2f' "${sp99[@]}") ms, floor $(stats '%.2f' "${fsp99[@]}") ms | none |")
}

keycost() {
    local rep out=$TMP/key.txt
    : >"$out"
    for rep in $(seq "$REPEAT"); do
        log "  d. key_bench $KEY_SECONDS (run $rep, load $(load1))"
        "$BUILD/tests/bench/key_bench" "$KEY_SECONDS" >>"$out" 2>&1 || die "key_bench failed: $(tail -5 "$out")"
    done
    local k1 k32 k1m ok=false
    mapfile -t k1 < <(results "$out" key.1k.mb_s)
    mapfile -t k32 < <(results "$out" key.32k.mb_s)
    mapfile -t k1m < <(results "$out" key.1m.mb_s)
    ge "$(median "${k32[@]}")" 300 && ok=true
    DETAILS+=("d. key_bench: coalesce key (canonical JSON + SHA-256) of realistic chat bodies on one core, MB/s over ${#k32[@]} runs:"
        "   1 KiB $(stats '%.0f' "${k1[@]}"), 32 KiB $(stats '%.0f' "${k32[@]}"), 1 MiB $(stats '%.0f' "${k1m[@]}")" "")
    ROWS+=("| d. coalesce key of a 32 KiB chat body (canonical JSON + SHA-256), one core; ${#k32[@]} runs | $(stats '%.0f' "${k32[@]}") MB/s (1 KiB: $(stats '%.0f' "${k1[@]}"); 1 MiB: $(stats '%.0f' "${k1m[@]}")) | ≥ 300 MB/s: $(verdict "$ok") |")
}

memratio() {  # FILE BODY PATH: one key_memory_bench ratio, two decimals
    awk -v x="$(results "$1" "keymem.$2.$3.ratio")" 'BEGIN { printf "%.2f", x }'
}

keymemory() {
    local out=$TMP/key-memory.txt
    log "  e. key_memory_bench (load $(load1))"
    "$BUILD/tests/bench/key_memory_bench" >"$out" 2>&1 || die "key_memory_bench failed: $(tail -5 "$out")"
    local ok=false
    le "$(memratio "$out" zeros make)" 3 && [[ $(results "$out" keymem.zeros.json) == 1 ]] && ok=true
    local names
    names=$(awk '/object, [0-9]+ names/ { for (i = 1; i <= NF; i++) if ($i == "names,") print $(i - 1) }' "$out" | head -1)
    DETAILS+=("e. key_memory_bench: peak heap bytes of keying above the start of the call, per body byte (counting operator new/delete; exact, one run):"
        "$(sed -n '/^body /,/^target/p' "$out" | grep -v '^result:' | sed 's/^/   /')" "")
    ROWS+=("| e. peak heap of keying (\`flight_key_builder::make\`) ÷ body size; exact (counting \`operator new\`), one run | 16 MiB \`[0,0,…]\` $(memratio "$out" zeros make)×; 16 MiB chat, one huge string $(memratio "$out" huge_string make)×; 16 MiB object, ${names:-?} names in reverse order $(memratio "$out" names make)×; 16 MiB chat, many messages $(memratio "$out" chat_big make)×; 32 KiB chat $(memratio "$out" chat_32k make)× | ≤ 3× for \`[0,0,…]\`: $(verdict "$ok") |")
}

bigbodies() {
    local small_port big_port co_port admin_port
    small_port=$(free_port) big_port=$(free_port) co_port=$(free_port) admin_port=$(free_port)
    local small_pid big_pid
    "$MOCK" --listen "127.0.0.1:$small_port" >"$TMP/mock-small.log" 2>&1 &
    small_pid=$!
    "$MOCK" --listen "127.0.0.1:$big_port" >"$TMP/mock-big.log" 2>&1 &
    big_pid=$!
    PIDS+=("$small_pid" "$big_pid")
    cat >"$TMP/coalescer-big.yaml" <<EOF
# Generated by tests/bench/run-bench.sh, row f: one worker, two mocks, both routes coalescing.
workers: 1
listen: {address: 127.0.0.1, port: $co_port}
admin: {address: 127.0.0.1, port: $admin_port}
upstreams:
  - {name: small, url: "http://127.0.0.1:$small_port"}
  - {name: big, url: "http://127.0.0.1:$big_port"}
routes:
  - {prefix: /big/, upstream: big, strip_prefix: /big, coalesce: true}
  - {prefix: /, upstream: small, coalesce: true}
limits: {max_request_body: 32MiB}
log: {level: warn}
EOF
    "$COALESCER" --check-config "$TMP/coalescer-big.yaml" >&2 || die "coalescer rejects $TMP/coalescer-big.yaml"
    if ! wait_http "http://127.0.0.1:$small_port/models" || ! wait_http "http://127.0.0.1:$big_port/models"; then
        die "the mock providers did not start: $(cat "$TMP/mock-small.log" "$TMP/mock-big.log")"
    fi
    start_coalescer "$TMP/coalescer-big.yaml" "$admin_port" coalescer-big ""
    local out=$TMP/bigbody.txt cpu0 cpu1 p
    # CPU seconds over the section of each process: who competed with the sidecar for the CPUs.
    cpu0=$(for p in "$CO_PID" "$small_pid" "$big_pid"; do cpu_seconds "$p"; done | tr '\n' ' ')
    log "  f. bigbody_bench --runs $REPEAT --seconds $BIG_SECONDS --rate $BIG_RATE --big-mib $BIG_MIB (load $(load1))"
    "$BUILD/tests/bench/bigbody_bench" --port "$co_port" --runs "$REPEAT" --seconds "$BIG_SECONDS" --rate "$BIG_RATE" \
        --big-mib "$BIG_MIB" >"$out" 2>&1 || die "bigbody_bench failed: $(tail -5 "$out")"
    cpu1=$(for p in "$CO_PID" "$small_pid" "$big_pid"; do cpu_seconds "$p"; done | tr '\n' ' ')
    local big_roles small_roles
    big_roles=$(roles "$admin_port" /big/) small_roles=$(roles "$admin_port" /)
    local cpu_note
    cpu_note=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { split(a, x, " "); split(b, y, " ")
        printf "sidecar %.1f s, mock (small) %.1f s, mock (big, parses each body) %.1f s",
            y[1] - x[1], y[2] - x[2], y[3] - x[3] }')
    local w50 w99 o50 o99 big failed_w failed_o ok=false
    mapfile -t w50 < <(results "$out" bigbody.with.p50_ms)
    mapfile -t w99 < <(results "$out" bigbody.with.p99_ms)
    mapfile -t o50 < <(results "$out" bigbody.without.p50_ms)
    mapfile -t o99 < <(results "$out" bigbody.without.p99_ms)
    mapfile -t big < <(results "$out" bigbody.with.big_ok)
    mapfile -t failed_w < <(results "$out" bigbody.with.failed)
    mapfile -t failed_o < <(results "$out" bigbody.without.failed)
    ((${#w99[@]} > 0)) || die "cannot read bigbody_bench's results: $(tail -5 "$out")"
    le "$(median "${w99[@]}")" 50 && ok=true
    DETAILS+=("f. bigbody_bench: small coalescing requests (distinct bodies, $BIG_RATE/s open loop, latency from each one's due time) to a"
        "   sidecar with workers: 1 in front of two mock-provider processes, with and without one client sending $BIG_MIB MiB chat bodies"
        "   back to back to a coalescing route; everything floating over all CPUs; ${#w99[@]} runs, order swapping:"
        "$(sed -n '/^ *run /,/^target/p' "$out" | sed 's/^/   /')"
        "   failed small requests per run: with $(stats '%.0f' "${failed_w[@]}"), without $(stats '%.0f' "${failed_o[@]}")"
        "   CPU time over the section: $cpu_note (plus bigbody_bench itself); all share the machine's CPUs"
        "   sidecar's requests by role and status: big-body route $big_roles; small route $small_roles (expected: leaders, 2xx)" "")
    ROWS+=("| f. small coalescing requests ($BIG_RATE/s, each body different) to a \`workers: 1\` sidecar while another client sends $BIG_MIB MiB bodies to a coalescing route; ${#w99[@]} runs | with big bodies: p50 $(stats '%.2f' "${w50[@]}") ms, p99 $(stats '%.2f' "${w99[@]}") ms ($(stats '%.0f' "${big[@]}") bodies per ${BIG_SECONDS} s); without: p50 $(stats '%.2f' "${o50[@]}") ms, p99 $(stats '%.2f' "${o99[@]}") ms | p99 ≤ 50 ms with big bodies: $(verdict "$ok") |")
}

log "run-bench: temporary directory $TMP; sections: $SECTIONS; row a: $PAIRS rounds; rows b c d f: $REPEAT runs"
TIMES=""
took() { TIMES+="${TIMES:+, }$1 $((SECONDS - $2)) s"; }  # ROW START: how long the row took
if want a; then t0=$SECONDS; pass_through; report_a; took a "$t0"; fi
if want b; then t0=$SECONDS; burst; took b "$t0"; fi
if want c; then t0=$SECONDS; fanout; took c "$t0"; fi
if want d; then t0=$SECONDS; keycost; took d "$t0"; fi
if want e; then t0=$SECONDS; keymemory; took e "$t0"; fi
if want f; then t0=$SECONDS; bigbodies; took f "$t0"; fi

# ------------------------------------------------------------------------------------------------
# The report: details, then the table for README.md.

ELAPSED=$((SECONDS - START_SECONDS))
echo
echo "coalescer benchmark suite: $START_DATE, commit $COMMIT; $HOST_LINE"
echo "load average (1/5/15 min) at start: $START_LOAD; at end: $(cut -d' ' -f1-3 /proc/loadavg); took $((ELAPSED / 60)) min $((ELAPSED % 60)) s ($TIMES)"
echo "every figure is median (min–max) over the runs or rounds named in its row"
echo
printf '%s\n' "${DETAILS[@]}"
echo "README table (tests/bench/run-bench.sh, $START_DATE, commit $COMMIT, $(nproc) CPUs, load average at start $START_LOAD):"
echo
echo "| row | median (min–max) | target |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
if [[ $PERF == 1 ]]; then
    echo
    echo "perf profile of coalescer under the same wrk load (an extra run, not in the table):"
    echo "  perf report -i $TMP/perf.data --stdio --no-children | head -80"
fi
exit 0
