#!/usr/bin/env bash
# Shared helpers for the Makefile: find an interpreter, make its venv, build oxloop into it.
# Usage: scripts/env.sh build 3.11   -> prints the venv's python after building oxloop into it.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local v=$1 c
  for c in /root/.pyenv/versions/"$v".*/bin/python"$v" "$(command -v "python$v" 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

venv() {
  local v=$1 py
  if [ ! -x ".venv/$v/bin/python" ]; then
    py=$(find_python "$v") || { echo "python$v not found" >&2; return 1; }
    "$py" -m venv ".venv/$v" >&2
  fi
  if [ ! -f ".venv/$v/.deps-ok" ] || [ requirements-dev.txt -nt ".venv/$v/.deps-ok" ] \
    || [ requirements-integration.txt -nt ".venv/$v/.deps-ok" ]; then
    ".venv/$v/bin/python" -m pip install -q --upgrade pip >&2
    # requirements-integration.txt: what tests/integration/ and the TLS tests talk to.
    ".venv/$v/bin/python" -m pip install -q -r requirements-dev.txt \
      -r requirements-integration.txt >&2
    touch ".venv/$v/.deps-ok"
  fi
  echo "$PWD/.venv/$v/bin/python"
}

build() {
  local v=$1 py
  py=$(venv "$v")
  VIRTUAL_ENV="$PWD/.venv/$v" CARGO_TARGET_DIR="target/py$v" \
    ".venv/$v/bin/maturin" develop --release -q ${CARGO_FEATURES:+--features "$CARGO_FEATURES"} >&2
  echo "$py"
}

"$@"
