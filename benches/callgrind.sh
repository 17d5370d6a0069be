#!/usr/bin/env bash
# Instruction counts of the server for a fixed amount of work: a fresh
# `gavel serve --dev` under valgrind's callgrind, loaded by `gavel bench`
# for exactly OPS operations of SCENARIO, then stopped by pid.
#
#   cargo build --release && benches/callgrind.sh cycle 600
#   GAVEL=/path/to/other/gavel benches/callgrind.sh cycle 600   # another build
#
# Prints the total; the profile is kept in target/callgrind/SCENARIO.out
# (read it with callgrind_annotate). Counts repeat for the same binary and
# inputs, so two builds can be compared where timings are too noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
SC=${1:-cycle}
OPS=${2:-600}
G=${GAVEL:-$PWD/target/release/gavel}
OUT=$PWD/target/callgrind
mkdir -p "$OUT"
. benches/dev-server.sh
start_dev_server valgrind --tool=callgrind --callgrind-out-file="$OUT/$SC.out"
"$G" bench run --scenario "$SC" --server "http://$GRPC" --identities "$WORK/data/dev-identities.json" \
  --duration 600 --warmup 0 --concurrency 16 --max-operations "$OPS" --output json > "$WORK/bench.json"
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
python3 -c "import json; r=json.load(open('$WORK/bench.json')); print(f\"{r['operations']} operations of $SC, {r['errors']} errors\")"
callgrind_annotate "$OUT/$SC.out" 2>/dev/null | grep "PROGRAM TOTALS"
