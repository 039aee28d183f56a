#!/usr/bin/env bash
# Runs every meshql test on a fresh machine. It installs what is missing (a fast linker
# and PostgreSQL from apt, an S3-compatible server from PyPI in a venv), starts the S3 server on
# loopback, checks formatting and lints, and runs the one integration-test binary plus
# the unit tests. Build output goes to $CARGO_TARGET_DIR (default ~/.cache/meshql/target)
# so that a fresh clone reuses an earlier build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# openssl makes the TLS test's certificate; the federation tests start their own
# PostgreSQL clusters (in temp dirs, on free loopback ports) from the server binaries.
APT=()
command -v openssl >/dev/null 2>&1 || APT+=(openssl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || APT+=(postgresql)
command -v psql >/dev/null 2>&1 || APT+=(postgresql-client)
if [ ${#APT[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "== apt-get install ${APT[*]}"
  $SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT[@]}" >/dev/null
fi

# A Python venv with the S3 server (moto) and the real Flight SQL clients (pinned).
VENV="${MESHQL_VENV:-$HOME/.cache/meshql/venv}"
REQUIREMENTS=tests/python/requirements.txt
if ! cmp -s "$REQUIREMENTS" "$VENV/.meshql-requirements" 2>/dev/null; then
  echo "== setting up $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/.meshql-requirements"
fi

# The S3 server on a free loopback port, stopped when this script exits.
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
S3_LOG=$(mktemp -t meshql-moto.XXXXXX.log)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$S3_LOG" 2>&1 &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null; then break; fi
  if ! kill -0 "$S3_PID" 2>/dev/null; then echo "moto_server died:"; cat "$S3_LOG"; exit 1; fi
  sleep 0.2
done
export MESHQL_TEST_S3_ENDPOINT="http://127.0.0.1:$PORT"
echo "== S3 server (moto) at $MESHQL_TEST_S3_ENDPOINT"
# ROAPI, a Flight SQL server that is not meshql, for the federation tests.
export MESHQL_TEST_ROAPI="$VENV/bin/roapi"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
$LINK cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
TEST_LOG=$(mktemp -t meshql-test.XXXXXX.log)
set +e
$LINK cargo test --workspace --all-targets "$@" 2>&1 | tee "$TEST_LOG"
status=${PIPESTATUS[0]}
set -e

echo "== Python clients (ADBC) against meshql serve"
set +e
MESHQL_BIN="$CARGO_TARGET_DIR/debug/meshql" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python 2>&1 | tee -a "$TEST_LOG"
py_status=${PIPESTATUS[0]}
set -e

# One closing line over every test binary and pytest.
passed=$(grep -oE '([0-9]+) passed' "$TEST_LOG" | awk '{s+=$1} END {print s+0}')
failed=$(grep -oE '([0-9]+) failed' "$TEST_LOG" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
if [ "$status" -ne 0 ]; then exit "$status"; fi
exit "$py_status"
