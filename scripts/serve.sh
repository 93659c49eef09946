#!/usr/bin/env bash
# Runs the gateway locally: the self-hosted `gateway` binary on
# http://127.0.0.1:8080/v1 (the quickest first run: one binary, nothing to
# install beyond cmake), or with --lambda the Lambda functions under the
# emulator (`cargo lambda watch`) on http://127.0.0.1:9000/v1.
#
#   scripts/serve.sh --offline   against the bundled simulator: no account, no
#                                internet; a simulated MiniMax Code account is
#                                logged in for you and the API key is sk-local
#   scripts/serve.sh             against the real upstream (UPSTREAM, default
#                                minimax-code): header mode, or TOKENS_FILE
#                                (add accounts with `gateway login`)
#   scripts/serve.sh --lambda [--offline]   the same under the Lambda emulator
#
# Every other setting of docs/configuration.md is passed through from the
# environment. It installs only what serving needs (cmake for libopus;
# cargo-lambda and zig into .venv for --lambda) and builds only what it runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

offline=false lambda=false
for arg in "$@"; do
  case "$arg" in
    --offline) offline=true ;;
    --lambda) lambda=true ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

# What building needs: cmake builds libopus (Opus decoding) from source.
if ! command -v cmake >/dev/null; then
  log "apt-get install cmake"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
fi
if $lambda && ! [ -x "$VENV/bin/cargo-lambda" ]; then
  log "cargo-lambda and zig into .venv (for the Lambda emulator)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "$(grep '^cargo-lambda==' tests/e2e/requirements.txt)" "$(grep '^ziglang==' tests/e2e/requirements.txt)"
fi

bins=(-p server --bin gateway)
$offline && bins+=(-p hailuo-simulator --bin hailuo-simulator)
log "build: ${bins[*]}$($lambda && echo ' and the functions')"
cargo build --locked "${bins[@]}"
if $lambda; then
  cargo build --locked $(printf -- '-p %s ' $(ls "$ROOT/functions"))
fi
mkdir -p "$E2E_DIR"

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
upstream="${UPSTREAM:-minimax-code}"
export UPSTREAM="$upstream"
key_hint="your token (header mode)"
if $offline; then
  case "$upstream" in
    minimax-code | code) protocol=minimax-code addr=$CODE_SIM_ADDR url=$CODE_SIM_URL state=/_sim/state ;;
    minimax-agent | agent) protocol=agent addr=$SIM_ADDR url=$SIM_URL state=/__sim/state ;;
    *) protocol=hailuo addr=$SIM_ADDR url=$SIM_URL state=/__sim/state ;;
  esac
  "$ROOT/target/debug/hailuo-simulator" --protocol "$protocol" --addr "$addr" >"$E2E_DIR/simulator.log" 2>&1 &
  pids+=($!)
  wait_http "$url$state" 30
  export HAILUO_BASE_URL="$url" AGENT_BASE_URL="$url" MINIMAX_CODE_BASE_URL="$url" MINIMAX_CODE_ACCOUNT_URL="$url" \
    MINIMAX_CODE_PLATFORM_URL="$url"
  if [[ $protocol == minimax-code ]]; then
    # A simulated account, logged in as `gateway login` does it for real:
    # the simulator approves the code it prints.
    export TOKENS_FILE="$E2E_DIR/serve-tokens.json"
    rm -f "$TOKENS_FILE" "$TOKENS_FILE.state.json"
    echo '{"api_keys": ["sk-local"]}' >"$TOKENS_FILE"
    chmod 600 "$TOKENS_FILE"
    curl -s -X POST "$url/_sim/settings" -H 'content-type: application/json' -d '{"interval": 1}' >/dev/null
    coproc LOGIN { "$ROOT/target/debug/gateway" login --tokens-file "$TOKENS_FILE" 2>&1; }
    login_pid=$LOGIN_PID # bash unsets LOGIN_PID once the login ends
    while IFS= read -r line <&"${LOGIN[0]}"; do
      if [[ $line =~ confirm\ the\ code\ ([A-Z0-9]{4}-[A-Z0-9]{4}) ]]; then
        curl -s -X POST "$url/_sim/device/approve" -H 'content-type: application/json' \
          -d "{\"user_code\": \"${BASH_REMATCH[1]}\", \"account\": \"local\"}" >/dev/null
      fi
      [[ $line == Added* ]] && echo "$line" >&2
    done
    wait "$login_pid" || { echo "the simulated login failed (see above)" >&2; exit 1; }
    key_hint="sk-local"
    if $lambda; then
      # The functions read no TOKENS_FILE: header mode with the simulated
      # account's access token (the simulator's own; it lasts an hour).
      key_hint=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["minimax_code_accounts"][0]["access_token"])' "$TOKENS_FILE")
      unset TOKENS_FILE
    fi
    log "offline: the MiniMax Code simulator answers on $url; a simulated account is logged in"
  else
    log "offline: the $protocol simulator answers on $url (any token works$([[ $protocol == agent ]] && echo ' that is a JWT with user.id'))"
  fi
fi

if ! $lambda; then
  base="http://${LISTEN_ADDR:-127.0.0.1:8080}/v1"
  log "OpenAI base URL: $base   API key: $key_hint   (Ctrl-C stops)"
  cat >&2 <<EOF
  curl $base/chat/completions -H 'Authorization: Bearer $key_hint' \\
    -H 'Content-Type: application/json' \\
    -d '{"model": "MiniMax-M3", "stream": true, "messages": [{"role": "user", "content": "Hello"}]}'
EOF
  RUST_LOG="${RUST_LOG:-info}" "$ROOT/target/debug/gateway" serve &
  pids+=($!)
  wait "${pids[-1]}"
  exit
fi

# Settings go to the functions through an env file (values may hold commas).
env_file="$E2E_DIR/serve.env"
{
  echo "RUST_LOG=${RUST_LOG:-info}"
  echo "AWS_EC2_METADATA_DISABLED=true"
  env | grep -E '^(UPSTREAM|HAILUO_[A-Z_]+|AGENT_[A-Z_]+|MINIMAX_CODE_[A-Z_]+|UPSTREAM_[A-Z_]+|FILE_[A-Z_]+|MAX_REQUEST_BYTES|POOL_WAIT_MS|API_KEY_PREFIX|CORS_ALLOW_ORIGINS|REPLACE_AUDIO_MODEL|TRANSCRIPTION_MAX_SECONDS|TOKENS_SECRET_ID|TOKEN_STATUS_SECRET_ID|ALLOW_HEADER_TOKENS|SECRET_CACHE_TTL_SECONDS|STATUS_CACHE_TTL_SECONDS|DEAD_TOKEN_MEMORY_SECONDS|LIVENESS_CONCURRENCY|AWS_REGION|AWS_DEFAULT_REGION|AWS_ENDPOINT_URL|AWS_ENDPOINT_URL_SECRETS_MANAGER|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)=' || true
} >"$env_file"
chmod 600 "$env_file"
if [[ -n ${TOKENS_FILE:-} ]]; then
  log "note: the Lambda functions read no TOKENS_FILE (they read TOKENS_SECRET_ID); header mode here"
fi
log "OpenAI base URL: $GATEWAY_URL/v1   API key: $key_hint   (Ctrl-C stops)"
cargo lambda watch --ignore-changes --disable-cors -A 127.0.0.1 -P "$LAMBDA_PORT" --env-file "$env_file"
