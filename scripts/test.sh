#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian/Ubuntu machine, then runs all of them:
# formatting, lints, unit and integration tests (the real binary over HTTP against mock
# providers), and the official openai Python SDK driving the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cc >/dev/null || missing+=(build-essential)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust first (https://rustup.rs), then run this again" >&2
  exit 1
fi

echo "==> Python venv with the openai SDK (.venv-test)"
[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test"
SWITCHYARD_TEST_PYTHON="$PWD/.venv-test/bin/python" cargo test
