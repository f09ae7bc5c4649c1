#!/usr/bin/env bash
# Runs `make test`'s per-interpreter jobs JOBS at a time, each into its own log, and prints each
# log whole when its job ends (never interleaved), then a summary; exits 1 if any job failed.
# Usage: scripts/matrix.sh JOBS ITEM...   where ITEM is a make target, or TARGET:VERSION for
# `make TARGET PY=VERSION` (e.g. test-debug test-one:3.10 test-one:3.11).
#
# Why: each interpreter's pytest run and conformance run are independent processes with their
# own venv, build dir (target/py3.X), extension file (python/oxloop/_oxloop.cpython-3X*.so) and
# conformance log dir, and a single one leaves a 2-core machine's second core mostly idle (two
# 3.13 suites side by side took 563 s each, against about 430 s each one after the other). Items
# start in the order given, so the longest (the debug build) goes first.
#
# Job control (set -m) starts each job in its own process group with SIGINT at its default: a
# background job of a non-interactive shell would otherwise inherit SIGINT ignored, which the
# Ctrl-C tests (and test.test_asyncio's) need. So a Ctrl-C here is passed on by the trap below.
set -uo pipefail
set -m
cd "$(dirname "$0")/.."
jobs=$1
shift
logs=target/test-logs
mkdir -p "$logs"
declare -A item_of=() start_of=()
failed=()
summary=()

log_of() { echo "$logs/${1//:/-}.log"; }

start() {
  local item=$1 target=${1%%:*} log
  log=$(log_of "$item")
  if [ "$target" = "$item" ]; then
    "${MAKE:-make}" --no-print-directory "$target" >"$log" 2>&1 &
  else
    "${MAKE:-make}" --no-print-directory "$target" PY="${item#*:}" >"$log" 2>&1 &
  fi
  item_of[$!]=$item
  start_of[$!]=$(date +%s)
  echo "matrix: started $item (log: $log)"
}

finish() {
  local pid=$1 rc=$2 item=${item_of[$1]} took line
  took=$(($(date +%s) - ${start_of[$1]}))
  unset "item_of[$pid]"
  if [ "$rc" = 0 ]; then line="$item: ok in $took s"; else line="$item: FAILED (exit $rc) in $took s"; failed+=("$item"); fi
  summary+=("$line")
  echo "==================== $line ===================="
  cat "$(log_of "$item")"
  echo "==================== end of $item ===================="
}

stop_all() {
  local pid
  for pid in "${!item_of[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  wait
  echo "matrix: interrupted" >&2
  exit 130
}
trap stop_all INT TERM

reap() {
  local pid rc
  wait -n -p pid
  rc=$?
  [ -n "${pid:-}" ] && finish "$pid" "$rc"
}

for item in "$@"; do
  while [ "${#item_of[@]}" -ge "$jobs" ]; do reap; done
  start "$item"
done
while [ "${#item_of[@]}" -gt 0 ]; do reap; done

echo "matrix: $jobs at a time"
printf '  %s\n' "${summary[@]}"
[ "${#failed[@]}" -eq 0 ] || { echo "matrix: failed: ${failed[*]}" >&2; exit 1; }
