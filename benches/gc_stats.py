"""Cyclic-GC collections and GC time inside a micro.py row's timed region, per loop.

Role: on the task-heavy rows (tasks_sleep0, gather, the sleep rows) a quarter of the CPU time is
CPython's cyclic GC, and how often it runs depends on each loop's allocations: every
GC-capable object allocated counts towards gen-0's threshold (700), tracked or not, and a handle
that is asyncio's own `Handle`/`TimerHandle` (a Python class with `__slots__`) is one, where a
loop with native handle objects (rloop) allocates none. Callgrind counts instructions and
cachegrind simulates a cache a few MiB large, both at callgrind's small N: neither shows a
100k-task heap walked by full collections. This prints, per loop, the collections of each
generation inside the timed region (deterministic for a given row, N and seed), the thread CPU
time spent inside them and the region's CPU time (noisy: medians of interleaved rounds).

Invariants:
- The row's body is micro.py's own (same checks); counting starts after its Stopwatch's
  `gc.collect()` + `gc.freeze()` and ends when the Stopwatch stops.
- One fresh process per sample, loops interleaved per round, as micro.py does.

Usage: python benches/gc_stats.py ROW[,ROW...] [LOOP[,LOOP...]] [--rounds R] [--n N]
  e.g. .venv/3.11/bin/python benches/gc_stats.py tasks_sleep0,gather,sleep_100k oxloop,rloop
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import micro  # noqa: E402  (needs HERE on sys.path)


def child(row: str, loop_name: str, n: int, seed: int) -> int:
    loop = micro.make_loop(loop_name)
    asyncio.set_event_loop(loop)
    counting = False
    started = 0.0
    spent = [0.0, 0.0, 0.0]
    runs = [0, 0, 0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if not counting:
            return
        if phase == "start":
            started = time.thread_time()
        else:
            spent[info["generation"]] += time.thread_time() - started
            runs[info["generation"]] += 1

    enter, leave = micro.Stopwatch.__enter__, micro.Stopwatch.__exit__

    def start(sw: micro.Stopwatch) -> micro.Stopwatch:
        nonlocal counting
        enter(sw)  # its gc.collect() and gc.freeze() are set-up, not counted
        counting = True
        return sw

    def stop(sw: micro.Stopwatch, *exc: object) -> None:
        nonlocal counting
        counting = False
        leave(sw, *exc)

    micro.Stopwatch.__enter__ = start  # type: ignore[method-assign]
    micro.Stopwatch.__exit__ = stop  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    try:
        result = micro.ROWS[row].body(loop, n, seed)
    finally:
        loop.close()
    print(json.dumps({"cpu": result["cpu"], "gc_s": spent, "collections": runs}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", help="comma-separated micro.py rows")
    ap.add_argument("loops", nargs="?", default="oxloop,rloop", help="comma-separated loops")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, help="override the row's N")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        row, loop_name = args.child
        return child(row, loop_name, args.n or micro.ROWS[row].n, args.seed)
    rows = micro.parse_list(args.rows, tuple(micro.ROWS), "row")
    loops = micro.parse_list(args.loops, micro.LOOPS, "loop")
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for row in rows:
            n = args.n or micro.ROWS[row].n
            for loop in loops:
                cmd = [sys.executable, os.path.abspath(__file__), row, "--child", row, loop]
                cmd += ["--n", str(n), "--seed", str(args.seed)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"{row} on {loop}: {proc.stderr.strip()[-500:]}")
                samples.setdefault((row, loop), []).append(json.loads(proc.stdout.splitlines()[-1]))
    print(f"medians of {args.rounds} interleaved rounds; collections: gen0/gen1/gen2 in the region")
    print(f"{'row':<14}{'loop':<9}{'collections':>18}{'gc s (0+1, 2)':>18}{'gc s':>8}{'cpu s':>8}")
    for (row, loop), ss in samples.items():
        cols = "/".join(str(c) for c in ss[0]["collections"])
        young = statistics.median(s["gc_s"][0] + s["gc_s"][1] for s in ss)
        full = statistics.median(s["gc_s"][2] for s in ss)
        total = statistics.median(sum(s["gc_s"]) for s in ss)
        cpu = statistics.median(s["cpu"] for s in ss)
        print(f"{row:<14}{loop:<9}{cols:>18}{young:>9.3f}{full:>9.3f}{total:>8.3f}{cpu:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
