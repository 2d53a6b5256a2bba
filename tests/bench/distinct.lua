-- wrk script for tests/bench/run-bench.sh, row a: a small chat-completions POST whose body is
-- different on every request: the tag given after "--" on wrk's command line (the suite passes
-- path, round and phase), the wrk thread and a counter. On a coalescing route every request is
-- then keyed and leads a flight of its own (no joins, no hits, not even across runs within
-- result_ttl); on a non-coalescing route the body does not matter. The suite drives every path
-- of row a with this script, so wrk does the same work whichever proxy it loads.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"

local threads = 0
local tag = "run"
local counter = 0

function setup(thread)
    threads = threads + 1
    thread:set("thread_number", threads)
end

function init(args)
    tag = (args[1] or "run") .. "-" .. tostring(thread_number or 0)
end

function request()
    counter = counter + 1
    local body = '{"model":"sonar","messages":[{"role":"user","content":"What is the capital of France? '
        .. tag .. "-" .. counter .. '"}],"max_tokens":16}'
    return wrk.format(nil, nil, nil, body)
end
