-- wrk script for tests/bench/run-bench.sh: a small chat-completions POST, the same bytes on
-- every request (the pass-through comparison; the route it hits does not coalesce).
wrk.method = "POST"
wrk.body = '{"model":"sonar","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
