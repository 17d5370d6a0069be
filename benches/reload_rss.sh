#!/usr/bin/env bash
# Peak RSS of a server holding a 10,000-rule policy: idle after start-up,
# then after a reload every second for 10 s (alternating two generated
# 10,000-rule policies) under a light decide load. Quicker than e2e.sh's
# 10,000-rule section, for comparing builds:
#
#   cargo build --release && benches/reload_rss.sh
#   GAVEL=/path/to/other/gavel benches/reload_rss.sh
#   benches/reload_rss.sh MALLOC_ARENA_MAX=2          # environment for the server
#
# The server is stopped by pid; its directory is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GAVEL:-$PWD/target/release/gavel}
W=$(mktemp -d)
P=
cleanup() {
  [ -n "$P" ] && kill -TERM "$P" 2>/dev/null && wait "$P" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
"$G" bench gen-policy --rules 10000 --base policies/default.yaml > "$W/p10k.yaml"
mkdir -p "$W/s"
ln -s "$PWD/policies" "$W/s/policies"
env -C "$W/s" "$@" "$G" serve --dev --data-dir data --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --policy "$W/p10k.yaml" > "$W/out" 2> "$W/err" &
P=$!
for _ in $(seq 1 300); do grep -q "gavel listening on" "$W/out" 2>/dev/null && break; sleep 0.1; done
A=$(sed -n 's/^gavel listening on \([^ ]*\).*/\1/p' "$W/out")
[ -n "$A" ] || { echo "the server did not start:"; cat "$W/err"; exit 1; }
kib() { awk "/$1/ {print \$2}" "/proc/$P/status"; }
echo "10,000 rules, idle: peak $(kib VmHWM) KiB, now $(kib VmRSS) KiB"
"$G" bench run --scenario reload --server "http://$A" --identities "$W/s/data/dev-identities.json" \
  --duration 10 --warmup 0 --concurrency 8 --reload-rules 10000 --output json \
  | python3 -c "import json,sys; r=json.load(sys.stdin); e=r['extra']; print(f\"{e['reloads']} reloads, {e['reload_failures']} failed, {r['errors']} failed decides\")"
echo "after reloads: peak $(kib VmHWM) KiB, now $(kib VmRSS) KiB"
