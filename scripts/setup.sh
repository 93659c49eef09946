#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine: Debian packages,
# Rust components, the Python tools (in .venv) and the npm SDK. Idempotent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
# cmake builds libopus (Opus decoding); ffmpeg and espeak-ng make the audio fixtures.
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
# nghttpx and openssl: the TLS + HTTP/2 front the transport test puts before the simulator.
command -v nghttpx >/dev/null || need_apt+=(nghttp2-proxy)
command -v openssl >/dev/null || need_apt+=(openssl)
# Chromium, headless: the operator's page (/admin) is checked in a real browser.
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
  # The self-hosted server's static build (the binary the Dockerfile ships).
  rustup target list --installed | grep -q '^x86_64-unknown-linux-musl$' || rustup target add x86_64-unknown-linux-musl
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo install cargo-nextest"
  cargo install --locked cargo-nextest
fi

stamp="$VENV/.requirements"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s tests/e2e/requirements.txt "$stamp"; then
  log "python venv (.venv): $(tr '\n' ' ' < tests/e2e/requirements.txt | sed 's/#[^ ]* //g')"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/e2e/requirements.txt
  cp tests/e2e/requirements.txt "$stamp"
fi

stamp="$LITELLM_VENV/.requirements"
if [ ! -x "$LITELLM_VENV/bin/python" ] || ! cmp -s tests/e2e/litellm/requirements.txt "$stamp"; then
  log "python venv (.venv-litellm): $(grep -v '^#' tests/e2e/litellm/requirements.txt | tr '\n' ' ')"
  python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check -r tests/e2e/litellm/requirements.txt
  cp tests/e2e/litellm/requirements.txt "$stamp"
fi

if [ ! -d tests/e2e/node/node_modules ] || [ tests/e2e/node/package-lock.json -nt tests/e2e/node/node_modules ]; then
  log "npm ci (tests/e2e/node)"
  (cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error)
fi
# The coding agents the end-to-end tests run headless (Claude Code, Codex):
# pinned, from the npm registry, native binaries included.
if [ ! -d tests/e2e/agents/node_modules ] || [ tests/e2e/agents/package-lock.json -nt tests/e2e/agents/node_modules ]; then
  log "npm ci (tests/e2e/agents: Claude Code, Codex)"
  (cd tests/e2e/agents && npm ci --no-audit --no-fund --loglevel=error)
fi
log "setup done"
