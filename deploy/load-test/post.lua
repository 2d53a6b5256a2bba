-- wrk script for the coalescer load test (README.md "Load-test recipe"): every request is the same
-- POST /chat/completions, so every request after the first shares the first one's upstream call.
--   wrk -t2 -c50 -d10s --timeout 10s -s deploy/load-test/post.lua http://127.0.0.1:8080/chat/completions
-- (--timeout above the upstream's latency: wrk's default, 2s, counts every request that waited
-- for the upstream as a timeout and leaves it out of the latency figures.)
-- At the end it prints the status codes and the x-coalesce roles (leader, follower, hit, ...)
-- counted over all threads, and the latency percentiles.

wrk.method = "POST"
wrk.body = '{"model":"sonar","messages":[{"role":"user","content":"What is coalescing?"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer test"

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
    roles = {}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    local role = headers["x-coalesce"] or headers["X-Coalesce"] or "(none)"
    roles[role] = (roles[role] or 0) + 1
end

local function merge(into, from)
    for k, v in pairs(from) do
        into[k] = (into[k] or 0) + v
    end
end

local function show(title, counts)
    local keys = {}
    for k in pairs(counts) do
        table.insert(keys, tostring(k))
    end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
        table.insert(parts, k .. "=" .. (counts[k] or counts[tonumber(k)]))
    end
    io.write(title, ": ", table.concat(parts, " "), "\n")
end

function done(summary, latency, requests)
    local all_statuses, all_roles = {}, {}
    for _, thread in ipairs(threads) do
        merge(all_statuses, thread:get("statuses"))
        merge(all_roles, thread:get("roles"))
    end
    show("status", all_statuses)
    show("x-coalesce", all_roles)
    io.write(string.format("requests: %d in %.2fs, %.1f req/s; socket errors: connect %d read %d write %d timeout %d\n",
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
    io.write(string.format("latency: p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms\n",
        latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000))
    -- wrk 4.1 also records "missed" requests (those it expected to send while every connection
    -- was waiting) at the slowest latency seen, so after a stall its percentiles overstate. The
    -- shares below make that visible: set against the x-coalesce counts (only followers wait for
    -- the upstream), they show how many samples are synthetic. Real latencies: the sidecar's
    -- /metrics histograms or its access log (duration_ms).
    local function share_over(us)  -- percent of samples above `us`, by bisection on percentile()
        if latency.max <= us then return 0 end
        local lo, hi = 0, 100
        for _ = 1, 30 do
            local mid = (lo + hi) / 2
            if latency:percentile(mid) > us then hi = mid else lo = mid end
        end
        return 100 - hi
    end
    io.write(string.format("latency samples over 100 ms: %.3f%%, over 1 s: %.3f%%\n",
        share_over(100000), share_over(1000000)))
end
