#!/usr/bin/env bash
# Benchmarks of the chat function against the simulator on loopback (release build).
#   scripts/bench.sh [chat-bench args]   the function as a local server (the same router Lambda runs)
#   scripts/bench.sh lambda [args]       the same, through the Lambda emulator (`cargo lambda watch`)
#   scripts/bench.sh memory              what one request costs in memory (request-memory)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
cargo build --release --locked -p chat-completions -p chat-bench
case ${1:-} in
memory)
  exec "$ROOT/target/release/request-memory" --gateway-bin "$ROOT/target/release/chat-completions"
  ;;
lambda)
  shift
  "$ROOT/scripts/setup.sh" >/dev/null
  sim_addr=127.0.0.1:18095 port=9100
  mkdir -p "$E2E_DIR"
  printf '%s\n' "HAILUO_BASE_URL=http://$sim_addr" RUST_LOG=warn >"$E2E_DIR/bench.env"
  cargo lambda watch --release --ignore-changes --disable-cors -A 127.0.0.1 -P "$port" \
    --env-file "$E2E_DIR/bench.env" >"$E2E_DIR/lambda-bench.log" 2>&1 &
  watch_pid=$!
  trap 'kill $watch_pid 2>/dev/null; pkill -f "$ROOT/target/release/chat-completions" 2>/dev/null || true' EXIT
  wait_http "http://127.0.0.1:$port/" 300
  "$ROOT/target/release/chat-bench" --sim-addr "$sim_addr" \
    --gateway-url "http://127.0.0.1:$port/v1/chat/completions" "$@"
  ;;
*)
  exec "$ROOT/target/release/chat-bench" --gateway-bin "$ROOT/target/release/chat-completions" "$@"
  ;;
esac
