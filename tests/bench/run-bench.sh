#!/usr/bin/env bash
# The performance benchmark suite (issue 7): one command, not part of CI, that starts everything
# itself on 127.0.0.1, repeats each measurement and prints one table with met / not met targets.
#
#   bash tests/bench/run-bench.sh          (from anywhere; about 6 minutes on 2 cores)
#
#   a. pass-through: wrk POSTs a small /chat/completions body, on a non-coalescing route, through
#      coalescer, through nginx (plain keep-alive reverse proxy, same number of workers) and
#      directly, to one fast upstream (nginx answering `return 200` with a fixed JSON body).
#   b. coalesced burst: burst_bench (N identical concurrent requests, mock provider with latency L).
#   c. fan-out: fanout_bench (one SSE flight to N subscribers), and the same client against a
#      bare send() loop (--floor): what this machine allows any server.
#   d. key cost: key_bench (canonical JSON + SHA-256 MB/s).
#
# Every figure in the table is the median of BENCH_REPEAT runs; the load average before each run
# is printed next to it. Exit status 0 whether or not the targets are met (a benchmark, not a
# test); non-zero only when something could not be built or started.
#
# Knobs (environment):
#   BENCH_REPEAT=3                 runs of each measurement
#   BENCH_WORKERS=2                coalescer `workers` = nginx proxy `worker_processes`
#   BENCH_UPSTREAM_WORKERS=1       worker_processes of the "return 200" upstream nginx
#   BENCH_WRK_THREADS=1 BENCH_WRK_CONNECTIONS=50 BENCH_WRK_DURATION=10s BENCH_WRK_WARMUP=2s
#   BENCH_BURST_REQUESTS=1000 BENCH_BURST_LATENCY_MS=500
#   BENCH_FANOUT_SUBSCRIBERS=1,100,1000,10000
#   BENCH_KEY_SECONDS=1            seconds per key_bench measurement
#   BENCH_SECTIONS="a b c d"       which parts to run
#   BENCH_SKIP_BUILD=1             use the binaries already in build/release
#   BENCH_KEEP=1                   keep the temporary directory (configs, logs, raw outputs)
#   BENCH_PINNED=0                 skip the second pair of proxies in a. (nginx with
#                                  `worker_cpu_affinity auto`, coalescer with `pin_workers: true`)
#   BENCH_PERF=1                   after the measurements, one more (unmeasured) wrk run against
#                                  coalescer under `perf record $BENCH_PERF_ARGS` (default -g; the
#                                  release build has no frame pointers, so user-space stacks are
#                                  short: BENCH_PERF_ARGS="--call-graph dwarf,16384 -F 999" for
#                                  full ones); perf.data in the kept temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build/release
LUA=$ROOT/tests/bench/post.lua

REPEAT=${BENCH_REPEAT:-3}
WORKERS=${BENCH_WORKERS:-2}
UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-50}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
WRK_WARMUP=${BENCH_WRK_WARMUP:-2s}
BURST_REQUESTS=${BENCH_BURST_REQUESTS:-1000}
BURST_LATENCY_MS=${BENCH_BURST_LATENCY_MS:-500}
FANOUT_SUBSCRIBERS=${BENCH_FANOUT_SUBSCRIBERS:-1,100,1000,10000}
KEY_SECONDS=${BENCH_KEY_SECONDS:-1}
SECTIONS=${BENCH_SECTIONS:-a b c d}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
PERF=${BENCH_PERF:-0}
PERF_ARGS=${BENCH_PERF_ARGS:--g}
KEEP=${BENCH_KEEP:-0}
PINNED=${BENCH_PINNED:-1}
[[ $PERF == 1 ]] && KEEP=1

log() { printf '%s\n' "$*" >&2; }
die() { log "run-bench: $*"; exit 1; }
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# ------------------------------------------------------------------------------------------------
# Tools: wrk, nginx and ss from the Debian packages, the release build of the project.

install_packages() {
    local missing=()
    want a && ! command -v wrk >/dev/null && missing+=(wrk)
    want a && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]] && missing+=(nginx-light)
    ! command -v ss >/dev/null && missing+=(iproute2)  # free_port
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

if [[ $SKIP_BUILD != 1 ]]; then
    log "run-bench: building the release preset (cmake --preset release; cmake --build --preset release ...)"
    (cd "$ROOT" && cmake --preset release >&2 &&
        cmake --build --preset release --target coalescer mock-provider fanout_bench key_bench burst_bench >&2) ||
        die "the build failed"
fi
COALESCER=$BUILD/proxy/coalescer
for bin in "$COALESCER" "$BUILD/tests/bench/burst_bench" "$BUILD/tests/bench/fanout_bench" "$BUILD/tests/bench/key_bench"; do
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

median() {  # numbers on the command line -> their median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

HOST_LINE="$(uname -n), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------------------------------------
# a. Pass-through

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

# DIR: runs nginx on DIR/nginx.conf (daemon off, as a background job of this shell); sets NGINX_PID.
start_nginx() {
    "$NGINX" -t -q -e "$1/error.log" -p "$1" -c "$1/nginx.conf" -g 'daemon off;' 2>"$1/check.log" ||
        die "nginx rejects $1/nginx.conf: $(cat "$1/check.log")"
    "$NGINX" -e "$1/error.log" -p "$1" -c "$1/nginx.conf" -g 'daemon off;' >"$1/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
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

# run_wrk NAME URL REP PID: one measured wrk run (after a warm-up); appends to the NAME arrays.
declare -A RPS P50 P99 CPU_US BAD LOADS
run_wrk() {
    local name=$1 url=$2 rep=$3 pid=${4:-} out="$TMP/wrk-$1-$3.txt" load cpu0 cpu1 perf_pid=""
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_WARMUP" -s "$LUA" "$url" >"$TMP/wrk-$name-$rep-warmup.txt" 2>&1 ||
        die "wrk failed against $name ($url): $(tail -3 "$TMP/wrk-$name-$rep-warmup.txt")"
    load=$(load1)
    [[ -n $pid ]] && cpu0=$(cpu_seconds "$pid")
    if [[ $rep == perf ]]; then
        # shellcheck disable=SC2086  # PERF_ARGS is a list of options
        perf record $PERF_ARGS -o "$TMP/perf.data" -p "$pid" >"$TMP/perf.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency -s "$LUA" "$url" >"$out" 2>&1 ||
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
    if [[ $rep == perf ]]; then
        log "  a. $name under perf record $PERF_ARGS (not in the table): $rps req/s"
        return 0
    fi
    RPS[$name]+="$rps "
    P50[$name]+="$p50 "
    P99[$name]+="$p99 "
    BAD[$name]=$(( ${BAD[$name]:-0} + ${non2xx:-0} + ${sockerr:-0} ))
    LOADS[$name]+="${LOADS[$name]:+/}$load"
    if [[ -n $pid ]]; then
        # CPU of the proxy alone (not wrk's, not the upstream's) per request served.
        CPU_US[$name]+="$(awk -v a="$cpu0" -v b="$cpu1" -v n="$requests" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }') "
    fi
    log "  a. $name run $rep: $rps req/s, p50 $p50 ms, p99 $p99 ms (load $load)"
}

# proxy_nginx_conf DIR PORT UPSTREAM_PORT EXTRA: the plain keep-alive reverse proxy; EXTRA goes
# into the main context (worker_cpu_affinity for the pinned pair).
proxy_nginx_conf() {
    { nginx_common "$1" "$WORKERS"; [[ -z $4 ]] || echo "$4"; cat <<EOF
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

# coalescer_conf FILE PORT ADMIN_PORT UPSTREAM_PORT EXTRA: EXTRA is a top-level key (pin_workers).
coalescer_conf() {
    local max_concurrent=$((WRK_CONNECTIONS > 64 ? WRK_CONNECTIONS : 64))
    cat >"$1" <<EOF
# Generated by tests/bench/run-bench.sh: pass-through to the "return 200" nginx, no access log.
workers: $WORKERS
listen: {address: 127.0.0.1, port: $2}
admin: {address: 127.0.0.1, port: $3}
upstreams:
  - name: fast
    url: http://127.0.0.1:$4
    max_concurrent: $max_concurrent
routes:
  - {prefix: /, upstream: fast, coalesce: false}
log: {level: warn}
$5
EOF
    "$COALESCER" --check-config "$1" >&2 || die "coalescer rejects $1"
}

# start_coalescer CONFIG ADMIN_PORT NAME: runs it as a background job of this shell; sets CO_PID.
start_coalescer() {
    "$COALESCER" --config "$1" >"$TMP/$3.stdout.log" 2>"$TMP/$3.stderr.log" &
    CO_PID=$!
    PIDS+=("$CO_PID")
    wait_http "http://127.0.0.1:$2/readyz" || die "$3 did not start: $(cat "$TMP/$3.stderr.log")"
}

# run_pair REP NGINX_NAME NGINX_URL NGINX_PID COALESCER_NAME COALESCER_URL COALESCER_PID
run_pair() {
    # The two proxies swap places every run: the VM's speed drifts within minutes, and a fixed
    # order would hand the drift inside a run to the one that always goes second.
    if (($1 % 2)); then
        run_wrk "$2" "$3" "$1" "$4"
        run_wrk "$5" "$6" "$1" "$7"
    else
        run_wrk "$5" "$6" "$1" "$7"
        run_wrk "$2" "$3" "$1" "$4"
    fi
}

pass_through() {
    local up_dir=$TMP/upstream px_dir=$TMP/nginx-proxy ppx_dir=$TMP/nginx-proxy-pinned
    local up_port nginx_port co_port admin_port pnginx_port pco_port padmin_port
    up_port=$(free_port) nginx_port=$(free_port) co_port=$(free_port) admin_port=$(free_port)
    pnginx_port=$(free_port) pco_port=$(free_port) padmin_port=$(free_port)
    mkdir -p "$up_dir" "$px_dir" "$ppx_dir"

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
    proxy_nginx_conf "$px_dir" "$nginx_port" "$up_port" ""
    coalescer_conf "$TMP/coalescer.yaml" "$co_port" "$admin_port" "$up_port" ""

    local nginx_pid co_pid pnginx_pid="" pco_pid=""
    local urls=("http://127.0.0.1:$up_port" "http://127.0.0.1:$nginx_port" "http://127.0.0.1:$co_port")
    start_nginx "$up_dir"
    start_nginx "$px_dir"
    nginx_pid=$NGINX_PID
    start_coalescer "$TMP/coalescer.yaml" "$admin_port" coalescer
    co_pid=$CO_PID
    if [[ $PINNED == 1 ]]; then
        # The same two proxies with worker i held on CPU i: nginx's own directive, coalescer's
        # pin_workers. Without it the kernel may stack both workers of a proxy on one CPU.
        proxy_nginx_conf "$ppx_dir" "$pnginx_port" "$up_port" "worker_cpu_affinity auto;"
        coalescer_conf "$TMP/coalescer-pinned.yaml" "$pco_port" "$padmin_port" "$up_port" "pin_workers: true"
        start_nginx "$ppx_dir"
        pnginx_pid=$NGINX_PID
        start_coalescer "$TMP/coalescer-pinned.yaml" "$padmin_port" coalescer-pinned
        pco_pid=$CO_PID
        urls+=("http://127.0.0.1:$pnginx_port" "http://127.0.0.1:$pco_port")
    fi
    local url got
    for url in "${urls[@]}"; do
        wait_http "$url/" || die "nothing answers on $url: see the error.log files under $TMP"
        # The same request through each path must get the upstream's body.
        got=$(curl -s -m 5 -X POST -H 'Content-Type: application/json' -d '{"model":"sonar"}' "$url/chat/completions")
        [[ $got == "$UPSTREAM_BODY" ]] || die "unexpected answer from $url: $got"
    done
    curl -s -m 5 -D - -o /dev/null -X POST -d '{}' "http://127.0.0.1:$co_port/chat/completions" | grep -qi '^x-coalesce: pass' ||
        die "coalescer did not answer x-coalesce: pass"

    local rep
    for rep in $(seq "$REPEAT"); do
        run_wrk direct "http://127.0.0.1:$up_port/chat/completions" "$rep"
        run_pair "$rep" nginx "http://127.0.0.1:$nginx_port/chat/completions" "$nginx_pid" \
            coalescer "http://127.0.0.1:$co_port/chat/completions" "$co_pid"
        if [[ $PINNED == 1 ]]; then
            run_pair "$rep" nginx-pinned "http://127.0.0.1:$pnginx_port/chat/completions" "$pnginx_pid" \
                coalescer-pinned "http://127.0.0.1:$pco_port/chat/completions" "$pco_pid"
        fi
    done
    if [[ $PERF == 1 ]]; then
        run_wrk coalescer "http://127.0.0.1:$co_port/chat/completions" perf "$co_pid"
    fi
    local name
    for name in coalescer coalescer-pinned; do
        if [[ -s $TMP/$name.stdout.log ]]; then
            log "  ($name printed $(wc -l <"$TMP/$name.stdout.log") stdout lines: expected none at level warn)"
        fi
    done
}

# ------------------------------------------------------------------------------------------------
# b, c, d: the C++ benchmark programs

BURST_OUT=$TMP/burst.txt
burst() {
    log "  b. burst_bench --requests $BURST_REQUESTS --latency-ms $BURST_LATENCY_MS --runs $REPEAT --workers $WORKERS"
    "$BUILD/tests/bench/burst_bench" --requests "$BURST_REQUESTS" --latency-ms "$BURST_LATENCY_MS" --runs "$REPEAT" \
        --workers "$WORKERS" >"$BURST_OUT" 2>&1 || die "burst_bench failed: $(tail -5 "$BURST_OUT")"
}

declare -a FAN_P99=() FAN_COMPLETE=() FAN_N=() FAN_CALLS=() FAN_KIB=() FAN_LOADS=() FAN_FLOOR=()
fanout() {
    local rep out row
    for rep in $(seq "$REPEAT"); do
        out=$TMP/fanout-$rep.txt
        FAN_LOADS+=("$(load1)")
        log "  c. fanout_bench --subscribers $FANOUT_SUBSCRIBERS --workers $WORKERS --floor (run $rep, load ${FAN_LOADS[-1]})"
        "$BUILD/tests/bench/fanout_bench" --subscribers "$FANOUT_SUBSCRIBERS" --workers "$WORKERS" --floor >"$out" 2>&1 ||
            die "fanout_bench failed: $(tail -5 "$out")"
        # The table row of the largest N: N calls complete bytes p50 p99 max wall KiB/sub client sidecar.
        row=$(awk '/^ *N +calls/ { t = 1; next } t && NF == 11 && $1 ~ /^[0-9]+\*?$/ { print }' "$out" | sort -k1,1g | tail -1)
        [[ -n $row ]] || die "cannot read fanout_bench's table: $(tail -5 "$out")"
        read -r n calls complete _ _ p99 _ _ _ _ sidecar <<<"$row"
        FAN_N+=("$n") FAN_CALLS+=("$calls") FAN_COMPLETE+=("$complete") FAN_P99+=("$p99") FAN_KIB+=("$sidecar")
        # The bare server's p99 at the same N: what any server gets on this machine.
        FAN_FLOOR+=("$(awk '/^floor p99 at N=/ { sub(/^floor p99 at N=[0-9]+: /, ""); print $1 }' "$out")")
    done
}

declare -a KEY_1K=() KEY_32K=() KEY_1M=() KEY_LOADS=()
keycost() {
    local rep out
    for rep in $(seq "$REPEAT"); do
        out=$TMP/key-$rep.txt
        KEY_LOADS+=("$(load1)")
        log "  d. key_bench $KEY_SECONDS (run $rep, load ${KEY_LOADS[-1]})"
        "$BUILD/tests/bench/key_bench" "$KEY_SECONDS" >"$out" 2>&1 || die "key_bench failed: $(tail -5 "$out")"
        KEY_1K+=("$(awk -F'|' '/^1 KiB/ { split($2, a, " "); print a[1] }' "$out")")
        KEY_32K+=("$(awk -F'|' '/^32 KiB/ { split($2, a, " "); print a[1] }' "$out")")
        KEY_1M+=("$(awk -F'|' '/^1 MiB/ { split($2, a, " "); print a[1] }' "$out")")
    done
}

log "run-bench: temporary directory $TMP; sections: $SECTIONS; $REPEAT run(s) each"
want a && pass_through
want b && burst
want c && fanout
want d && keycost

# ------------------------------------------------------------------------------------------------
# The table

verdict() { if [[ $1 == 1 ]]; then echo "met"; else echo "NOT MET"; fi; }
fmt() { awk -v x="$1" -v f="$2" 'BEGIN { if (x == "nan" || x == "") print "-"; else printf f, x }'; }

# compare COALESCER NGINX: per-run ratios, then their medians; prints them and sets PAIR_RATIO,
# PAIR_P99 and PAIR_OK (1 when throughput >= 1.0 x and p99 <= 1.0 x).
compare() {
    local co_rps ng_rps co_p99 ng_p99 ratios=() p99_ratios=() i
    read -r -a co_rps <<<"${RPS[$1]}"
    read -r -a ng_rps <<<"${RPS[$2]}"
    read -r -a co_p99 <<<"${P99[$1]}"
    read -r -a ng_p99 <<<"${P99[$2]}"
    for i in "${!co_rps[@]}"; do
        ratios+=("$(awk -v a="${co_rps[$i]}" -v b="${ng_rps[$i]}" 'BEGIN { printf "%.3f", a / b }')")
        p99_ratios+=("$(awk -v a="${co_p99[$i]}" -v b="${ng_p99[$i]}" 'BEGIN { printf "%.3f", a / b }')")
    done
    PAIR_RATIO=$(median "${ratios[@]}")
    PAIR_P99=$(median "${p99_ratios[@]}")
    PAIR_OK=$(awk -v r="$PAIR_RATIO" -v p="$PAIR_P99" 'BEGIN { print ((r >= 1.0 && p <= 1.0) ? 1 : 0) }')
    echo "   $1/$2, per run then median: throughput $(fmt "$PAIR_RATIO" '%.2f') x (runs: ${ratios[*]}),"
    echo "   p99 $(fmt "$PAIR_P99" '%.2f') x (runs: ${p99_ratios[*]})"
}

echo
echo "coalescer benchmark suite: $START_DATE; $HOST_LINE"
echo "load average (1/5/15 min) at start: $START_LOAD; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "every figure is the median of $REPEAT runs; [load] = 1-minute load average before each run"
echo

TARGET_LINES=()
if want a; then
    echo "a. pass-through: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency (after a $WRK_WARMUP warm-up), POST"
    echo "   /chat/completions with a ${#UPSTREAM_BODY}-byte JSON answer from nginx 'return 200'; non-coalescing route;"
    echo "   coalescer workers: $WORKERS, nginx proxy worker_processes: $WORKERS, upstream nginx: $UPSTREAM_WORKERS;"
    echo "   no access log on either proxy (nginx access_log off; coalescer log level warn)"
    names=(direct nginx coalescer)
    [[ $PINNED == 1 ]] && names+=(nginx-pinned coalescer-pinned)
    printf '   %-17s %10s %9s %9s %11s %7s  %s\n' path "req/s" "p50 ms" "p99 ms" "CPU us/req" errors "[load per run]"
    for name in "${names[@]}"; do
        # shellcheck disable=SC2086
        printf '   %-17s %10s %9s %9s %11s %7s  [%s]\n' "$name" \
            "$(fmt "$(median ${RPS[$name]})" '%.0f')" "$(fmt "$(median ${P50[$name]})" '%.3f')" \
            "$(fmt "$(median ${P99[$name]})" '%.3f')" "$(fmt "$(median ${CPU_US[$name]:-nan})" '%.1f')" \
            "${BAD[$name]}" "${LOADS[$name]}"
    done
    [[ $PINNED == 1 ]] &&
        echo "   -pinned: worker i held on CPU i (nginx worker_cpu_affinity auto; coalescer pin_workers: true)"
    compare coalescer nginx
    TARGET_LINES+=("(a) pass-through throughput >= 1.0 x nginx with equal workers and p99 no worse: $(verdict "$PAIR_OK") ($(fmt "$PAIR_RATIO" '%.2f') x nginx's req/s, p99 $(fmt "$PAIR_P99" '%.2f') x nginx's)")
    if [[ $PINNED == 1 ]]; then
        compare coalescer-pinned nginx-pinned
        TARGET_LINES+=("    the same with workers pinned to CPUs: $(verdict "$PAIR_OK") ($(fmt "$PAIR_RATIO" '%.2f') x nginx's req/s, p99 $(fmt "$PAIR_P99" '%.2f') x nginx's)")
    fi
    echo
fi

if want b; then
    summary=$(grep '^summary:' "$BURST_OUT")
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$summary"; }
    echo "b. coalesced burst: burst_bench, $BURST_REQUESTS identical concurrent requests on a coalescing route,"
    echo "   mock provider answering after $BURST_LATENCY_MS ms, $WORKERS sidecar workers, all in one process"
    printf '   %9s %15s %10s %9s %9s %9s  %s\n' requests "upstream calls" "total ms" "p50 ms" "p99 ms" "max ms" "[load per run]"
    printf '   %9s %15s %10s %9s %9s %9s  [%s]\n' "$(get requests)" "$(get calls_min)..$(get calls_max)" "$(get total_ms)" \
        "$(get p50_ms)" "$(get p99_ms)" "$(get max_ms)" \
        "$(awk '$1 ~ /^[0-9]+$/ && NF >= 12 { printf "%s%s", sep, $(NF - 2); sep = "/" }' "$BURST_OUT")"
    echo "   per run:"
    sed -n '/^ *run /,/^median/p' "$BURST_OUT" | grep -v '^median' | sed 's/^/     /'
    echo
    TARGET_LINES+=("(b) burst: exactly 1 upstream call and p99 <= $BURST_LATENCY_MS + 20 ms: $(verdict "$(get met)") (calls $(get calls_min)..$(get calls_max), p99 $(get p99_ms) ms, all answered 200: $([[ $(get all_ok) == 1 ]] && echo yes || echo NO))")
fi

if want c; then
    n=$(median "${FAN_N[@]//\*/}")
    calls=$(printf '%s\n' "${FAN_CALLS[@]}" | sort -u | tr '\n' ' ')
    echo "c. fan-out: fanout_bench --subscribers $FANOUT_SUBSCRIBERS --workers $WORKERS (20 SSE events, 50 ms apart); largest N per run:"
    printf '   %8s %7s %16s %11s %15s %16s  %s\n' N calls "complete (runs)" "p99 ms" "floor p99 ms" "sidecar KiB/sub" "[load per run]"
    printf '   %8s %7s %16s %11s %15s %16s  [%s]\n' "${FAN_N[0]}" "$calls" "$(IFS=/; echo "${FAN_COMPLETE[*]}")" \
        "$(fmt "$(median "${FAN_P99[@]}")" '%.2f')" "$(fmt "$(median "${FAN_FLOOR[@]}")" '%.2f')" \
        "$(fmt "$(median "${FAN_KIB[@]}")" '%.2f')" "$(IFS=/; echo "${FAN_LOADS[*]}")"
    echo "   floor = the same client against a bare server (pre-built events, plain send() calls from 2"
    echo "   threads, no proxy): the p99 this machine allows any server; p99 per run: ${FAN_P99[*]}; floor: ${FAN_FLOOR[*]}"
    echo "   last run's table (fanout_bench's own output):"
    sed -n '/^ *N  *calls/,/^RSS <=/p' "$TMP/fanout-$REPEAT.txt" | sed -e '/^ *$/d' -e 's/^/     /'
    echo
    all_complete=1
    for i in "${!FAN_N[@]}"; do
        [[ ${FAN_COMPLETE[$i]} == "${FAN_N[$i]//\*/}" && ${FAN_CALLS[$i]} == 1 ]] || all_complete=0
    done
    p99=$(median "${FAN_P99[@]}") kib=$(median "${FAN_KIB[@]}")
    p99_ok=$(awk -v p="$p99" 'BEGIN { print ((p <= 50) ? 1 : 0) }')
    kib_ok=$(awk -v k="$kib" 'BEGIN { print ((k <= 20) ? 1 : 0) }')
    if [[ ${FAN_N[0]} == *\** ]]; then
        overall="NOT MEASURED at 10000 (capped to N=${FAN_N[0]%\*} by RLIMIT_NOFILE $(ulimit -Hn): fanout_bench needs 1 descriptor per subscriber in each of its two processes); at that N:"
    elif ((${n%.*} < 10000)); then
        overall="NOT MEASURED at 10000 (largest N requested: $n); at that N:"
    else
        overall="$(verdict $((all_complete && p99_ok && kib_ok))):"
    fi
    TARGET_LINES+=("(c) fan-out: 10000 subscribers all complete, p99 chunk delay <= 50 ms, <= 20 KiB RSS per subscriber: $overall all complete $([[ $all_complete == 1 ]] && echo "(${FAN_COMPLETE[*]}): met" || echo "(${FAN_COMPLETE[*]}): NOT MET"); p99 $(fmt "$p99" '%.2f') ms: $(verdict "$p99_ok") (a bare server on this machine: $(fmt "$(median "${FAN_FLOOR[@]}")" '%.2f') ms); $(fmt "$kib" '%.2f') KiB/subscriber: $(verdict "$kib_ok")")
fi

if want d; then
    echo "d. key cost: key_bench $KEY_SECONDS (canonical JSON + SHA-256 of realistic chat bodies, one core), key MB/s:"
    printf '   %10s %10s %10s  %s\n' "1 KiB" "32 KiB" "1 MiB" "[load per run]"
    printf '   %10s %10s %10s  [%s]\n' "$(fmt "$(median "${KEY_1K[@]}")" '%.1f')" "$(fmt "$(median "${KEY_32K[@]}")" '%.1f')" \
        "$(fmt "$(median "${KEY_1M[@]}")" '%.1f')" "$(IFS=/; echo "${KEY_LOADS[*]}")"
    echo
    ok=$(awk -v m="$(median "${KEY_32K[@]}")" 'BEGIN { print ((m >= 300) ? 1 : 0) }')
    TARGET_LINES+=("(d) key cost >= 300 MB/s on 32 KiB bodies: $(verdict "$ok") ($(fmt "$(median "${KEY_32K[@]}")" '%.1f') MB/s)")
fi

echo "targets:"
for line in "${TARGET_LINES[@]}"; do
    echo "  $line"
done
if [[ $PERF == 1 ]]; then
    echo
    echo "perf profile of coalescer under the same wrk load (an extra run, not in the table):"
    echo "  perf report -i $TMP/perf.data --stdio --no-children | head -80"
fi
exit 0
