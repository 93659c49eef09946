#!/usr/bin/env bash
# Benchmarks of the chat function against the simulator on loopback (release build).
#   scripts/bench.sh [chat-bench args]   the function as a local server (the same router Lambda runs)
#   scripts/bench.sh lambda [args]       the same, through the Lambda emulator (`cargo lambda watch`)
#   scripts/bench.sh code [args]         the MiniMax Code path: Anthropic SSE in, OpenAI chunks out (code-bench)
#   scripts/bench.sh memory [door]       what one request costs in memory (request-memory; door:
#                                        chat, the default, messages or responses)
#   scripts/bench.sh audio               the transcription function's transcoder (audio-bench)
#   scripts/bench.sh startup             each Lambda bootstrap's size, zip and start → ready (lambda-startup)
#   scripts/bench.sh pool [args]         what the shared pool's table costs a request: calls and ms
#                                        against moto's DynamoDB on loopback (pool-bench)
#   scripts/bench.sh load                100/300/1,000 concurrent streams through the server (server-load;
#                                        --split-cores gives the server a CPU of its own;
#                                        --server-url URL --sim-addr 0.0.0.0:18080 drives a
#                                        server on another machine, see BENCHMARKS.md)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
case ${1:-} in
code)
  cargo build --release --locked -p chat-completions -p chat-bench --bin chat-completions --bin code-bench
  exec "$ROOT/target/release/code-bench" --gateway-bin "$ROOT/target/release/chat-completions" "${@:2}"
  ;;
pool)
  "$ROOT/scripts/setup.sh" >/dev/null
  cargo build --release --locked -p chat-completions -p chat-bench --bin chat-completions --bin pool-bench
  exec "$ROOT/target/release/pool-bench" --gateway-bin "$ROOT/target/release/chat-completions" \
    --python "$VENV/bin/python" "${@:2}"
  ;;
load)
  # The server as it ships (the `server` profile: release, unwinding panics).
  cargo build --profile server --locked -p server
  cargo build --release --locked -p chat-bench --bin server-load
  # Three sockets a stream in the bench's process (client, simulator's both
  # ends), two in the server's.
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 8192 ] || ulimit -n "$(ulimit -Hn)"
  exec "$ROOT/target/release/server-load" --server-bin "$ROOT/target/server/gateway" "${@:2}"
  ;;
startup)
  "$ROOT/scripts/setup.sh" >/dev/null
  cargo lambda build --release --x86-64 --locked $(printf -- '-p %s ' $(ls "$ROOT/functions"))
  cargo build --release --locked -p chat-bench --bin lambda-startup
  exec "$ROOT/target/release/lambda-startup" --lambda-dir "$ROOT/target/lambda" "${@:2}"
  ;;
audio)
  cargo build --release --locked -p audio-transcriptions -p chat-bench
  "$ROOT/scripts/setup.sh" >/dev/null
  clips="$E2E_DIR/bench-audio"
  if [ ! -f "$clips/done" ]; then
    log "60 s clips in every accepted format (espeak-ng, ffmpeg)"
    mkdir -p "$clips"
    ff() { ffmpeg -nostdin -v error -y "$@"; }
    espeak-ng -s 150 -w "$clips/sentence.wav" \
      "The quick brown fox jumps over the lazy dog. Speech recognition test, one two three."
    ff -stream_loop -1 -i "$clips/sentence.wav" -t 60 "$clips/clip.wav"
    ff -i "$clips/sentence.wav" -t 1 "$clips/warm.wav"
    ff -i "$clips/clip.wav" -c:a libmp3lame -b:a 128k "$clips/clip.mp3"
    ff -i "$clips/clip.wav" -c:a aac -b:a 128k "$clips/clip.m4a"
    ff -i "$clips/clip.wav" -c:a libvorbis "$clips/clip.ogg"
    ff -i "$clips/clip.wav" -c:a libopus -b:a 48k -f ogg "$clips/clip.opus.ogg"
    ff -i "$clips/clip.wav" -c:a flac "$clips/clip.flac"
    ff -i "$clips/clip.wav" -c:a libopus -b:a 48k -f webm "$clips/clip.webm"
    ff -i "$clips/clip.wav" -ac 2 -ar 48000 -c:a libopus -b:a 64k -f webm "$clips/clip.stereo48k.webm"
    touch "$clips/done"
  fi
  exec "$ROOT/target/release/audio-bench" --gateway-bin "$ROOT/target/release/audio-transcriptions" --clips "$clips" "${@:2}"
  ;;
esac
cargo build --release --locked -p chat-completions -p chat-bench
case ${1:-} in
memory)
  # `scripts/bench.sh memory messages` (or responses): the same bodies in that door's dialect.
  door=${2:-chat}
  bin=chat-completions
  [[ $door == chat ]] || { bin=$door && cargo build --release --locked -p "$door"; }
  exec "$ROOT/target/release/request-memory" --gateway-bin "$ROOT/target/release/$bin" --door "$door"
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
