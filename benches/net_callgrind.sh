#!/bin/bash
# User-space instructions per echo message of one server, counted by callgrind.
#
# Role: the CPU time per message in benches/net.py is mostly the kernel's and moves 10-30 %
# between runs on a shared machine; this counts what the server process itself executes. The
# server (benches/net.py --server KIND LOOP, or the pure-Rust floor) runs under
# `valgrind --tool=callgrind` while the Rust client sends M and then 2M 1 KiB messages over 10
# connections; (I(2M) - I(M)) / M is the cost of one more message, start-up cancelled out.
#
# Usage: benches/net_callgrind.sh KIND LOOP [M]     KIND: protocol|buffered|streams|sock
#   e.g. benches/net_callgrind.sh protocol oxloop; benches/net_callgrind.sh protocol floor
# Environment: FAMILY=unix serves on a Unix socket (default tcp); CONNS and SIZE set the
# client's connections (10) and message size (1024); TOP=N also prints the N
# functions whose self cost grew most between M and 2M, per message.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1 loop=$2 m=${3:-20000}
family=${FAMILY:-tcp} conns=${CONNS:-10} size=${SIZE:-1024}
py=${PYTHON:-.venv/3.11/bin/python}
netfloor=benches/net/floor/target/release/netfloor
[ -x "$netfloor" ] || cargo build -q --release --manifest-path benches/net/floor/Cargo.toml
out_dir=benches/results/callgrind
mkdir -p "$out_dir"

count() {  # count N -> total instructions of a server that echoed N messages
    local n=$1 out="$out_dir/net.$kind.$loop.$family.$1.out" log listen
    log=$(mktemp)
    if [ "$family" = unix ]; then
        listen="unix:$(mktemp -u /tmp/oxloop-cg.XXXXXX.sock)"
    else
        listen=tcp:127.0.0.1:0
    fi
    if [ "$loop" = floor ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$netfloor" echo-server \
            "$listen" >"$log" 2>/dev/null &
    else
        PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out" "$py" \
            benches/net.py --server "$kind" "$loop" "$listen" >"$log" 2>/dev/null &
    fi
    local pid=$!
    for _ in $(seq 600); do grep -q '^ready' "$log" && break; sleep 0.1; done
    local addr
    addr=$(awk '/^ready/{print $2}' "$log")
    "$netfloor" client "$addr" --conns "$conns" --size "$size" --messages "$n" --warmup 0 >/dev/null
    # SIGTERM, not SIGINT: a shell's background job may have SIGINT ignored; callgrind writes
    # its profile either way.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    [ "$family" = unix ] && rm -f "${listen#unix:}"
    awk '/^(summary|totals):/{print $2; exit}' "$out"
}

a=$(count "$m")
b=$(count $((2 * m)))
echo "$kind echo on $loop ($family): $(((b - a) / m)) user-space instructions per message"
if [ -n "${TOP:-}" ]; then
    # Self cost per function in each profile; print the largest per-message differences.
    "$py" - "$out_dir/net.$kind.$loop.$family" "$m" "$TOP" <<'PY'
import re, subprocess, sys
stem, m, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = re.compile(r"^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(?!=>)(.+?)(?: \[.*\])?$")
def self_cost(n):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", f"{stem}.{n}.out"],
                         capture_output=True, text=True).stdout
    cost = {}
    for text in out.splitlines():
        if (hit := line.match(text)) and hit[2] != "PROGRAM TOTALS":
            cost[hit[2]] = cost.get(hit[2], 0) + int(hit[1].replace(",", ""))
    return cost
a, b = self_cost(m), self_cost(2 * m)
for name, d in sorted(((k, v - a.get(k, 0)) for k, v in b.items()), key=lambda x: -x[1])[:top]:
    print(f"{d / m:8.0f}  {name.split('/')[-1]}")
PY
fi
