#!/usr/bin/env bash
# Runs the service locally under the Lambda emulator (`cargo lambda watch`) on
# http://127.0.0.1:9000/v1, against the real backend, or with --offline against
# the bundled simulator (no account or internet needed). UPSTREAM=minimax-agent
# selects the MiniMax Agent upstream; every other setting in the README's
# configuration table is passed through from the environment.
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
upstream="${UPSTREAM:-hailuo}"
if $offline; then
  protocol=hailuo
  [[ $upstream == minimax-agent || $upstream == agent ]] && protocol=agent
  "$ROOT/target/debug/hailuo-simulator" --protocol "$protocol" --addr "$SIM_ADDR" >"$E2E_DIR/simulator.log" 2>&1 &
  pids+=($!)
  wait_http "$SIM_URL/__sim/state" 30
  export HAILUO_BASE_URL="$SIM_URL" AGENT_BASE_URL="$SIM_URL"
  log "offline: the $protocol simulator answers on $SIM_URL (any token works$([[ $protocol == agent ]] && echo ' that is a JWT with user.id'))"
fi

# Settings go to the functions through an env file (values may hold commas).
env_file="$E2E_DIR/serve.env"
{
  echo "RUST_LOG=${RUST_LOG:-info}"
  echo "AWS_EC2_METADATA_DISABLED=true"
  env | grep -E '^(UPSTREAM|HAILUO_[A-Z_]+|AGENT_[A-Z_]+|UPSTREAM_[A-Z_]+|FILE_[A-Z_]+|MAX_REQUEST_BYTES|POOL_WAIT_MS|API_KEY_PREFIX|CORS_ALLOW_ORIGINS|REPLACE_AUDIO_MODEL|TRANSCRIPTION_MAX_SECONDS|TOKENS_SECRET_ID|TOKEN_STATUS_SECRET_ID|ALLOW_HEADER_TOKENS|SECRET_CACHE_TTL_SECONDS|STATUS_CACHE_TTL_SECONDS|DEAD_TOKEN_MEMORY_SECONDS|LIVENESS_CONCURRENCY|AWS_REGION|AWS_DEFAULT_REGION|AWS_ENDPOINT_URL|AWS_ENDPOINT_URL_SECRETS_MANAGER|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)=' || true
} >"$env_file"
chmod 600 "$env_file"

log "OpenAI base URL: $GATEWAY_URL/v1   (Ctrl-C stops)"
cargo lambda watch --ignore-changes --disable-cors -A 127.0.0.1 -P "$LAMBDA_PORT" --env-file "$env_file"
