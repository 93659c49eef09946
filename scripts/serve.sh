#!/usr/bin/env bash
# Runs the service locally under the Lambda emulator (`cargo lambda watch`) on
# http://127.0.0.1:9000/v1, against the real Hailuo backend, or with --offline
# against the bundled simulator (no account or internet needed).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

offline=false
for arg in "$@"; do
  case "$arg" in
    --offline) offline=true ;;
    -h|--help) echo "usage: scripts/serve.sh [--offline]"; exit 0 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done

"$ROOT/scripts/setup.sh"
cargo build --workspace --bins --locked
mkdir -p "$E2E_DIR"

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
base_url="${HAILUO_BASE_URL:-https://hailuoai.com}"
if $offline; then
  "$ROOT/target/debug/hailuo-simulator" --addr "$SIM_ADDR" >"$E2E_DIR/simulator.log" 2>&1 &
  pids+=($!)
  wait_http "$SIM_URL/__sim/state" 30
  base_url="$SIM_URL"
  log "offline: the Hailuo simulator answers on $SIM_URL (any token works)"
fi

env_file="$E2E_DIR/serve.env"
{
  echo "HAILUO_BASE_URL=$base_url"
  echo "RUST_LOG=${RUST_LOG:-info}"
  echo "AWS_EC2_METADATA_DISABLED=true"
} >"$env_file"

log "OpenAI base URL: $GATEWAY_URL/v1   (Ctrl-C stops)"
cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$LAMBDA_PORT" --env-file "$env_file"
