#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian/Ubuntu machine, then runs all of them:
# formatting, lints, unit and integration tests (the real binary over HTTP against mock
# providers, real Redis and PostgreSQL servers started here on their own ports), the
# official openai Python SDK driving the gateway, and a quick run of the benchmark
# harness (so it cannot rot; it fails on any non-2xx from switchyard).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v pgrep >/dev/null || missing+=(procps)
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

. scripts/services.sh
trap stop_test_services EXIT

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
log=$(mktemp)
SWITCHYARD_TEST_PYTHON="$PWD/.venv-test/bin/python" cargo test 2>&1 | tee "$log"
echo "==> load-tests/run.sh --quick"
load-tests/run.sh --quick
# One closing line for every test run above (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
