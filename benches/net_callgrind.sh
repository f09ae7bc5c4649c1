#!/bin/bash
# User-space instructions per echo message of one server, counted by callgrind.
#
# Role: the CPU time per message in benches/net.py is mostly the kernel's and moves 10-30 %
# between runs on a shared machine; this counts what the server process itself executes. The
# server (benches/net.py --server KIND LOOP, or the pure-Rust floor) runs under
# `valgrind --tool=callgrind` while the Rust client sends M and then 2M 1 KiB messages over 10
# connections; (I(2M) - I(M)) / M is the cost of one more message, start-up cancelled out.
#
# KIND http is the HTTP server of net.py's http rows, driven by wrk (50 connections, one
# thread, PIPELINE requests per write, default 16) for M and then 2M seconds (M defaults to 5
# there); the count is per response, (I(2M) - I(M)) / (R(2M) - R(M)).
#
# KIND churn-protocol / churn-streams is net.py's connection-churn row: the echo server of that
# kind, and the client in --churn mode (10 workers, each connecting, echoing one 32-byte message
# and closing; M defaults to 5000 there): the count is per connection.
#
# Usage: benches/net_callgrind.sh KIND LOOP [M]
#   KIND: protocol|buffered|streams|sock|http|churn-protocol|churn-streams
#   e.g. benches/net_callgrind.sh protocol oxloop; benches/net_callgrind.sh protocol floor
# Environment: FAMILY=unix serves on a Unix socket (default tcp; not for http); CONNS and SIZE
# set the echo client's connections (10) and message size (1024); PIPELINE the requests per
# wrk write (1 = no pipelining); TOP=N also prints the N functions whose self cost grew most
# between M and 2M, per message.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1 loop=$2
serve_kind=$kind churn=
case $kind in
http) m=${3:-5} ;;
churn-*) m=${3:-5000} serve_kind=${kind#churn-} churn=--churn ;;
*) m=${3:-20000} ;;
esac
family=${FAMILY:-tcp} conns=${CONNS:-10} pipeline=${PIPELINE:-16}
size=${SIZE:-$([ -n "$churn" ] && echo 32 || echo 1024)}
py=${PYTHON:-.venv/3.11/bin/python}
netfloor=benches/net/floor/target/release/netfloor
[ -x "$netfloor" ] || cargo build -q --release --manifest-path benches/net/floor/Cargo.toml
out_dir=benches/results/callgrind
mkdir -p "$out_dir"

count() {  # count N -> "MESSAGES INSTRUCTIONS" of a server sent N messages (http: N seconds)
    local n=$1 out="$out_dir/net.$kind.$loop.$family.$1.out" log listen
    log=$(mktemp)
    if [ "$family" = unix ]; then
        listen="unix:$(mktemp -u /tmp/oxloop-cg.XXXXXX.sock)"
    else
        listen=tcp:127.0.0.1:0
    fi
    if [ "$loop" = floor ]; then
        local serve=echo-server
        [ "$kind" = http ] && serve=http-server
        valgrind --tool=callgrind --callgrind-out-file="$out" "$netfloor" "$serve" \
            "$listen" >"$log" 2>/dev/null &
    else
        PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out" "$py" \
            benches/net.py --server "$serve_kind" "$loop" "$listen" >"$log" 2>/dev/null &
    fi
    local pid=$!
    for _ in $(seq 600); do grep -q '^ready' "$log" && break; sleep 0.1; done
    local addr
    addr=$(awk '/^ready/{print $2}' "$log")
    local done=$n
    if [ "$kind" = http ]; then
        # wrk's scripts/pipeline.lua: PIPELINE GETs in one write.
        local lua="$out_dir/pipeline.lua"
        printf 'init = function(args)\n  local r = {}\n  for i = 1, %d do r[i] = wrk.format(nil, "/") end\n  req = table.concat(r)\nend\nrequest = function() return req end\n' \
            "$pipeline" >"$lua"
        done=$(wrk -t 1 -c 50 -d "${n}s" -s "$lua" "http://${addr#tcp:}/" |
            awk '/requests in/{print $1}')
    else
        "$netfloor" client "$addr" --conns "$conns" --size "$size" --messages "$n" --warmup 0 \
            ${churn:+"$churn"} >/dev/null
    fi
    # SIGTERM, not SIGINT: a shell's background job may have SIGINT ignored; callgrind writes
    # its profile either way.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    [ "$family" = unix ] && rm -f "${listen#unix:}"
    echo "$done $(awk '/^(summary|totals):/{print $2; exit}' "$out")"
}

read -r ma a < <(count "$m")
read -r mb b < <(count $((2 * m)))
per=$((mb - ma))
unit=message
[ -n "$churn" ] && unit=connection
echo "$kind on $loop ($family): $(((b - a) / per)) user-space instructions per $unit"
if [ -n "${TOP:-}" ]; then
    # Self cost per function in each profile; print the largest per-message differences.
    "$py" - "$out_dir/net.$kind.$loop.$family" "$m" "$per" "$TOP" <<'PY'
import re, subprocess, sys
stem, m, per, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
line = re.compile(r"^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(?!=>)(.+?)(?: \[.*\])?$")
def self_cost(n):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", f"{stem}.{n}.out"],
                         capture_output=True, text=True).stdout
    cost = {}
    for text in out.splitlines():
        if (hit := line.match(text)) and hit[2] != "PROGRAM TOTALS":
            cost[hit[2]] = cost.get(hit[2], 0) + int(hit[1].replace(",", ""))
    return cost
a, b = self_cost(m), self_cost(2 * m)
for name, d in sorted(((k, v - a.get(k, 0)) for k, v in b.items()), key=lambda x: -x[1])[:top]:
    print(f"{d / per:8.0f}  {name.split('/')[-1]}")
PY
fi
