#!/usr/bin/env bash
# Cluster mode's coalesced burst: N identical requests spread over 3 sidecar processes sharing
# one redis-server, against a mock provider answering after L ms; the same burst over the same
# 3 sidecars without `cluster:` is the baseline, measured in the same run, the two alternating.
# Prints, per mode, upstream calls per burst and the median (min–max) over the runs of p50 and
# p99 latency (request written -> whole answer read, by one asyncio client: tests/bench/
# cluster_burst.py). Target (cluster on): exactly 1 call per burst, p99 <= L + 30 ms.
# Not part of CI. Needs build/release (coalescer, mock-provider; BENCH_BUILD=DIR for another
# build), redis-server, python3.
#
#   bash tests/bench/cluster-bench.sh      # BENCH_REQUESTS=1000 BENCH_LATENCY_MS=500 BENCH_RUNS=3
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build/release}
REQUESTS=${BENCH_REQUESTS:-1000}
LATENCY=${BENCH_LATENCY_MS:-500}
RUNS=${BENCH_RUNS:-3}
TMP=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
pids+=($!)
mock_port=$(free_port)
"$BUILD/tests/mock_provider/mock-provider" --listen "127.0.0.1:$mock_port" --latency-ms "$LATENCY" \
    --threads 2 >"$TMP/mock.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
wait_port "$mock_port"
head -c 32 /dev/urandom >"$TMP/key-secret"

calls() { curl -s "http://127.0.0.1:$mock_port/__stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])'; }

# Starts 3 pods (cluster: on|off): their pids in `pods`, their ports in `ports`, comma-separated.
start_pods() {
    local mode=$1 list=()
    for i in 1 2 3; do
        local port admin
        port=$(free_port)
        admin=$(free_port)
        {
            echo "listen: {address: 127.0.0.1, port: $port}"
            echo "admin: {address: 127.0.0.1, port: $admin}"
            echo "workers: 1"
            echo "upstreams: [{name: mock, url: 'http://127.0.0.1:$mock_port', timeouts: {head: 30s}}]"
            echo "routes: [{prefix: /, upstream: mock, coalesce: true}]"
            echo "limits: {max_connections: 20000}"
            echo "log: {level: warn}"
            if [ "$mode" = on ]; then
                echo "cluster: {redis: 'redis://127.0.0.1:$redis_port/0', key_secret_file: '$TMP/key-secret'}"
            fi
        } >"$TMP/pod-$mode-$i.yaml"
        "$BUILD/proxy/coalescer" --config "$TMP/pod-$mode-$i.yaml" >/dev/null 2>"$TMP/pod-$mode-$i.err" &
        pods+=($!)
        list+=("$port")
    done
    for p in "${list[@]}"; do wait_port "$p"; done
    sleep 1.5  # the pods' first PING: Redis known to be up
    ports=$(IFS=,; echo "${list[*]}")
}

declare -A results
for run in $(seq "$RUNS"); do
    for mode in on off; do
        pods=()
        start_pods "$mode"
        before=$(calls)
        body="{\"model\":\"sonar\",\"messages\":[{\"role\":\"user\",\"content\":\"burst $mode $run $RANDOM\"}]}"
        out=$(python3 "$ROOT/tests/bench/cluster_burst.py" --ports "$ports" --requests "$REQUESTS" --body "$body")
        after=$(calls)
        kill "${pods[@]}" 2>/dev/null || true
        wait "${pods[@]}" 2>/dev/null || true
        echo "run $run cluster $mode: upstream calls $((after - before)), $out"
        results[$mode]+="$out"$'\n'
    done
done

summary() {
    python3 -c '
import json, sys, statistics
rows = [json.loads(l) for l in sys.stdin if l.strip()]
def spread(key):
    v = [r[key] for r in rows]
    return "%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v))
print("p50 %s ms, p99 %s ms, answered 200: %s" % (spread("p50_ms"), spread("p99_ms"),
      "/".join(str(r["ok"]) for r in rows)))'
}
echo "cluster on  (3 pods, one Redis): $(printf '%s' "${results[on]}" | summary)"
echo "cluster off (3 pods, each alone): $(printf '%s' "${results[off]}" | summary)"
echo "target (cluster on): 1 upstream call per burst, p99 <= $((LATENCY + 30)) ms"
