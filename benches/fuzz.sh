#!/usr/bin/env bash
# Short fuzz runs of every target in fuzz/ (cargo fuzz, nightly):
#
#   benches/fuzz.sh [SECONDS]       # default 30 per target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# The targets build the library without its `server` feature: the core
# only, a few minutes from scratch. FUZZ_TARGET_DIR (default fuzz/target)
# is where that build goes.
# New corpus entries go to a scratch directory; the committed seeds in
# fuzz/corpus/TARGET are only read. A crash leaves its input in
# fuzz/artifacts/TARGET and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-30}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for t in policy_load job_canonical grpc_decode signed_documents; do
  echo "== $t ($SECS s)"
  mkdir -p "$WORK/$t"
  if ! cargo +nightly fuzz run -O --target-dir "${FUZZ_TARGET_DIR:-target}" "$t" "$WORK/$t" "corpus/$t" -- -max_total_time="$SECS" > "$WORK/$t.log" 2>&1; then
    tail -40 "$WORK/$t.log"
    echo "$t: failed (a crash leaves its input in fuzz/artifacts/$t)"
    exit 1
  fi
  grep -E "^Done [0-9]+ runs" "$WORK/$t.log" || tail -3 "$WORK/$t.log"
done
