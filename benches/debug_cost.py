"""What debug mode (`loop.set_debug(True)`, PYTHONASYNCIODEBUG=1) costs on each loop.

Role: the figures behind docs/migrating.md's "debug mode" row. Debug mode makes every loop
record a source traceback per handle and check the calling thread; oxloop then runs asyncio's
own Python debug paths instead of its Rust fast paths, so its debug mode costs more than
uvloop's. Two bodies, each with debug off and on: 100k `call_soon` callbacks, and 10k tasks
each doing `await asyncio.sleep(0)` ten times.

Invariants: every sample is a fresh interpreter; loops and debug settings are interleaved
within each round; the figure is the median over rounds of `time.process_time()` around the
body only; slow-callback warnings are silenced (slow_callback_duration raised) so logging is
not what is measured.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

LOOPS = ("asyncio", "uvloop", "oxloop")

_CHILD = r"""
import asyncio, sys, time
name, debug = sys.argv[1], sys.argv[2] == "1"
if name == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
elif name == "oxloop":
    import oxloop
    loop = oxloop.new_event_loop()
else:
    loop = asyncio.SelectorEventLoop()
loop.set_debug(debug)
loop.slow_callback_duration = 1e6
N = 100_000
calls = 0

def cb():
    global calls
    calls += 1

async def worker():
    for _ in range(10):
        await asyncio.sleep(0)

async def main():
    t = time.process_time()
    for _ in range(N):
        loop.call_soon(cb)
    await asyncio.sleep(0)
    soon = time.process_time() - t
    t = time.process_time()
    await asyncio.gather(*(worker() for _ in range(N // 10)))
    tasks = time.process_time() - t
    if calls != N:
        raise SystemExit(f"{calls} callbacks ran, not {N}")
    return soon, tasks

print(*loop.run_until_complete(main()))
loop.close()
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loops", default=",".join(LOOPS))
    args = ap.parse_args(argv)
    loops = [name for name in args.loops.split(",") if name]
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    failed: set[str] = set()
    for _ in range(args.rounds):
        for name in loops:
            for debug in ("0", "1"):
                if name in failed:
                    continue
                proc = subprocess.run(
                    [sys.executable, "-c", _CHILD, name, debug], capture_output=True, text=True
                )
                if proc.returncode != 0:
                    failed.add(name)
                    continue
                soon, tasks = map(float, proc.stdout.split())
                samples.setdefault((name, debug), []).append((soon, tasks))
    print(f"CPU ms, median of {args.rounds} fresh interpreters; Python {sys.version.split()[0]}")
    print(f"{'loop':<9}{'debug':>6}{'call_soon 100k':>16}{'10k tasks x10 sleep(0)':>24}")
    for name in loops:
        if name in failed:
            print(f"{name:<9}{'n/a':>6}")
            continue
        for debug in ("0", "1"):
            cell = samples[(name, debug)]
            soon = statistics.median(s for s, _ in cell) * 1e3
            tasks = statistics.median(t for _, t in cell) * 1e3
            print(f"{name:<9}{'on' if debug == '1' else 'off':>6}{soon:>16.0f}{tasks:>24.0f}")
    return 1 if "oxloop" in failed else 0


if __name__ == "__main__":
    sys.exit(main())
