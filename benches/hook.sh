#!/usr/bin/env bash
# What `gavel hook` adds to each tool call of a coding agent: one process
# start, one connection, a Decide and (when allowed) a Bind.
#
#   cargo build --release && benches/hook.sh [CALLS]
#
# One `gavel serve --dev` (shipped policy) pinned to CPU 0; the hook runs on
# CPU 1, CALLS times (default 200) for each of two Claude Code calls, each
# in a session of its own so every call is a fresh job:
#   allow:   WebFetch (tagged egress, allowed with constraints): Decide + Bind
#   pending: Bash `make deploy` (the default, require_approval): Decide only
# Prints the mean, median and p99 wall time per call in milliseconds. The
# server started here is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-200}
G=$PWD/target/release/gavel
. benches/dev-server.sh
start_dev_server taskset -c 0
export GAVEL_SERVER="http://$GRPC" GAVEL_TOKEN=$(dev_token dev-agent) GAVEL_EXECUTOR_TOKEN=$(dev_token dev-executor)

measure() { # name tool input expected-decision
  local times="$WORK/$1.ms"
  : > "$times"
  for i in $(seq 1 "$CALLS"); do
    local payload="{\"session_id\":\"bench-$1-$i\",\"cwd\":\"/repo\",\"hook_event_name\":\"PreToolUse\",\"tool_name\":\"$2\",\"tool_input\":$3,\"tool_use_id\":\"t$i\"}"
    local t0 t1 out
    t0=$(date +%s%N)
    out=$(printf '%s' "$payload" | taskset -c 1 "$G" hook claude-code)
    t1=$(date +%s%N)
    case "$out" in *"\"permissionDecision\":\"$4\""*) ;; *) echo "unexpected answer: $out" >&2; exit 1 ;; esac
    echo $(( (t1 - t0) / 1000 )) >> "$times"
  done
  sort -n "$times" | awk -v name="$1" '{ a[NR] = $1; s += $1 }
    END { printf "%-8s %d calls  mean %.2f ms  median %.2f ms  p99 %.2f ms\n", name, NR, s / NR / 1000, a[int(NR * 0.5)] / 1000, a[int(NR * 0.99)] / 1000 }'
}
measure allow WebFetch '{"url":"https://example.org/a","prompt":"summarise"}' allow
measure pending Bash '{"command":"make deploy","description":"Deploy"}' deny
