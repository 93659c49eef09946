#!/usr/bin/env bash
# The whole test suite on a fresh machine: setup, lint, unit tests, then the
# end-to-end tests (simulator + `cargo lambda watch`, then the self-hosted
# server, + the official OpenAI SDKs).
#
# `scripts/test.sh -k abandoned` (any pytest arguments): only those Python
# end-to-end tests, without lint, unit tests or the npm suite, for iterating.
set -euo pipefail
focus=("$@")
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"

if ((${#focus[@]} == 0)); then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  log "cfn-lint template.yaml"
  cfn-lint template.yaml
  log "sam validate --lint (offline)"
  sam validate --lint
  log "hadolint Dockerfile"
  hadolint --no-color Dockerfile
  log "template checks against the code (tests/template)"
  "$VENV/bin/python" -m pytest -q tests/template
  log "unit tests (cargo nextest)"
  cargo nextest run --workspace --locked
fi

log "build functions and simulator"
# The functions as Lambda runs them: the workspace's default members, without
# the server, whose `credential-chain` feature would be unified into every
# binary (the functions read AWS credentials from the environment alone,
# aws.rs); `cargo lambda watch` resolves features the same way. The server
# kind runs the static build below.
cargo build --bins --locked

if ((${#focus[@]} == 0)); then
  # What `sam build` does (BuildMethod rust-cargolambda), for the host
  # architecture: every function for Lambda, release, with zig as the C
  # compiler (libopus and LAME are built from source).
  log "Lambda builds: cargo lambda build --release --x86-64"
  cargo lambda build --release --x86-64 --locked $(printf -- '-p %s ' $(ls "$ROOT/functions"))
  for fn in "$ROOT"/functions/*/; do
    boot="$ROOT/target/lambda/$(basename "$fn")/bootstrap"
    [[ -x $boot ]] || { echo "no Lambda bootstrap for $(basename "$fn")" >&2; exit 1; }
    awk -v n="$(basename "$fn")" -v b="$(stat -c %s "$boot")" 'BEGIN { printf "%-22s %5.1f MB\n", n, b / 1048576 }'
  done
fi
# The self-hosted server, static (musl), as the Dockerfile ships it: the
# server kind of the end-to-end run uses this binary.
log "static server: cargo lambda build --target x86_64-unknown-linux-musl -p server --bin gateway"
cargo lambda build --target x86_64-unknown-linux-musl -p server --bin gateway --locked --lambda-dir "$ROOT/target/static"
mkdir -p "$ROOT/target/static/bin"
# A hard link, not a copy: the binary is the one cargo lambda wrote.
ln -f "$ROOT/target/static/gateway/bootstrap" "$ROOT/target/static/bin/gateway"
export SERVER_BIN="$ROOT/target/static/bin/gateway"
if ldd "$SERVER_BIN" 2>&1 | grep -q '=>'; then
  echo "$SERVER_BIN is not static: $(ldd "$SERVER_BIN")" >&2
  exit 1
fi

mkdir -p "$E2E_DIR"
# Every deployment's port but the header one's ($LAMBDA_PORT).
DEPLOYMENT_PORTS="9001 9002 9003 9004 9005 9006 9007 9008 9009 9010 9011 9012"
pids=() deployment_pids=()
cleanup() {
  for p in "${pids[@]}" "${deployment_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "$ROOT/target/debug/(chat-completions|messages|responses|models|token-check|token-liveness|audio-speech|audio-transcriptions)" 2>/dev/null || true
  pkill -f "$ROOT/target/.*/gateway( |$)" 2>/dev/null || true
}
trap cleanup EXIT

log "start the Hailuo simulator on $SIM_ADDR"
"$ROOT/target/debug/hailuo-simulator" --addr "$SIM_ADDR" >"$E2E_DIR/simulator.log" 2>&1 &
pids+=($!)
wait_http "$SIM_URL/__sim/state" 30
log "start the MiniMax Agent simulator on $AGENT_SIM_ADDR"
"$ROOT/target/debug/hailuo-simulator" --protocol agent --addr "$AGENT_SIM_ADDR" >"$E2E_DIR/agent-simulator.log" 2>&1 &
pids+=($!)
wait_http "$AGENT_SIM_URL/__sim/state" 30

log "start the MiniMax Code simulator on $CODE_SIM_ADDR"
"$ROOT/target/debug/hailuo-simulator" --protocol minimax-code --addr "$CODE_SIM_ADDR" >"$E2E_DIR/code-simulator.log" 2>&1 &
pids+=($!)
wait_http "$CODE_SIM_URL/_sim/state" 30

log "start the MiniMax API (paid platform) simulator on $API_SIM_ADDR"
"$ROOT/target/debug/hailuo-simulator" --protocol minimax-api --addr "$API_SIM_ADDR" >"$E2E_DIR/api-simulator.log" 2>&1 &
pids+=($!)
wait_http "$API_SIM_URL/_sim/state" 30

log "start moto (local Secrets Manager and DynamoDB, requests one at a time) on :$MOTO_PORT"
# moto keeps its recording in a file in its working directory: run it in .e2e.
# Serialized: moto's own conditional writes are not atomic under concurrency
# (tests/e2e/aws/serial_moto.py says what was measured), DynamoDB's are.
(cd "$E2E_DIR" && exec "$VENV/bin/python" "$ROOT/tests/e2e/aws/serial_moto.py" -H 127.0.0.1 -p "$MOTO_PORT") \
  >"$E2E_DIR/moto.log" 2>&1 &
pids+=($!)
wait_http "$MOTO_URL/moto-api/" 60
# Record every AWS call, so tests can count GetSecretValue per function.
curl -s -X POST "$MOTO_URL/moto-api/recorder/start-recording" >/dev/null

# Each deployment shape (settings, a port) is served either by `cargo lambda
# watch` (GATEWAY_KIND=watch: the function binaries, one process per route,
# as on Lambda) or by the self-hosted `server` binary (GATEWAY_KIND=server:
# every route in one process). The same end-to-end tests run against both.
# Values with commas must go through --env-file (--env-var splits at commas).
deploy() { # name port [KEY=VALUE...]: defaults, each overridable
  local name=$1 port=$2 kv
  shift 2
  local -A given=()
  for kv in "$@"; do given[${kv%%=*}]=1; done
  {
    for kv in UPSTREAM=hailuo "HAILUO_BASE_URL=$SIM_URL" RUST_LOG=info UPSTREAM_FIRST_BYTE_TIMEOUT_MS=2500 \
      HAILUO_TTS_POLL_INTERVAL_MS=100 HAILUO_TTS_TIMEOUT_MS=2000 \
      UPSTREAM_IDLE_TIMEOUT_MS=2500 UPSTREAM_RETRY_BACKOFF_MS=100 MAX_REQUEST_BYTES=1048576 \
      AWS_EC2_METADATA_DISABLED=true "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" \
      "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" "AWS_REGION=$AWS_REGION" "AWS_ENDPOINT_URL=$MOTO_URL"; do
      [[ -n ${given[${kv%%=*}]:-} ]] || echo "$kv"
    done
    printf '%s\n' "$@"
  } >"$E2E_DIR/$name.env"
  if [[ $GATEWAY_KIND == server ]]; then
    log "start the server ($name) on :$port"
    (set -a && source "$E2E_DIR/$name.env" && LISTEN_ADDR="127.0.0.1:$port" exec "$SERVER_BIN") \
      >"$E2E_DIR/server-$name.log" 2>&1 &
  else
    log "start cargo lambda watch ($name) on :$port"
    cargo lambda watch --ignore-changes --disable-cors -A 127.0.0.1 -P "$port" --env-file "$E2E_DIR/$name.env" \
      >"$E2E_DIR/lambda-$name.log" 2>&1 &
  fi
  deployment_pids+=($!)
}

start_deployments() {
  deploy header "$LAMBDA_PORT"
  deploy secret 9001 TOKENS_SECRET_ID=e2e/tokens TOKEN_STATUS_SECRET_ID=e2e/token-status STATUS_CACHE_TTL_SECONDS=1
  deploy alldead 9002 TOKENS_SECRET_ID=e2e/tokens-all-dead ALLOW_HEADER_TOKENS=true
  deploy nokeys 9003 TOKENS_SECRET_ID=e2e/tokens-no-keys
  # Header mode on the MiniMax Agent upstream: short polls and timeouts for the
  # tests, in the defaults' ratios (the first-byte and idle timeouts shorter than
  # the agent's own no-progress timeout, which must own the wait).
  deploy agent 9004 UPSTREAM=minimax-agent AGENT_BASE_URL="$AGENT_SIM_URL" AGENT_POLL_INTERVAL_MS=200 \
    AGENT_POLL_TIMEOUT_MS=3000 AGENT_DELETE_RETRY_MS=1000 AGENT_DELETE_TRIES=8 \
    UPSTREAM_IDLE_TIMEOUT_MS=1500 UPSTREAM_FIRST_BYTE_TIMEOUT_MS=1500
  # Files by URL from the tests' own loopback server: private addresses allowed
  # here only (the header deployment keeps the rule, for the refusal tests).
  # It also replaces the first two OpenAI voices (REPLACE_AUDIO_MODEL).
  deploy files 9005 FILE_URL_ALLOW_PRIVATE=true FILE_MAX_BYTES=1048576 \
    REPLACE_AUDIO_MODEL=JayChou_hailuo,Daniel_hailuo
  # MiniMax Code: header mode (callers send access tokens), and its accounts
  # from a tokens secret that `gateway login` writes, renewed by the
  # token-liveness binary the tests run as the one writer.
  # Its speech and transcription go to the paid platform, with a caller's key.
  local code=(UPSTREAM=minimax-code "MINIMAX_CODE_BASE_URL=$CODE_SIM_URL" "MINIMAX_CODE_ACCOUNT_URL=$CODE_SIM_URL"
    "MINIMAX_CODE_PLATFORM_URL=$CODE_SIM_URL"
    FILE_URL_ALLOW_PRIVATE=true "MINIMAX_API_BASE_URL=$API_SIM_URL")
  deploy code 9006 "${code[@]}"
  deploy codeacct 9007 "${code[@]}" TOKENS_SECRET_ID=e2e/code-tokens TOKEN_STATUS_SECRET_ID=e2e/code-status \
    SECRET_CACHE_TTL_SECONDS=1 STATUS_CACHE_TTL_SECONDS=1
  # MiniMax's paid platform: alone (callers send platform keys), and after
  # MiniMax Code (callers send `Bearer <access token>,<platform key>`; the
  # key serves when every account cannot answer now).
  deploy api 9008 UPSTREAM=minimax-api "MINIMAX_API_BASE_URL=$API_SIM_URL" FILE_URL_ALLOW_PRIVATE=true
  deploy fallback 9009 UPSTREAM=minimax-code,minimax-api "MINIMAX_API_BASE_URL=$API_SIM_URL" \
    "MINIMAX_CODE_BASE_URL=$CODE_SIM_URL" "MINIMAX_CODE_ACCOUNT_URL=$CODE_SIM_URL" \
    "MINIMAX_CODE_PLATFORM_URL=$CODE_SIM_URL" POOL_WAIT_MS=1500
  # One pool for the deployment (ACCOUNTS_TABLE): on the emulator, each
  # function is its own process, as each Lambda environment is; the tests
  # start a second server on the same table for the server kind. The
  # functions never create the table (the template does): it is made here
  # for them, and the server makes its own.
  [[ $GATEWAY_KIND == server ]] || "$VENV/bin/python" "$ROOT/tests/e2e/aws/table.py" "e2e-accounts-$GATEWAY_KIND"
  deploy shared 9010 "${code[@]}" "ACCOUNTS_TABLE=e2e-accounts-$GATEWAY_KIND" POOL_LEASE_TTL_MS=3000 \
    POOL_WAIT_MS=30000 UPSTREAM_IDLE_TIMEOUT_MS=5000 UPSTREAM_FIRST_BYTE_TIMEOUT_MS=5000
  # Two deployments of the Hailuo speech on one table, in header mode: two
  # environments of one function, for the voice that is per-account state.
  [[ $GATEWAY_KIND == server ]] || "$VENV/bin/python" "$ROOT/tests/e2e/aws/table.py" "e2e-voices-$GATEWAY_KIND"
  local voices=("ACCOUNTS_TABLE=e2e-voices-$GATEWAY_KIND" POOL_LEASE_TTL_MS=3000 POOL_WAIT_MS=30000)
  deploy voices 9011 "${voices[@]}"
  deploy voices-b 9012 "${voices[@]}"
  for port in "$LAMBDA_PORT" $DEPLOYMENT_PORTS; do wait_http "http://127.0.0.1:$port/" 120; done
  [[ $GATEWAY_KIND == watch ]] || return 0
  # The emulator starts a function on its first request: warm them before any
  # test clock starts, on paths that read no secret.
  for path in /v1/models /v1/chat/completions /lambda-url/messages/warm-up /lambda-url/responses/warm-up /lambda-url/token-check/warm-up \
    /lambda-url/audio-speech/warm-up /lambda-url/audio-transcriptions/warm-up; do
    curl -s -o /dev/null --max-time 300 "$GATEWAY_URL$path" || true
  done
  for port in $DEPLOYMENT_PORTS; do
    for fn in chat-completions messages responses models token-check audio-speech audio-transcriptions; do
      curl -s -o /dev/null --max-time 300 "http://127.0.0.1:$port/lambda-url/$fn/warm-up" || true
    done
  done
}

stop_deployments() {
  for p in "${deployment_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "$ROOT/target/debug/(chat-completions|messages|responses|models|token-check|token-liveness|audio-speech|audio-transcriptions)" 2>/dev/null || true
  for p in "${deployment_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  deployment_pids=()
  # The ports are free again before the next kind starts.
  for port in "$LAMBDA_PORT" $DEPLOYMENT_PORTS; do
    for ((i = 0; i < 120; i++)); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" || break; sleep 0.25; done
  done
}

log "audio fixtures (espeak-ng, ffmpeg)"
export AUDIO_DIR="$E2E_DIR/audio"
"$ROOT/tests/e2e/audio/make.sh" "$AUDIO_DIR"

# Both kinds in a full run; a focused run (`-k …`) uses the emulator unless
# GATEWAY_KINDS says otherwise (`GATEWAY_KINDS=server scripts/test.sh -k x`).
if ((${#focus[@]} == 0)); then kinds=${GATEWAY_KINDS:-watch server}; else kinds=${GATEWAY_KINDS:-watch}; fi
status=0
for GATEWAY_KIND in $kinds; do
  export GATEWAY_KIND
  # Each kind's AWS calls are counted on their own.
  curl -s -X POST "$MOTO_URL/moto-api/recorder/reset-recording" >/dev/null
  start_deployments
  log "end-to-end tests against $GATEWAY_KIND: openai (Python)"
  "$VENV/bin/python" -m pytest -q tests/e2e/python "${focus[@]}" || status=1
  if ((${#focus[@]} == 0)); then
    log "end-to-end tests against $GATEWAY_KIND: openai (npm)"
    (cd tests/e2e/node && GATEWAY_URL="$GATEWAY_URL" SIM_URL="$SIM_URL" AUDIO_DIR="$AUDIO_DIR" node --test --test-concurrency=1 ./*.test.mjs) || status=1
  fi
  stop_deployments
done

log "logs must not contain any token or API key"
if grep -Eo '(tok|sk)-e2e-[A-Za-z0-9_-]+|sk-(api|cp)-[a-z]+-e2e[A-Za-z0-9_-]*|mmo[ar]t_[A-Za-z0-9]{6,}' "$E2E_DIR"/*.log | head -5 | grep .; then
  echo "a token or key appeared in the logs above" >&2
  status=1
fi
exit $status
