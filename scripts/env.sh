# Sourced by every script: one place for paths, ports and the quiet, local AWS setup.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export VENV="$ROOT/.venv"
# LiteLLM pins an older openai SDK: it lives in a virtualenv of its own.
export LITELLM_VENV="$ROOT/.venv-litellm"
export E2E_DIR="$ROOT/.e2e"
export SIM_ADDR="${SIM_ADDR:-127.0.0.1:18080}"
export LAMBDA_PORT="${LAMBDA_PORT:-9000}"
export GATEWAY_URL="http://127.0.0.1:${LAMBDA_PORT}"
export MOTO_PORT="${MOTO_PORT:-5055}"
export MOTO_URL="http://127.0.0.1:${MOTO_PORT}"
export SIM_URL="http://${SIM_ADDR}"
export AGENT_SIM_ADDR="${AGENT_SIM_ADDR:-127.0.0.1:18081}"
export AGENT_SIM_URL="http://${AGENT_SIM_ADDR}"
export CODE_SIM_ADDR="${CODE_SIM_ADDR:-127.0.0.1:18082}"
export CODE_SIM_URL="http://${CODE_SIM_ADDR}"
export API_SIM_ADDR="${API_SIM_ADDR:-127.0.0.1:18083}"
export API_SIM_URL="http://${API_SIM_ADDR}"
# AWS tooling stays local and quiet: never the instance metadata endpoint.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="$AWS_REGION"
export SAM_CLI_TELEMETRY=0
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$VENV/bin:$HOME/.cargo/bin:$PATH"

log() { printf '\n==> %s\n' "$*" >&2; }

# Wait until an HTTP endpoint answers (any status), or fail after $2 seconds.
wait_http() {
  local url=$1 secs=${2:-60} i
  for ((i = 0; i < secs * 4; i++)); do
    if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
    sleep 0.25
  done
  echo "timed out waiting for $url" >&2
  return 1
}
