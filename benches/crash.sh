#!/usr/bin/env bash
# Crash trials, many of them: each trial runs a mixed load against a real
# `gavel serve`, kills it with SIGKILL after a random number of
# acknowledged operations, restarts it on the same database and checks
# that nothing acknowledged was lost (tests/it/crash.rs).
#
#   benches/crash.sh [TRIALS]        # default 50, on SQLite and PostgreSQL
#
# PostgreSQL trials need PostgreSQL's server binaries (the tests start a
# throwaway cluster); GAVEL_REQUIRE_POSTGRES=1 makes their absence fail.
# GAVEL_CRASH_SEED=N replays the trials starting at seed N.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-50}
GAVEL_CRASH_TRIALS=$TRIALS cargo test -q --test it crash_trials -- --nocapture --test-threads 1 2>&1 \
  | tee /dev/stderr | grep -o 'crash trials:.*'
