# Sourced by the benchmark scripts: a scratch directory that is removed on
# exit, and `start_dev_server PREFIX...`, which starts `gavel serve --dev`
# ($G, the shipped policy, free loopback ports) under a command prefix
# (`taskset -c 0`, valgrind, or nothing), waits until it listens and sets
# PID, GRPC and HTTP. Set the array SERVE_ARGS for more `serve` arguments
# (`--policy FILE`). The server is stopped by pid on exit.
WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ln -sfn "$PWD/policies" "$WORK/policies"

start_dev_server() {
  env -C "$WORK" "$@" "$G" serve --dev --data-dir data --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    ${SERVE_ARGS[@]+"${SERVE_ARGS[@]}"} > "$WORK/out.txt" 2> "$WORK/err.txt" &
  PID=$!
  for _ in $(seq 1 600); do grep -q "gavel listening on" "$WORK/out.txt" 2>/dev/null && break; sleep 0.2; done
  GRPC=$(sed -n 's/^gavel listening on \([^ ]*\) (gRPC) and \([^ ]*\) (HTTP).*/\1/p' "$WORK/out.txt")
  HTTP=$(sed -n 's/^gavel listening on \([^ ]*\) (gRPC) and \([^ ]*\) (HTTP).*/\2/p' "$WORK/out.txt")
  [ -n "$GRPC" ] || { echo "the server did not start:"; cat "$WORK/err.txt"; exit 1; }
}

# The token of a dev identity.
dev_token() {
  python3 -c "import json;print([i['token'] for i in json.load(open('$WORK/data/dev-identities.json'))['identities'] if i['name']=='$1'][0])"
}
