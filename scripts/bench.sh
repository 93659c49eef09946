#!/usr/bin/env bash
# Benchmark of the chat function against the simulator on loopback (release build).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
cargo build --release --locked -p chat-completions -p chat-bench
exec "$ROOT/target/release/chat-bench" --gateway-bin "$ROOT/target/release/chat-completions" "$@"
