#!/usr/bin/env bash
# The whole test suite on a fresh machine: setup, lint, unit tests, then the
# end-to-end tests (simulator + `cargo lambda watch` + the official OpenAI SDKs).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cfn-lint template.yaml"
cfn-lint template.yaml
log "unit tests (cargo nextest)"
cargo nextest run --workspace --locked

log "build functions and simulator"
cargo build --workspace --bins --locked

mkdir -p "$E2E_DIR"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "$ROOT/target/debug/(chat-completions|models)" 2>/dev/null || true
}
trap cleanup EXIT

log "start the Hailuo simulator on $SIM_ADDR"
"$ROOT/target/debug/hailuo-simulator" --addr "$SIM_ADDR" >"$E2E_DIR/simulator.log" 2>&1 &
pids+=($!)
wait_http "$SIM_URL/__sim/state" 30

# Values with commas must go through --env-file (--env-var splits at commas).
cat >"$E2E_DIR/lambda.env" <<ENV
HAILUO_BASE_URL=$SIM_URL
RUST_LOG=info
UPSTREAM_FIRST_BYTE_TIMEOUT_MS=2500
UPSTREAM_IDLE_TIMEOUT_MS=2500
UPSTREAM_RETRY_BACKOFF_MS=100
MAX_REQUEST_BYTES=1048576
AWS_EC2_METADATA_DISABLED=true
ENV

log "start cargo lambda watch on :$LAMBDA_PORT"
cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$LAMBDA_PORT" --env-file "$E2E_DIR/lambda.env" \
  >"$E2E_DIR/lambda.log" 2>&1 &
pids+=($!)
wait_http "$GATEWAY_URL/" 120
# The emulator compiles a function on its first request: warm both before any test clock starts.
for path in /v1/models /v1/chat/completions; do
  curl -s -o /dev/null --max-time 300 "$GATEWAY_URL$path" || true
done

status=0
log "end-to-end tests: openai (Python)"
"$VENV/bin/python" -m pytest -q tests/e2e/python || status=1
log "end-to-end tests: openai (npm)"
(cd tests/e2e/node && GATEWAY_URL="$GATEWAY_URL" SIM_URL="$SIM_URL" node --test --test-concurrency=1 ./*.test.mjs) || status=1

log "logs must not contain any token"
if grep -Eo 'tok-e2e-[A-Za-z0-9_-]+' "$E2E_DIR"/*.log | head -5 | grep .; then
  echo "a token appeared in the logs above" >&2
  status=1
fi
exit $status
