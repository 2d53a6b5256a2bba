-- wrk script for the coalescer load test (deploy/LOAD-TEST.md): every request is the same
-- POST /chat/completions, so every request after the first shares the first one's upstream call.
--   wrk -t2 -c50 -d10s -s deploy/load-test/post.lua http://127.0.0.1:8080/chat/completions
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
    -- The whole histogram: how many responses took over 100 ms and over 1 s (followers waiting
    -- for the upstream answer take about the upstream's latency).
    local samples, over_100ms, over_1s = 0, 0, 0
    for i = 1, #latency do
        local value, count = latency(i)
        samples = samples + count
        if value > 100000 then over_100ms = over_100ms + count end
        if value > 1000000 then over_1s = over_1s + count end
    end
    io.write(string.format("latency samples: %d, over 100 ms: %d, over 1 s: %d\n", samples, over_100ms, over_1s))
end
