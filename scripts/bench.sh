#!/usr/bin/env bash
# Benchmark of the chat function against the simulator on loopback (release build).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
# `scripts/bench.sh memory`: what one request costs in memory (request-memory).
cargo build --release --locked -p chat-completions -p chat-bench
if [[ ${1:-} == memory ]]; then
  exec "$ROOT/target/release/request-memory" --gateway-bin "$ROOT/target/release/chat-completions"
fi
exec "$ROOT/target/release/chat-bench" --gateway-bin "$ROOT/target/release/chat-completions" "$@"
