#!/usr/bin/env bash
# The server's memory with many idle WatchJob streams open:
#
#   cargo build --release --examples && benches/watch_rss.sh [STREAMS]
#
# Starts `gavel serve` (release build, SQLite in a scratch directory) with
# `[resources] max_watch_streams_per_identity` raised to STREAMS (default
# 1000), decides one job that waits for approval, reads the server's RSS,
# opens STREAMS streams on it with examples/idle_watchers, reads the RSS
# again, closes them and reads it a third time. The server is stopped by
# pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
G=$PWD/target/release/gavel
W=$PWD/target/release/examples/idle_watchers
WORK=$(mktemp -d)
PID=
HOLD=
cleanup() {
  [ -n "$HOLD" ] && kill "$HOLD" 2>/dev/null || true
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
AGENT=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
HASH=$(printf '%s' "$AGENT" | sha256sum | cut -d' ' -f1)
cat > "$WORK/gavel.toml" <<TOML
database_url = "sqlite://$WORK/gavel.db"
policy = "$PWD/policies/default.yaml"
receipt_key = "$WORK/receipt.key"
[resources]
max_watch_streams_per_identity = $N
[[identities]]
name = "agent"
roles = ["agent"]
tokens = ["sha256:$HASH"]
[[identities]]
name = "reviewer"
roles = ["reviewer", "finance-approver", "security-approver", "service-owner", "oncall"]
tokens = []
[[identities]]
name = "reviewer-2"
roles = ["reviewer", "finance-approver", "security-approver", "service-owner", "oncall"]
tokens = []
TOML
env ${SERVER_ENV:-} "$G" serve --config "$WORK/gavel.toml" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  > "$WORK/out.txt" 2> "$WORK/err.txt" &
PID=$!
for _ in $(seq 1 600); do grep -q "gavel listening on" "$WORK/out.txt" 2>/dev/null && break; sleep 0.2; done
GRPC=$(sed -n 's/^gavel listening on \([^ ]*\) (gRPC).*/\1/p' "$WORK/out.txt")
[ -n "$GRPC" ] || { echo "the server did not start:"; cat "$WORK/err.txt"; exit 1; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
echo '{"job_id":"watched","topic":"job.deploy","action":"deploy","target":"prod/db","params":{}}' \
  | GAVEL_TOKEN=$AGENT "$G" decide --server "http://$GRPC" --job - > "$WORK/decided.txt"
echo "before:  $(rss) KiB"
grep -q "require_approval\|REQUIRE_APPROVAL\|pending" "$WORK/decided.txt" || { echo "the job does not wait:"; cat "$WORK/decided.txt"; exit 1; }
round() {
  rm -f "$WORK/hold" "$WORK/watchers.txt"
  mkfifo "$WORK/hold"
  "$W" "http://$GRPC" "$AGENT" watched "$N" < "$WORK/hold" > "$WORK/watchers.txt" &
  HOLD=$!
  exec 3> "$WORK/hold"
  for _ in $(seq 1 600); do grep -q "^open" "$WORK/watchers.txt" 2>/dev/null && break; sleep 0.2; done
  grep -q "^open" "$WORK/watchers.txt" || { echo "the streams did not open"; exit 1; }
  echo "$1 with $N streams open: $(rss) KiB"
  exec 3>&-
  wait "$HOLD" || true
  HOLD=
  sleep 1
  echo "$1 after closing them: $(rss) KiB"
}
# Several rounds (ROUNDS, default 3): later rounds show whether memory
# is reused or grows.
for r in $(seq 1 "${ROUNDS:-3}"); do round "round $r:"; done
