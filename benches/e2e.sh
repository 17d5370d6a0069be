#!/usr/bin/env bash
# End-to-end benchmarks with `gavel bench`, as recorded in BENCHMARKS.md.
#
#   cargo build --release && benches/e2e.sh [SECONDS]
#
# The server is pinned to CPU 0 and the load generator to CPU 1 (taskset),
# each run against a fresh `gavel serve --dev` data directory in a temporary
# directory. Results (JSON lines) go to target/bench-e2e/results.jsonl, and
# the end prints issue 16's targets against them. The HTTP/JSON run needs
# wrk (Debian package); the PostgreSQL run needs initdb and pg_ctl (a
# throwaway cluster in the temporary directory, started as `postgres` when
# run as root). Either is skipped, and says so, when its tool is missing.
# The servers and the cluster started here are stopped by pid on exit.
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
PG_BIN=
AS_PG=()   # PostgreSQL refuses to run as root: its programs run as `postgres` then
[ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$PG_BIN" ] && as_pg "$PG_BIN/pg_ctl" stop -D "$WORK/pg/data" -m fast > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_server NAME [extra serve args...]: sets ADDR (gRPC), HTTP, IDS and SERVER_PID.
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
  HTTP=$(sed -n 's/^gavel listening on [^ ]* (gRPC) and \([^ ]*\) (HTTP).*/\1/p' "$WORK/$name/out.txt")
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
for run in 1 2 3; do
  bench "decide-allow open loop at $HALF/s, run $run" decide-allow --rate "$HALF" --concurrency 512
done
rss "peak RSS, shipped policy, after the runs above" "$SERVER_PID"
stop_server

echo "== HTTP/JSON Decide next to gRPC Decide (one fresh server, 64 in flight each)"
if command -v wrk > /dev/null; then
  start_server http
  bench "decide-allow c64, before HTTP" decide-allow --concurrency 64
  TOKEN=$(python3 -c "import json;print([i['token'] for i in json.load(open('$IDS'))['identities'] if i['name']=='dev-agent'][0])")
  cat > "$WORK/decide.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"topic":"job.docs.read","action":"read","target":"docs/README.md","params":{"path":"docs/README.md"}}'
LUA
  taskset -c 1 wrk -t1 -c64 -d"${WARM}s" -s "$WORK/decide.lua" "http://$HTTP/api/v1/decide" > /dev/null
  taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s "$WORK/decide.lua" "http://$HTTP/api/v1/decide" \
    | python3 -c "
import json,re,sys
t=sys.stdin.read()
def us(v):
    n,u=re.match(r'([0-9.]+)(us|ms|s)',v).groups()
    return round(float(n)*{'us':1,'ms':1e3,'s':1e6}[u])
lat={p: us(re.search(r'^\s*'+p+r'%\s+(\S+)',t,re.M).group(1)) for p in ('50','99')}
bad=re.search(r'Non-2xx or 3xx responses: (\d+)',t)
err=re.search(r'Socket errors: (.*)',t)
print(json.dumps({'label':'http decide-allow c64','throughput_per_sec':float(re.search(r'Requests/sec:\s+([0-9.]+)',t).group(1)),
  'latency_us':{'p50':lat['50'],'p99':lat['99']},'errors':int(bad.group(1)) if bad else 0,'socket_errors':err.group(1) if err else None}))" \
    | tee -a "$OUT/results.jsonl"
  stop_server
else
  echo "skipped: wrk is not installed"
fi

echo "== 10,000-rule policy (the shipped policy plus 10,000 generated rules)"
"$G" bench gen-policy --rules 10000 --base policies/default.yaml > "$WORK/p10k.yaml"
start_server big --policy "$WORK/p10k.yaml"
rss "peak RSS, 10,000-rule policy loaded, idle" "$SERVER_PID"
bench "decide-allow c64, 10k rules"  decide-allow --concurrency 64
bench "reload every 1s, 10k rules"   reload --concurrency 64 --reload-rules 10000
rss "peak RSS, 10,000-rule policy, after reloads" "$SERVER_PID"
stop_server
# Loading end to end: read, parse, validate, lint, hash and compile, as
# `gavel policy hash` does; the mean of five runs on the server's core.
python3 - "$G" "$WORK/p10k.yaml" <<'PY' | tee -a "$OUT/results.jsonl"
import json, subprocess, sys, time
runs = []
for _ in range(5):
    t = time.perf_counter()
    subprocess.run(["taskset", "-c", "0", sys.argv[1], "policy", "hash", sys.argv[2]], check=True, stdout=subprocess.DEVNULL)
    runs.append(time.perf_counter() - t)
print(json.dumps({"label": "load 10,000 rules", "mean_ms": round(1000 * sum(runs) / len(runs), 1), "runs_ms": [round(1000 * r, 1) for r in runs]}))
PY

echo "== PostgreSQL: cycle on two replicas of one database"
PG_INITDB=$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort | tail -1 || true)
if [ -n "$PG_INITDB" ]; then
  PG_BIN=$(dirname "$(readlink -f "$PG_INITDB")")
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" = 0 ]; then chmod 755 "$WORK"; chown postgres "$WORK/pg"; fi
  as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U gavel --auth=trust > /dev/null
  PG_PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  # Durable like the SQLite runs: fsync and synchronous_commit stay on.
  taskset -c 0 "${AS_PG[@]}" "$PG_BIN/pg_ctl" start -w -D "$WORK/pg/data" -l "$WORK/pg/log" \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1" > /dev/null
  as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U gavel gavel
  DB="postgres://gavel@127.0.0.1:$PG_PORT/gavel"
  start_server replica-a --database-url "$DB" --replica-id replica-a
  A_ADDR=$ADDR A_IDS=$IDS A_PID=$SERVER_PID
  start_server replica-b --database-url "$DB" --replica-id replica-b
  B_ADDR=$ADDR B_IDS=$IDS
  LOADS=()
  for side in a b; do
    if [ $side = a ]; then S=$A_ADDR I=$A_IDS; else S=$B_ADDR I=$B_IDS; fi
    taskset -c 1 "$G" bench run --scenario cycle --server "http://$S" --identities "$I" \
      --duration "$SECS" --warmup "$WARM" --output json --concurrency 32 > "$WORK/pg-$side.json" &
    LOADS+=($!)
  done
  wait "${LOADS[@]}"
  python3 - "$WORK/pg-a.json" "$WORK/pg-b.json" <<'PY' | tee -a "$OUT/results.jsonl"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
print(json.dumps({"label": "cycle on PostgreSQL, two replicas, 32 in flight each",
  "throughput_per_sec": a["throughput_per_sec"] + b["throughput_per_sec"],
  "errors": a["errors"] + b["errors"], "per_replica": [a["throughput_per_sec"], b["throughput_per_sec"]],
  "statuses": [a["statuses"], b["statuses"]], "reasons": [a["reasons"], b["reasons"]],
  "latency_us": {"p50": max(a["latency_us"]["p50"], b["latency_us"]["p50"]), "p99": max(a["latency_us"]["p99"], b["latency_us"]["p99"])}}))
PY
  SERVER_PID=$A_PID; stop_server
  SERVER_PID=${PIDS[-1]}; stop_server
else
  echo "skipped: no PostgreSQL (initdb) found"
fi
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
if [ -z "${ONLY_FILL:-}" ]; then python3 - "$OUT/results.jsonl" <<'PY'
# Issue 16's targets against this run's results.
import json, sys
r = {}
for line in open(sys.argv[1]):
    x = json.loads(line)
    r[x["label"]] = x
def rate(label):
    return r[label]["throughput_per_sec"] if label in r else None
def mib(label):
    return r[label]["peak_rss_kib"] / 1024 if label in r else None
rows = []
def row(name, value, target, ok, shown):
    rows.append((name, "not run" if value is None else shown, target, "-" if value is None else ("met" if ok else "missed")))
health = rate("health c64")
for s in ("allow", "approval"):
    v = rate(f"decide-{s} c64")
    q = v / health if v and health else None
    row(f"decide-{s} / health", q, ">= 0.50", q is not None and q >= 0.5, f"{v:.0f}/{health:.0f} = {q:.2f}" if q else "")
v = rate("cycle c64"); row("cycle, SQLite", v, ">= 3,000/s", v is not None and v >= 3000, f"{v:.0f}/s" if v else "")
v = rate("cycle on PostgreSQL, two replicas, 32 in flight each")
row("cycle, PostgreSQL, two replicas", v, ">= 1,500/s", v is not None and v >= 1500, f"{v:.0f}/s" if v else "")
loops = [x for k, x in r.items() if k.startswith("decide-allow open loop")]
p99 = [x["latency_us"]["p99"] / 1000 for x in loops]
row("open-loop p99 at half the maximum, 3 runs", p99 or None, "<= 5 ms in 3 of 3", len(p99) == 3 and max(p99) <= 5, ", ".join(f"{p:.1f} ms" for p in p99))
v = r.get("load 10,000 rules", {}).get("mean_ms")
row("load 10,000 rules", v, "<= 250 ms", v is not None and v <= 250, f"{v:.0f} ms" if v else "")
rl, base = r.get("reload every 1s, 10k rules"), r.get("decide-allow c64, 10k rules")
if rl and base:
    fails = rl["extra"].get("reload_failures", 0) + rl["errors"]
    q = rl["latency_us"]["p99"] / base["latency_us"]["p99"]
    row("reload every second: failures, p99 / p99 without", q, "0, <= 2x", fails == 0 and q <= 2, f"{fails}, {q:.2f}x")
else:
    row("reload every second", None, "0, <= 2x", False, "")
for label, target in (("peak RSS, 10,000-rule policy loaded, idle", 64), ("peak RSS, 10,000-rule policy, after reloads", 64), ("peak RSS, shipped policy, after the runs above", 40)):
    v = mib(label)
    row(label, v, f"<= {target} MiB", v is not None and v <= target, f"{v:.1f} MiB" if v else "")
g, h = rate("decide-allow c64, before HTTP"), rate("http decide-allow c64")
q = h / g if g and h else None
row("HTTP/JSON decide / gRPC decide", q, ">= 0.70", q is not None and q >= 0.7, f"{h:.0f}/{g:.0f} = {q:.2f}" if q else "")
w = max(len(x[0]) for x in rows)
print("\n== issue 16's targets")
for name, shown, target, status in rows:
    print(f"{name:<{w}}  {shown:<28} {target:<18} {status}")
PY
fi
