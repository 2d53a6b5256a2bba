#!/usr/bin/env bash
# Cluster mode's coalesced burst: N identical requests spread over 3 sidecar processes sharing
# one redis-server, against a mock provider answering after L ms; the same burst over the same
# 3 sidecars without `cluster:` is the baseline, measured in the same run, the two alternating.
# Prints, per mode, upstream calls per burst and the median (min–max) over the runs of p50 and
# p99 latency (own request written -> whole answer read, by burst_bench's client spread over the
# pods: --ports). Target (cluster on): exactly 1 call per burst, p99 <= L + 30 ms.
# Then an SSE stream of 200 events (a chunk every 10 ms, then all at once) watched by the
# leader's client and a local follower on one pod and a remote follower on another
# (tests/bench/cluster_stream.py): how much later than the leader's client each follower gets
# every event, p99 remote minus p99 local (target <= 5 ms), and the Redis commands per stream.
# Then the cost when nothing is shared: wrk (-c50, 5 s after a 2 s warm-up, every body
# different: distinct.lua) against one sidecar with `cluster:` and without, alternating, a mock
# answering after 50 ms; req/s on as a ratio to off (target >= 0.9) and the p99 it adds
# (target <= 2 ms). Then the same with `fleet_limits` (never reached) against cluster on without:
# what admission to the fleet budget costs per call, in p99 and Redis commands per request.
# Not part of CI. Needs build/release (coalescer, mock-provider, burst_bench; BENCH_BUILD=DIR
# for another build, BENCH_COALESCER=BINARY for another sidecar), redis-server, redis-cli, wrk,
# python3.
#
#   bash tests/bench/cluster-bench.sh      # BENCH_REQUESTS=1000 BENCH_LATENCY_MS=500 BENCH_RUNS=3
#   (BENCH_SECTIONS="burst stream cost budget" picks sections; BENCH_INTERVALS="10 0" the SSE paces)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build/release}
COALESCER=${BENCH_COALESCER:-$BUILD/proxy/coalescer}  # another binary, to compare two builds
REQUESTS=${BENCH_REQUESTS:-1000}
LATENCY=${BENCH_LATENCY_MS:-500}
RUNS=${BENCH_RUNS:-3}
SECTIONS=${BENCH_SECTIONS:-"burst stream cost budget"}
TMP=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # port [the log of what should listen there, shown if nothing does]
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    [ -n "${2:-}" ] && tail -5 "$2" >&2
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
    local mode=$1 count=${2:-3} list=()
    for i in $(seq "$count"); do
        local port admin
        port=$(free_port)
        admin=$(free_port)
        {
            echo "listen: {address: 127.0.0.1, port: $port}"
            echo "admin: {address: 127.0.0.1, port: $admin}"
            echo "workers: 1"
            local budget=""
            [ "$mode" = budget ] && budget=", fleet_limits: {requests_per_minute: 6000000, tokens_per_minute: 1000000000, max_concurrent: 1000}"
            echo "upstreams: [{name: mock, url: 'http://127.0.0.1:$mock_port', max_concurrent: 1000, timeouts: {head: 30s}$budget}]"
            echo "routes: [{prefix: /, upstream: mock, coalesce: true}]"
            echo "limits: {max_connections: 20000}"
            echo "log: {level: warn}"
            if [ "$mode" = on ] || [ "$mode" = budget ]; then
                echo "cluster: {redis: 'redis://127.0.0.1:$redis_port/0', key_secret_file: '$TMP/key-secret'}"
            fi
        } >"$TMP/pod-$mode-$i.yaml"
        "$COALESCER" --config "$TMP/pod-$mode-$i.yaml" >/dev/null 2>"$TMP/pod-$mode-$i.err" &
        pods+=($!)
        list+=("$port")
    done
    for i in "${!list[@]}"; do wait_port "${list[$i]}" "$TMP/pod-$mode-$((i + 1)).err"; done
    sleep 1.5  # the pods' first PING: Redis known to be up
    ports=$(IFS=,; echo "${list[*]}")
}

declare -A results
burst_runs=$RUNS
case " $SECTIONS " in *" burst "*) ;; *) burst_runs=0 ;; esac
for run in $(seq "$burst_runs"); do
    for mode in on off; do
        pods=()
        start_pods "$mode"
        out=$("$BUILD/tests/bench/burst_bench" --ports "$ports" --mock-port "$mock_port" \
            --requests "$REQUESTS" --latency-ms "$LATENCY" --runs 1 --client-threads 2)
        kill "${pods[@]}" 2>/dev/null || true
        wait "${pods[@]}" 2>/dev/null || true
        line=$(printf '%s\n' "$out" | awk '$1 == "1" && NF >= 12 {print}')
        echo "run $run cluster $mode: $line"
        results[$mode]+="$line"$'\n'
    done
done

# burst_bench's row: run calls ok total send first p50 p99 max cpu roles load…
summary() {
    python3 -c '
import sys, statistics
rows = [l.split() for l in sys.stdin if l.strip()]
def spread(i):
    v = [float(r[i]) for r in rows]
    return "%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v))
print("upstream calls per burst %s; p50 %s ms, p99 %s ms; answered 200: %s" % (
      "/".join(r[1].rstrip("!") for r in rows), spread(6), spread(7),
      "/".join(r[2] for r in rows)))'
}
if [ "$burst_runs" -gt 0 ]; then
    echo "burst of $REQUESTS identical requests over 3 pods (burst_bench --ports), upstream $LATENCY ms:"
    echo "  cluster on  (one Redis):   $(printf '%s' "${results[on]}" | summary)"
    echo "  cluster off (each alone):  $(printf '%s' "${results[off]}" | summary)"
    echo "  target (cluster on): 1 upstream call per burst, p99 <= $((LATENCY + 30)) ms"
fi

redis_calls() {  # calls of each command since the last CONFIG RESETSTAT, as "eval=N xread=N …"
    redis-cli -p "$redis_port" info commandstats |
        sed -n 's/^cmdstat_\([a-z]*\):calls=\([0-9]*\),.*/\1=\2/p' | tr '\n' ' '
}

case " $SECTIONS " in *" stream "*)
for interval in ${BENCH_INTERVALS:-10 0}; do
    stream_port=$(free_port)
    "$BUILD/tests/mock_provider/mock-provider" --listen "127.0.0.1:$stream_port" --latency-ms 300 \
        --chunks 200 --chunk-interval-ms "$interval" >"$TMP/mock-stream.log" 2>&1 &
    stream_mock=$!
    wait_port "$stream_port"
    mock_port=$stream_port
    pods=()
    start_pods on 2
    lines=""
    for run in $(seq "$((RUNS * 3))"); do
        redis-cli -p "$redis_port" config resetstat >/dev/null
        body="{\"model\":\"sonar\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"stream $interval $run $RANDOM\"}]}"
        out=$(python3 "$ROOT/tests/bench/cluster_stream.py" --ports "$ports" --body "$body")
        lines+="$out $(redis_calls)"$'\n'
    done
    kill "${pods[@]}" "$stream_mock" 2>/dev/null || true
    wait "${pods[@]}" "$stream_mock" 2>/dev/null || true
    printf '%s' "$lines" | python3 -c '
import json, sys, statistics
def pct(v, q):
    v = sorted(v)
    return v[max(0, min(len(v) - 1, int(-(-q * len(v) // 1)) - 1))]
rows, diff, local, remote, calls = [], [], [], [], {}
for line in sys.stdin:
    doc, _, rest = line.partition("} ")
    r = json.loads(doc + "}")
    rows.append(r)
    local.append(pct(r["local_ms"], 0.99)); remote.append(pct(r["remote_ms"], 0.99))
    diff.append(remote[-1] - local[-1])
    for kv in rest.split():
        k, v = kv.split("=")
        calls.setdefault(k, []).append(int(v))
spread = lambda v: "%.2f (%.2f-%.2f)" % (statistics.median(v), min(v), max(v))
print("SSE, 200 events %s: %d streams, same bytes at all 3 clients: %s, events seen %s" % (
    sys.argv[1], len(rows), all(r["same_bytes"] for r in rows),
    "/".join(sorted({"%d,%d,%d" % tuple(r["counts"]) for r in rows}))))
print("  delay behind the leader client, p99 per stream: local follower %s ms, remote follower %s ms" %
      (spread(local), spread(remote)))
print("  p99 remote minus local: %s ms (target <= 5 ms)" % spread(diff))
print("  Redis commands per stream (median): " + ", ".join(
    "%s %g" % (k, statistics.median(v)) for k, v in sorted(calls.items()) if k not in ("config", "info")))
' "$( [ "$interval" = 0 ] && echo "all at once" || echo "every $interval ms")"
done
;; esac

case " $SECTIONS " in *" cost "* | *" budget "*) ;; *) exit 0 ;; esac
# The cost and budget sections: a mock answering after 50 ms, one sidecar, distinct bodies.
fast_port=$(free_port)
"$BUILD/tests/mock_provider/mock-provider" --listen "127.0.0.1:$fast_port" --latency-ms 50 \
    --threads 2 >"$TMP/mock-fast.log" 2>&1 &
pids+=($!)
wait_port "$fast_port"
mock_port=$fast_port

# Runs wrk against one pod of mode $1 and one of mode $2, alternating, $RUNS times; prints
# req/s of $1 as a ratio to $2, the p99 $1 adds, and Redis scripts run per request of each.
compare_modes() {
    local a=$1 b=$2 title=$3 rows=""
    for run in $(seq "$RUNS"); do
        for mode in "$a" "$b"; do
            pods=()
            start_pods "$mode" 1
            wrk -t1 -c50 -d2s -s "$ROOT/tests/bench/distinct.lua" \
                "http://127.0.0.1:$ports/chat/completions" -- "warm-$mode-$run" >/dev/null
            redis-cli -p "$redis_port" config resetstat >/dev/null
            line=$(wrk -t1 -c50 -d5s --latency -s "$ROOT/tests/bench/distinct.lua" \
                "http://127.0.0.1:$ports/chat/completions" -- "cost-$mode-$run" |
                awk '/ requests in / {n=$1} /Requests\/sec/ {rps=$2} / 99%/ {p99=$2} END {print rps, p99, n}')
            # Scripts run (appends, renewals, admissions, releases): round trips besides the
            # one claim per flight.
            commands=$(redis-cli -p "$redis_port" info commandstats |
                sed -n 's/^cmdstat_eval\(sha\)\{0,1\}:calls=\([0-9]*\),.*/\2/p' | awk '{s += $1} END {print s + 0}')
            kill "${pods[@]}" 2>/dev/null || true
            wait "${pods[@]}" 2>/dev/null || true
            echo "run $run $mode: req/s, p99, requests, EVAL calls: $line ${commands:-0}"
            rows+="$run $mode $line ${commands:-0}"$'\n'
        done
    done
    printf '%s' "$rows" | python3 -c '
import sys, statistics
a, b, title = sys.argv[1:4]
def ms(t):
    return float(t[:-2]) if t.endswith("ms") else float(t[:-1]) * 1000 if t.endswith("s") else float(t[:-2]) / 1000
runs = {}
for line in sys.stdin:
    run, mode, rps, p99, n, commands = line.split()
    runs.setdefault(run, {})[mode] = (float(rps), ms(p99), int(commands) / max(1, int(n)))
ratio = [r[a][0] / r[b][0] for r in runs.values()]
added = [r[a][1] - r[b][1] for r in runs.values()]
spread = lambda v, f: (f + " (" + f + "-" + f + ")") % (statistics.median(v), min(v), max(v))
print(title)
print("  req/s ratio %s/%s %s; p99 added %s ms; Redis scripts (EVAL, EVALSHA) per request, besides the claim: %s %s, %s %s" %
      (a, b, spread(ratio, "%.3f"), spread(added, "%.2f"),
       a, spread([r[a][2] for r in runs.values()], "%.2f"),
       b, spread([r[b][2] for r in runs.values()], "%.2f")))' "$a" "$b" "$title"
}

case " $SECTIONS " in *" cost "*)
    compare_modes on off "cost when nothing is shared (mock 50 ms, wrk -c50, distinct bodies), cluster on vs off (targets: ratio >= 0.9, p99 added <= 2 ms):"
;; esac
case " $SECTIONS " in *" budget "*)
    compare_modes budget on "the fleet budget's admission cost (limits never reached), cluster on with fleet_limits vs without:"
;; esac
