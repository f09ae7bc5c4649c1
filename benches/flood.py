"""Cross-thread flood: threads calling call_soon_threadsafe as fast as they can, against timers
and stop(), for oxloop beside stock asyncio, uvloop and rloop.

Role: the figures of issue 15's fairness item. A loop must keep up with the flood (calls/s) and
stay fair while it does: a `stop()` due at 0.3 s should return at 0.3 s, and timers should run
when they are due, not after the backlog the threads piled up.

One sample (a fresh process per loop and round, `--child`):
- THREADS threads call `loop.call_soon_threadsafe(tick)` in a tight loop from the moment the
  loop runs; the loop has 11 timers due every 25 ms (`call_later`, up to 0.275 s) and
  `call_later(0.3, loop.stop)`.
- Reported: `calls/s`, the callbacks the loop ran from its start to the return of
  `run_forever()`, per second of that window; `stop`, when `run_forever()` returned (0.3 s is
  perfect); `late max` / `late median`, how long after its deadline each timer ran (by
  `time.monotonic()`).
- Checked (FAIL otherwise): every timer ran; after the threads are told to stop and joined (10 s
  at most) and the loop has run what they queued, every call that returned ran exactly once;
  then, with the threads flooding again, the loop is stopped and closed under them: no callback
  runs after close, and the threads end (asyncio refuses their calls with RuntimeError; a loop
  that does not is named in the notes, and its threads are told to stop).

Invariants (as benches/micro.py, whose helpers this reuses): loops are interleaved within each
round, rounds are the outer loop, every figure is the median over rounds; a loop that cannot be
imported is n/a, never dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from micro import LOOPS, CheckFailed, check, git_rev, machine_info, make_loop, parse_list, probe

STOP_AT = 0.3
TIMER_EVERY = 0.025
TIMERS = 11
JOIN_TIMEOUT = 10.0
METRICS = (
    ("rate", "calls/s", "higher is better"),
    ("stop", "stop", f"due at {STOP_AT * 1e3:.0f} ms"),
    ("late_max", "late max", "lower is better"),
    ("late_median", "late median", "lower is better"),
)


def flood(loop_name: str, threads: int) -> dict[str, Any]:
    loop = make_loop(loop_name)
    ran = 0
    closed = False
    ran_after_close = 0

    def tick() -> None:
        nonlocal ran, ran_after_close
        ran += 1
        if closed:
            ran_after_close += 1

    made = [0] * threads
    halt = threading.Event()
    refused = [False] * threads

    def producer(i: int) -> None:
        call = loop.call_soon_threadsafe
        n = 0
        try:
            while not halt.is_set():
                call(tick)
                n += 1
        except RuntimeError:  # the loop was closed under us
            refused[i] = True
        made[i] += n

    lateness: list[float] = []

    def timer(due: float) -> None:
        lateness.append(time.monotonic() - due)

    workers: list[threading.Thread] = []

    def start(timers: bool = True) -> None:
        nonlocal t0
        t0 = time.monotonic()
        if timers:
            for k in range(1, TIMERS + 1):
                loop.call_later(k * TIMER_EVERY, timer, t0 + k * TIMER_EVERY)
            loop.call_later(STOP_AT, loop.stop)
        workers.extend(threading.Thread(target=producer, args=(i,)) for i in range(threads))
        for w in workers:
            w.start()

    def stop_workers() -> None:
        halt.set()
        for w in workers:
            w.join(JOIN_TIMEOUT)
        stuck = sum(w.is_alive() for w in workers)
        check(stuck == 0, f"{stuck} flooding threads did not end within {JOIN_TIMEOUT:.0f} s")
        workers.clear()
        halt.clear()

    t0 = 0.0
    late: list[float] = []
    not_refused = 0
    try:
        loop.call_soon(start)
        loop.run_forever()
        window = time.monotonic() - t0
        ran_in_window = ran
        stop_workers()
        # Run what the threads queued before they stopped: every accepted call runs once.
        loop.call_soon(loop.stop)
        loop.run_forever()
        check(len(lateness) == TIMERS, f"{len(lateness)} of {TIMERS} timers ran")
        check(ran == sum(made), f"{sum(made)} calls accepted, {ran} ran")
        late = list(lateness)

        # Close under a running flood: the threads must be refused, and nothing may run.
        loop.call_soon(start, False)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        loop.close()
        closed = True
        # asyncio refuses calls on a closed loop (RuntimeError); a loop that accepts them
        # must still run none of them. Threads not refused within a second are told to stop.
        deadline = time.monotonic() + 1.0
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        not_refused = sum(not r for r in refused)
        stop_workers()
        check(ran_after_close == 0, f"{ran_after_close} callbacks ran after close")
    finally:
        halt.set()
        if not loop.is_closed():
            loop.close()
    return {
        "rate": ran_in_window / window,
        "stop": window,
        "late_max": max(late),
        "late_median": statistics.median(late),
        "calls": ran_in_window,
        "not_refused": not_refused,
    }


def run_child(loop_name: str, threads: int) -> int:
    try:
        make_loop(loop_name).close()
    except Exception as exc:
        print(json.dumps({"status": "n/a", "error": f"{type(exc).__name__}: {exc}"}))
        return 2
    try:
        result = flood(loop_name, threads)
    except CheckFailed as exc:
        print(json.dumps({"status": "FAIL", "error": str(exc)}))
        return 1
    print(json.dumps({"status": "ok", **result}))
    return 0


def spawn(loop_name: str, threads: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", loop_name, str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "TIMEOUT", "error": f"no result after {timeout:.0f}s"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"status": "ERROR", "error": tail[0][:300]}


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [s for s in samples if s["status"] != "ok"]
    if bad:
        return {"status": bad[0]["status"], "error": bad[0].get("error", "")}
    out: dict[str, Any] = {"status": "ok", "not_refused": max(s["not_refused"] for s in samples)}
    for key, _, _ in METRICS:
        out[key] = statistics.median(s[key] for s in samples)
    return out


def fmt(key: str, value: float) -> str:
    if key == "rate":
        return f"{value / 1e3:,.0f}k/s"
    return f"{value * 1e3:,.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,4", help="comma-separated thread counts (rows)")
    ap.add_argument("--rounds", type=int, default=None, help="samples per cell (default 5)")
    ap.add_argument("--quick", action="store_true", help="4 threads, 1 round: a smoke test")
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and median here")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per sample")
    ap.add_argument("--child", nargs=2, metavar=("LOOP", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        return run_child(args.child[0], int(args.child[1]))

    loops = parse_list(args.loops, LOOPS, "loop")
    rows = [4] if args.quick else [int(t) for t in args.threads.split(",")]
    rounds = args.rounds or (1 if args.quick else 5)
    probes = {name: probe(name) for name in loops}
    live = [name for name in loops if probes[name]["ok"]]
    m = machine_info()
    samples: dict[int, dict[str, list[dict[str, Any]]]] = {
        t: {name: [] for name in live} for t in rows
    }
    total, done = rounds * len(rows) * len(live), 0
    for rnd in range(rounds):
        for t in rows:
            for name in live:
                done += 1
                print(f"[{done}/{total}] round {rnd + 1} {t} threads on {name}", file=sys.stderr)
                samples[t][name].append(spawn(name, t, args.timeout))
    results = {
        t: {
            name: aggregate(samples[t][name]) if name in live else {"status": "n/a"}
            for name in loops
        }
        for t in rows
    }

    print(f"oxloop cross-thread flood ({'quick' if args.quick else 'full'} run)")
    print(f"  machine : {m['cpu']}, {m['cores']} cores; load average at start {m['load_avg']}")
    print(f"  python  : {m['python']} ({m['executable']})")
    versions = [f"{n} {probes[n]['version']}" if probes[n]["ok"] else f"{n} n/a" for n in loops]
    print(f"  loops   : {', '.join(versions)}; oxloop at git {git_rev()}")
    print(
        f"  method  : median of {rounds} round(s), one fresh process per sample, loops interleaved"
    )
    print(
        f"  per run : stop() due at {STOP_AT * 1e3:.0f} ms, {TIMERS} timers every"
        f" {TIMER_EVERY * 1e3:.0f} ms"
    )
    print()
    label_w, tag_w, col_w = 12, 14, 14
    header = " " * (label_w + tag_w) + "".join(f"{n:>{col_w}}" for n in loops)
    print(header)
    print("-" * len(header))
    for t in rows:
        for i, (key, tag, _) in enumerate(METRICS):
            label = f"{t} thread{'s' if t != 1 else ''}" if i == 0 else ""
            cells = "".join(
                f"{fmt(key, r[key]) if r['status'] == 'ok' else r['status']:>{col_w}}"
                for r in (results[t][n] for n in loops)
            )
            print(f"{label:<{label_w}}{tag:<{tag_w}}{cells}")
    notes = [f"  {n}: n/a: {probes[n]['why']}" for n in loops if not probes[n]["ok"]]
    notes += [
        f"  {t} threads on {n}: {r['status']}: {r['error']}"
        for t in rows
        for n, r in results[t].items()
        if r["status"] not in ("ok", "n/a") or (r["status"] == "n/a" and r.get("error"))
    ]
    notes += [
        f"  {t} threads on {n}: {r['not_refused']} thread(s) could still call"
        " call_soon_threadsafe after close (no RuntimeError)"
        for t in rows
        for n, r in results[t].items()
        if r["status"] == "ok" and r["not_refused"]
    ]
    if notes:
        print("notes:")
        print("\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": m, "probes": probes, "samples": samples, "results": results}, f)
    failed = any(r["status"] not in ("ok", "n/a") for per in results.values() for r in per.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
