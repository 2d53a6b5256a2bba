#!/usr/bin/env python3
"""N identical POSTs at once, spread round-robin over the given sidecar ports; prints one line
of JSON: per-request latency (request written -> whole response read) percentiles, statuses,
x-coalesce roles and flight ids. The client of tests/bench/cluster-bench.sh.

    cluster_burst.py --ports 8081,8082,8083 --requests 1000 --body '{"model":...}'
"""
import argparse
import asyncio
import json
import time


async def one(port, payload, started, results):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await started.wait()  # every connection open first, then all send at once
    t0 = time.monotonic()
    writer.write(payload)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    await reader.readexactly(int(fields.get("content-length", "0")))
    results.append((time.monotonic() - t0, int(head.split(b" ", 2)[1]),
                    fields.get("x-coalesce", "?"), fields.get("x-coalesce-flight", "?")))
    writer.close()


def percentile(values, q):
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--body", required=True)
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    body = args.body.encode()
    payload = (b"POST /chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench\r\n"
               b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
               b"\r\n\r\n" + body)
    started = asyncio.Event()
    results = []
    tasks = [asyncio.create_task(one(ports[i % len(ports)], payload, started, results))
             for i in range(args.requests)]
    await asyncio.sleep(0.5)  # let every connection open
    started.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    latencies = [r[0] * 1000 for r in results]
    roles = {}
    for r in results:
        roles[r[2]] = roles.get(r[2], 0) + 1
    print(json.dumps({
        "answered": len(results),
        "ok": sum(1 for r in results if r[1] == 200),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "roles": roles,
        "flights": len({r[3] for r in results}),
    }))


asyncio.run(main())
