#!/usr/bin/env bash
# Shared helpers for the Makefile: find an interpreter, make its venv, build oxloop into it.
# Usage: scripts/env.sh build 3.11   -> prints the venv's python after building oxloop into it.
set -euo pipefail
cd "$(dirname "$0")/.."

# VERSION is 3.X, or 3.Xd for that version's debug build (Debian's python3.X-dbg: python3.Xd).
# A native interpreter (pyenv's, or python3.X on PATH) comes first; for 3.14 and later, one in the
# Debian sid chroot of scripts/sid.sh is used where the machine has none, printed as sid:PATH.
find_native() {
  local v=$1 c
  for c in /root/.pyenv/versions/"$v".*/bin/python"$v" "$(command -v "python$v" 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

find_python() {
  find_native "$1" && return 0
  if scripts/sid.sh has "$1" 2>/dev/null; then echo "sid:/usr/bin/python$1"; return 0; fi
  return 1
}

# provision 3.14 3.15: make each version available, natively if the machine has it, else in the
# sid chroot (scripts/sid.sh setup; fails if a version cannot be set up there).
provision() {
  local need="" v
  for v in "$@"; do
    find_native "$v" >/dev/null || need="$need $v"
  done
  [ -z "$need" ] && return 0
  # shellcheck disable=SC2086
  scripts/sid.sh setup $need
}

# The versions of the list that can be tested here; says on stderr which are skipped.
available() {
  local v have=""
  for v in "$@"; do
    if find_python "$v" >/dev/null; then have="$have $v"; else echo "env: python$v not found; skipping it" >&2; fi
  done
  echo $have
}

# The command that runs a venv's python from here: the venv's own, or for a venv made inside the
# chroot, a wrapper (.venv/3.X.sh) that enters the chroot first (same paths inside and out).
host_python() {
  local v=$1
  if [ -f ".venv/$v/.in-sid" ]; then
    printf '#!/bin/sh\nexec "%s/scripts/sid.sh" run "%s/.venv/%s/bin/python" "$@"\n' \
      "$PWD" "$PWD" "$v" >".venv/$v.sh"
    chmod +x ".venv/$v.sh"
    echo "$PWD/.venv/$v.sh"
  else
    echo "$PWD/.venv/$v/bin/python"
  fi
}

venv() {
  local v=$1 py run="" lock
  # One venv per version, made and filled by whichever job asks first: `make test`'s matrix runs
  # jobs side by side (scripts/matrix.sh), and two of them may need the same version's venv
  # (test-one:3.13 and memcheck-ci). The lock makes the second wait for the first's pip.
  mkdir -p .venv
  exec {lock}>".venv/.$v.lock"
  flock "$lock"
  if [ ! -x ".venv/$v/bin/python" ] && [ ! -f ".venv/$v/.in-sid" ]; then
    py=$(find_python "$v") || { echo "python$v not found" >&2; return 1; }
    case $py in
      sid:*) scripts/sid.sh run "${py#sid:}" -m venv ".venv/$v" >&2; touch ".venv/$v/.in-sid" ;;
      *) "$py" -m venv ".venv/$v" >&2 ;;
    esac
  fi
  [ -f ".venv/$v/.in-sid" ] && run="scripts/sid.sh run"
  if [ ! -f ".venv/$v/.deps-ok" ] || [ requirements-dev.txt -nt ".venv/$v/.deps-ok" ] \
    || [ requirements-integration.txt -nt ".venv/$v/.deps-ok" ]; then
    $run ".venv/$v/bin/python" -m pip install -q --upgrade pip >&2
    $run ".venv/$v/bin/python" -m pip install -q -r requirements-dev.txt >&2
    # requirements-integration.txt: the real clients and servers tests/integration/ talks to.
    # On 3.14+ only as wheels: a package that would build from source there is left out (its
    # tests skip), so a new interpreter's venv never compiles C extensions.
    case $v in
      3.1[0-3]) $run ".venv/$v/bin/python" -m pip install -q -r requirements-integration.txt >&2 ;;
      # A debug build loads wheels built for the release build, and some of those crash there
      # (aiohttp's multidict segfaults on 3.14d, on stock asyncio as on oxloop): what runs on
      # the debug build is oxloop's own suite, so its tests/integration/ skips there.
      *d) echo "env: python$v: a debug build; integration packages not installed" >&2 ;;
      *) $run ".venv/$v/bin/python" -m pip install -q --only-binary :all: \
          -r requirements-integration.txt >&2 \
          || echo "env: python$v: integration packages not all available as wheels; skipped" >&2 ;;
    esac
    touch ".venv/$v/.deps-ok"
  fi
  exec {lock}>&-
  host_python "$v"
}

build() {
  local v=$1 py run=""
  py=$(venv "$v")
  [ -f ".venv/$v/.in-sid" ] && run="scripts/sid.sh run"
  $run /usr/bin/env VIRTUAL_ENV="$PWD/.venv/$v" CARGO_TARGET_DIR="target/py$v" \
    ".venv/$v/bin/maturin" develop --release -q ${CARGO_FEATURES:+--features "$CARGO_FEATURES"} >&2
  echo "$py"
}

# memcheck 3.11: oxloop built with Cargo.toml's memcheck profile (release code with line tables,
# for valgrind's stacks) into target/memcheck/py3.X and unpacked there in site/; prints the venv's
# python and that directory. First on PYTHONPATH, the directory shadows the release build, which
# maturin develop keeps in python/oxloop for the tests and benchmarks and which stays untouched.
# Native interpreters only: valgrind runs on the host.
memcheck() {
  local v=$1 py dir
  py=$(venv "$v")
  [ -f ".venv/$v/.in-sid" ] && { echo "memcheck: python$v is not native" >&2; return 1; }
  dir="target/memcheck/py$v"
  rm -rf "$dir/wheels" "$dir/site"
  CARGO_TARGET_DIR="$dir" ".venv/$v/bin/maturin" build -q --profile memcheck \
    -i ".venv/$v/bin/python" -o "$dir/wheels" >&2
  ".venv/$v/bin/python" -m zipfile -e "$dir"/wheels/oxloop-*.whl "$dir/site"
  echo "$py $PWD/$dir/site"
}

"$@"
