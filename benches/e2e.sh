#!/usr/bin/env bash
# End-to-end benchmarks with `gavel bench`, as recorded in BENCHMARKS.md.
#
#   cargo build --release && benches/e2e.sh [SECONDS]
#
# The server is pinned to CPU 0 and the load generator to CPU 1 (taskset),
# each run against a fresh `gavel serve --dev` data directory in a temporary
# directory. Results (JSON lines) go to target/bench-e2e/results.jsonl; the
# servers started here are stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-10}
WARM=2
G=${GAVEL:-$PWD/target/release/gavel}   # GAVEL=/path/to/gavel: another build
OUT=$PWD/target/bench-e2e
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_server NAME [extra serve args...]: sets ADDR, IDS and SERVER_PID.
# `env -C` and `taskset` exec in place, so $! is the server's own pid.
start_server() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  ln -sfn "$PWD/policies" "$WORK/$name/policies"
  # shellcheck disable=SC2086
  env -C "$WORK/$name" ${SERVER_ENV:-} taskset -c 0 "$G" serve --dev --data-dir data --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 "$@" \
      > "$WORK/$name/out.txt" 2> "$WORK/$name/err.txt" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 300); do
    if grep -q "gavel listening on" "$WORK/$name/out.txt" 2>/dev/null; then break; fi
    sleep 0.1
  done
  ADDR=$(sed -n 's/^gavel listening on \([^ ]*\).*/\1/p' "$WORK/$name/out.txt")
  IDS="$WORK/$name/data/dev-identities.json"
  [ -n "$ADDR" ] || { echo "server $name did not start:"; cat "$WORK/$name/err.txt"; exit 1; }
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

bench() { # bench LABEL SCENARIO [args...]
  local label=$1 scenario=$2; shift 2
  taskset -c 1 "$G" bench run --scenario "$scenario" --server "http://$ADDR" --identities "$IDS" \
    --duration "$SECS" --warmup "$WARM" --output json "$@" \
    | python3 -c "import json,sys; r=json.load(sys.stdin); r['label']='$label'; print(json.dumps(r))" \
    | tee -a "$OUT/results.jsonl" \
    | python3 -c "
import json,sys
r=json.load(sys.stdin); l=r['latency_us']
print(f\"{r['label']:<34} {r['throughput_per_sec']:>9.0f}/s  p50 {l['p50']:>6}us  p99 {l['p99']:>7}us  ok {r['ok']} err {r['errors']} {dict(r['extra']) if r['extra'] else ''}\")"
}

rss() { # rss LABEL PID
  local kb; kb=$(awk '/VmHWM/ {print $2}' "/proc/$2/status")
  echo "{\"label\": \"$1\", \"peak_rss_kib\": $kb}" | tee -a "$OUT/results.jsonl"
}

if [ -z "${ONLY_FILL:-}" ]; then
echo "== shipped policy, SQLite"
start_server default
bench "health c64"              health         --concurrency 64
bench "decide-allow c64"        decide-allow   --concurrency 64
bench "decide-approval c64"     decide-approval --concurrency 64
bench "cycle c64"               cycle          --concurrency 64
bench "bind-race c64"           bind-race      --concurrency 64 --race-jobs 200
MAX=$(tail -n 5 "$OUT/results.jsonl" | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l)
    if r['label']=='decide-allow c64': print(int(r['throughput_per_sec']))")
HALF=$((MAX / 2))
bench "decide-allow open loop at $HALF/s" decide-allow --rate "$HALF" --concurrency 512
rss "peak RSS, shipped policy, after the runs above" "$SERVER_PID"
stop_server

echo "== 10,000-rule policy (the shipped policy plus 10,000 generated rules)"
"$G" bench gen-policy --rules 10000 --base policies/default.yaml > "$WORK/p10k.yaml"
start_server big --policy "$WORK/p10k.yaml"
rss "peak RSS, 10,000-rule policy loaded, idle" "$SERVER_PID"
bench "decide-allow c64, 10k rules"  decide-allow --concurrency 64
bench "reload every 1s, 10k rules"   reload --concurrency 64 --reload-rules 10000
rss "peak RSS, 10,000-rule policy, after reloads" "$SERVER_PID"
stop_server
fi

if [ -n "${AUDIT_FILL:-}" ]; then
  echo "== peak RSS with $AUDIT_FILL audit entries (one decision writes one entry)"
  start_server fill
  taskset -c 1 "$G" bench run --scenario decide-allow --server "http://$ADDR" --identities "$IDS" \
    --duration 100000 --warmup 0 --concurrency 64 --output json --max-operations "$AUDIT_FILL" > /dev/null
  stop_server
  start_server fill   # the same data directory: a restart on the filled database
  bench "decide-allow c64, $AUDIT_FILL audit entries" decide-allow --concurrency 64
  rss "peak RSS, $AUDIT_FILL audit entries, after load" "$SERVER_PID"
  echo "{\"label\": \"database size, $AUDIT_FILL audit entries\", \"bytes\": $(du -cb "$WORK/fill/data"/gavel.db* | tail -1 | cut -f1)}" | tee -a "$OUT/results.jsonl"
fi

echo "results: $OUT/results.jsonl"
