#!/usr/bin/env bash
# HTTP/JSON Decide against gRPC Decide on the same server and cores:
#
#   cargo build --release && benches/http.sh [SECONDS]
#
# One `gavel serve --dev` pinned to CPU 0; the load on CPU 1: `gavel bench
# --scenario decide-allow` (gRPC, its default 4 connections x 32 streams),
# then wrk with 64 connections (the same 64 requests in flight) posting an allowed job without a job_id
# (a fresh, durable decision per request) to /api/v1/decide. Needs wrk
# (Debian package). The server started here is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
G=$PWD/target/release/gavel
. benches/dev-server.sh
start_dev_server taskset -c 0
TOKEN=$(dev_token dev-agent)

echo "== gRPC decide-allow"
taskset -c 1 "$G" bench run --scenario decide-allow --server "http://$GRPC" \
  --identities "$WORK/data/dev-identities.json" --duration "$SECS" --warmup 2

cat > "$WORK/decide.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"topic":"job.docs.read","action":"read","target":"docs/README.md","params":{"path":"docs/README.md"}}'
LUA
echo "== HTTP POST /api/v1/decide"
taskset -c 1 wrk -t1 -c64 -d2s -s "$WORK/decide.lua" "http://$HTTP/api/v1/decide" > /dev/null
taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s "$WORK/decide.lua" "http://$HTTP/api/v1/decide"
