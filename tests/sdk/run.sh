#!/usr/bin/env bash
# Drives the official `openai` and `@perplexity-ai/perplexity_ai` npm SDKs through the sidecar
# against the mock provider (needs node and the npm registry; not part of CI).
# Usage: tests/sdk/run.sh [build-dir]   (default build/release)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build/release}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$work" && npm init -y >/dev/null && npm install --silent openai@4 @perplexity-ai/perplexity_ai >/dev/null)
cp "$root/tests/sdk/check.mjs" "$work/"
"$build/tests/mock_provider/mock-provider" --listen 127.0.0.1:18081 --latency-ms 300 >/dev/null &
sed 's/127.0.0.1:8081/127.0.0.1:18081/; s/port: 8080/port: 18080/; s/port: 9090/port: 19090/' \
    "$root/config/mock.yaml" > "$work/mock.yaml"
"$build/proxy/coalescer" --config "$work/mock.yaml" >/dev/null 2>&1 &
sleep 1
(cd "$work" && BASE=http://127.0.0.1:18080 node check.mjs)
