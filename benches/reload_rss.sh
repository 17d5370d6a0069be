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
# The server (benches/dev-server.sh) is stopped by pid; its directory is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GAVEL:-$PWD/target/release/gavel}
. benches/dev-server.sh
"$G" bench gen-policy --rules 10000 --base policies/default.yaml > "$WORK/p10k.yaml"
SERVE_ARGS=(--policy "$WORK/p10k.yaml")
start_dev_server env "$@"
kib() { awk "/$1/ {print \$2}" "/proc/$PID/status"; }
echo "10,000 rules, idle: peak $(kib VmHWM) KiB, now $(kib VmRSS) KiB"
"$G" bench run --scenario reload --server "http://$GRPC" --identities "$WORK/data/dev-identities.json" \
  --duration 10 --warmup 0 --concurrency 8 --reload-rules 10000 --output json \
  | python3 -c "import json,sys; r=json.load(sys.stdin); e=r['extra']; print(f\"{e['reloads']} reloads, {e['reload_failures']} failed, {r['errors']} failed decides\")"
echo "after reloads: peak $(kib VmHWM) KiB, now $(kib VmRSS) KiB"
