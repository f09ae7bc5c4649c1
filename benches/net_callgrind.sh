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
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1 loop=$2 m=${3:-20000}
py=${PYTHON:-.venv/3.11/bin/python}
netfloor=benches/net/floor/target/release/netfloor
[ -x "$netfloor" ] || cargo build -q --release --manifest-path benches/net/floor/Cargo.toml
out_dir=benches/results/callgrind
mkdir -p "$out_dir"

count() {  # count N -> total instructions of a server that echoed N messages
    local n=$1 out="$out_dir/net.$kind.$loop.$1.out" log
    log=$(mktemp)
    if [ "$loop" = floor ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$netfloor" echo-server \
            tcp:127.0.0.1:0 >"$log" 2>/dev/null &
    else
        PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out" "$py" \
            benches/net.py --server "$kind" "$loop" tcp:127.0.0.1:0 >"$log" 2>/dev/null &
    fi
    local pid=$!
    for _ in $(seq 600); do grep -q '^ready' "$log" && break; sleep 0.1; done
    local addr
    addr=$(awk '/^ready/{print $2}' "$log")
    "$netfloor" client "$addr" --conns 10 --size 1024 --messages "$n" --warmup 0 >/dev/null
    # SIGTERM, not SIGINT: a shell's background job may have SIGINT ignored; callgrind writes
    # its profile either way.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    awk '/^(summary|totals):/{print $2; exit}' "$out"
}

a=$(count "$m")
b=$(count $((2 * m)))
echo "$kind echo on $loop: $(((b - a) / m)) user-space instructions per message"
