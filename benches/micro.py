"""Micro benchmarks: oxloop beside stock asyncio, uvloop and rloop, in one table.

Role: this is what `make demo` runs (`python benches/micro.py` in .venv/3.11). It measures the loop
primitives every asyncio program leans on (call_soon, call_later, call_soon_threadsafe, task
switches, gather, futures) and the "seed scenario" (N tasks each sleeping a random 0-1 s), for
every loop side by side, and prints one table with each loop's ratio to uvloop.

Invariants (the reasons the numbers can be trusted on a shared, noisy 2-core machine):
- Every (row, loop) sample runs in a fresh interpreter (`--child`), so no loop inherits another's
  heap, caches, GC state or half-closed resources, and a crash or hang only costs one cell.
- Loops are interleaved within each round (asyncio, uvloop, rloop, oxloop, then again), so load
  drift on the machine hits every loop alike; rounds are the outer loop so drift over minutes is
  spread over all rows too.
- The reported number is the median over rounds of `time.process_time()` in the child around the
  timed region only (it counts every thread of the process, so work a loop moves to a helper
  thread is not free). Sleep rows also report wall-clock overhead = elapsed - longest sleep.
- Every body checks its own result (callback counts, order, values, no timer firing early, no
  error reaching the loop's exception handler); a failed check makes the cell FAIL, never a time.
- A loop that cannot be imported or constructed is shown as n/a, never dropped from the table.
- Every loop gets the same N, the same seed and therefore the same random delays.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LOOPS = ("asyncio", "uvloop", "rloop", "oxloop")
BASELINE = "uvloop"

# A timer may legitimately fire a little before its deadline: asyncio runs timers due within
# `clock_resolution`, and uvloop rounds delays to libuv's whole milliseconds. 2 ms covers both and
# still catches a loop that ignores delays.
EARLY_TOLERANCE = 0.002


class CheckFailed(Exception):
    """A benchmark body found a wrong result; the cell is reported as FAIL."""


def check(ok: bool, what: str) -> None:
    # Not `assert`: checks must survive `python -O`.
    if not ok:
        raise CheckFailed(what)


# ---------------------------------------------------------------------------------------------
# Child side: one benchmark body on one loop, timed, printed as one JSON line.
# ---------------------------------------------------------------------------------------------


def make_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        # The default loop of `asyncio.run` on Linux, named explicitly so a policy set by some
        # import cannot swap it.
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    if name == "rsloop":
        import rsloop

        return rsloop.new_event_loop()
    if name == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


class Stopwatch:
    """CPU (all threads) and wall time of a `with` block."""

    cpu = wall = 0.0

    def __enter__(self) -> Stopwatch:
        # Collect the setup garbage and freeze the survivors so a full collection inside the
        # timed region only walks objects the body itself created.
        gc.collect()
        gc.freeze()
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0
        gc.unfreeze()


def bench_call_soon(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    # Feed callbacks in batches from a callback, as a busy program does, instead of queueing all
    # n up front: the ready queue stays ~1000 long and every batch is one loop iteration.
    batch = 1000
    count = scheduled = misordered = 0

    def tick(i: int) -> None:
        nonlocal count, misordered
        if i != count:  # call_soon is FIFO; a loop that reorders fails here
            misordered += 1
        count += 1

    def feed() -> None:
        nonlocal scheduled
        end = min(scheduled + batch, n)
        call_soon = loop.call_soon
        for i in range(scheduled, end):
            call_soon(tick, i)
        scheduled = end
        call_soon(feed if scheduled < n else loop.stop)

    loop.call_soon(feed)
    with Stopwatch() as sw:
        loop.run_forever()
    check(count == n, f"{count} callbacks ran, expected {n}")
    check(misordered == 0, f"{misordered} callbacks ran out of order")
    return {"cpu": sw.cpu, "wall": sw.wall}


def bench_call_later(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    # Delays of 0-10 ms: scheduling n timers takes longer than that, so the row measures timer
    # bookkeeping (heap push, expiry, dispatch), not waiting.
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 0.010) for _ in range(n)]
    handles: list[asyncio.TimerHandle] = []
    fired: list[int] = []
    fired_at: list[float] = []
    scheduled_at = 0.0
    monotonic = time.monotonic

    def fire(i: int) -> None:
        # Record only; the checks run after the clock stops. time.monotonic(), not loop.time():
        # the check must not trust the clock of the loop it is checking.
        fired.append(i)
        fired_at.append(monotonic())
        if len(fired) == n:
            loop.stop()

    def start() -> None:
        nonlocal scheduled_at
        call_later = loop.call_later
        append = handles.append
        scheduled_at = monotonic()  # every deadline is at least this + its delay
        for i, d in enumerate(delays):
            append(call_later(d, fire, i))

    loop.call_soon(start)
    with Stopwatch() as sw:
        loop.run_forever()
    check(len(fired) == n, f"{len(fired)} timers fired, expected {n}")
    check(sorted(fired) == list(range(n)), "some timers fired twice, some never")
    # Scheduling n timers outlasts the 10 ms delays, so this only catches gross early firing;
    # the sleep rows (delays up to 1 s) are the sharp test of deadlines.
    early = sum(
        1
        for i, t in zip(fired, fired_at, strict=True)
        if t < scheduled_at + delays[i] - EARLY_TOLERANCE
    )
    check(early == 0, f"{early} timers fired before their delay")
    # Due timers run in deadline order, by the deadlines each loop computed (within the
    # tolerance uvloop's millisecond rounding needs). uvloop turns a delay that rounds to 0 ms
    # into a plain Handle without when(): those run at once, which is right, and are skipped.
    latest = -1.0
    misordered = 0
    for h in map(handles.__getitem__, fired):
        w = h.when() if hasattr(h, "when") else latest
        if w < latest - EARLY_TOLERANCE:
            misordered += 1
        latest = max(latest, w)
    check(misordered == 0, f"{misordered} timers fired out of deadline order")
    return {"cpu": sw.cpu, "wall": sw.wall}


def bench_call_soon_threadsafe(
    loop: asyncio.AbstractEventLoop, n: int, seed: int
) -> dict[str, float]:
    count = misordered = 0

    def tick(i: int) -> None:
        nonlocal count, misordered
        if i != count:  # one producer thread: its calls must run in the order it made them
            misordered += 1
        count += 1
        if count == n:
            loop.stop()

    def produce() -> None:
        call = loop.call_soon_threadsafe
        for i in range(n):
            call(tick, i)

    producer = threading.Thread(target=produce, name="bench-producer")
    # Start the producer from inside the running loop so every call hits a live, polling loop.
    loop.call_soon(producer.start)
    with Stopwatch() as sw:
        loop.run_forever()
        producer.join()
    check(count == n, f"{count} callbacks ran, expected {n}")
    check(misordered == 0, f"{misordered} callbacks ran out of order")
    return {"cpu": sw.cpu, "wall": sw.wall}


SWITCHES_PER_TASK = 10


def bench_tasks_sleep0(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    steps = done = 0
    all_done = loop.create_future()

    async def worker() -> int:
        nonlocal steps, done
        for _ in range(SWITCHES_PER_TASK):
            await asyncio.sleep(0)  # one trip through the ready queue, no timer
            steps += 1
        done += 1
        if done == n:
            all_done.set_result(None)
        return 1

    async def main() -> int:
        tasks = [loop.create_task(worker()) for _ in range(n)]
        await all_done
        # Let the last task's own completion callback run before counting results.
        await asyncio.sleep(0)
        return sum(t.result() for t in tasks if t.done())

    with Stopwatch() as sw:
        finished = loop.run_until_complete(main())
    check(finished == n, f"{finished} tasks finished, expected {n}")
    check(steps == n * SWITCHES_PER_TASK, f"{steps} steps, expected {n * SWITCHES_PER_TASK}")
    return {"cpu": sw.cpu, "wall": sw.wall}


def bench_gather(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    async def one(i: int) -> int:
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*[one(i) for i in range(n)])

    with Stopwatch() as sw:
        result = loop.run_until_complete(main())
    check(result == list(range(n)), "gather returned wrong results")
    return {"cpu": sw.cpu, "wall": sw.wall}


def bench_futures(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    # Each future is resolved by a loop callback, so `await` really suspends the task and the
    # loop has to wake it: create_future + call_soon + two callbacks + one iteration per future.
    async def main() -> int:
        create_future = loop.create_future
        call_soon = loop.call_soon
        total = 0
        for i in range(n):
            fut = create_future()
            call_soon(fut.set_result, i)
            total += await fut
        return total

    with Stopwatch() as sw:
        total = loop.run_until_complete(main())
    check(total == n * (n - 1) // 2, f"futures summed to {total}, expected {n * (n - 1) // 2}")
    return {"cpu": sw.cpu, "wall": sw.wall}


def bench_sleep_random(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    # The seed scenario: n tasks each sleeping a random 0-1 s. The ideal elapsed time is the
    # longest sleep; what the loop adds on top of it is its overhead.
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 1.0) for _ in range(n)]

    async def sleeper(delay: float) -> float:
        # time.monotonic(), not loop.time(): the check must not trust the loop's own clock.
        t0 = time.monotonic()
        await asyncio.sleep(delay)
        return time.monotonic() - t0 - delay  # lateness; negative means the timer fired early

    async def main() -> list[float]:
        return await asyncio.gather(*[sleeper(d) for d in delays])

    with Stopwatch() as sw:
        lateness = loop.run_until_complete(main())
    check(len(lateness) == n, f"{len(lateness)} sleeps finished, expected {n}")
    early = sum(1 for x in lateness if x < -EARLY_TOLERANCE)
    check(early == 0, f"{early} sleeps ended before their delay")
    return {"cpu": sw.cpu, "wall": sw.wall, "overhead": sw.wall - max(delays)}


# The sock_* rows receive with asyncio's usual 256 KiB (benches/net.py's sock server does too).
SOCK_RECV_SIZE = 256 * 1024
SOCK_PAYLOAD = b"x" * 1024


def _sock_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def bench_sock_ready(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    # `await loop.sock_sendall(a, 1 KiB)` then `await loop.sock_recv(b, 256 KiB)`, the data
    # always there: the per-call cost of the sock_* API when nothing has to wait.
    a, b = _sock_pair()

    async def main() -> int:
        sendall, recv = loop.sock_sendall, loop.sock_recv
        total = 0
        for _ in range(n):
            await sendall(a, SOCK_PAYLOAD)
            total += len(await recv(b, SOCK_RECV_SIZE))
        return total

    try:
        with Stopwatch() as sw:
            total = loop.run_until_complete(main())
    finally:
        a.close()
        b.close()
    check(total == n * len(SOCK_PAYLOAD), f"received {total} bytes, expected {n * 1024}")
    return {"cpu": sw.cpu, "wall": sw.wall}


def bench_sock_pingpong(loop: asyncio.AbstractEventLoop, n: int, seed: int) -> dict[str, float]:
    # Two tasks bounce 1 KiB over a socket pair n times with sock_sendall / sock_recv: every
    # receive finds nothing yet and waits for readiness (the sock echo server's usual case:
    # registration, a poll, the readiness callback, the task wake-up).
    a, b = _sock_pair()

    async def ping() -> int:
        got = 0
        for _ in range(n):
            await loop.sock_sendall(a, SOCK_PAYLOAD)
            want = len(SOCK_PAYLOAD)
            while want:  # a stream may deliver the echo in pieces
                k = len(await loop.sock_recv(a, SOCK_RECV_SIZE))
                want -= k
                got += k
        return got

    async def pong() -> int:
        echoed = 0
        while echoed < n * len(SOCK_PAYLOAD):
            data = await loop.sock_recv(b, SOCK_RECV_SIZE)
            await loop.sock_sendall(b, data)
            echoed += len(data)
        return echoed

    async def main() -> list[int]:
        return await asyncio.gather(ping(), pong())

    try:
        with Stopwatch() as sw:
            got, echoed = loop.run_until_complete(main())
    finally:
        a.close()
        b.close()
    want = n * len(SOCK_PAYLOAD)
    check(got == want and echoed == want, f"moved {got}/{echoed} bytes, expected {want}")
    return {"cpu": sw.cpu, "wall": sw.wall}


@dataclass(frozen=True)
class Row:
    name: str
    label: str  # formatted with n (as "1M", "200k")
    n: int
    quick_n: int
    body: Callable[[asyncio.AbstractEventLoop, int, int], dict[str, float]]
    sleeps: bool = False  # wall overhead is meaningful (and shown)
    # Part of the default table (`make demo`); the others run when named in --rows.
    default: bool = True


ROWS = {
    r.name: r
    for r in (
        Row("call_soon", "call_soon {n}", 1_000_000, 100_000, bench_call_soon),
        Row("call_later", "call_later {n}, 0-10ms", 200_000, 20_000, bench_call_later),
        Row(
            "call_soon_threadsafe",
            "call_soon_threadsafe {n}",
            200_000,
            20_000,
            bench_call_soon_threadsafe,
        ),
        Row("tasks_sleep0", "{n} tasks x10 sleep(0)", 100_000, 10_000, bench_tasks_sleep0),
        Row("gather", "gather {n} coroutines", 100_000, 10_000, bench_gather),
        Row("futures", "{n} futures awaited", 1_000_000, 100_000, bench_futures),
        Row("sleep_10k", "{n} tasks sleep 0-1s", 10_000, 2_000, bench_sleep_random, True),
        Row("sleep_100k", "{n} tasks sleep 0-1s", 100_000, 20_000, bench_sleep_random, True),
        Row(
            "sock_ready",
            "{n} sock_sendall+sock_recv",
            200_000,
            20_000,
            bench_sock_ready,
            default=False,
        ),
        Row(
            "sock_pingpong",
            "{n} sock_* round trips",
            100_000,
            10_000,
            bench_sock_pingpong,
            default=False,
        ),
    )
}


def run_child(row: str, loop_name: str, n: int, seed: int) -> int:
    """Child entry point: prints one JSON line on stdout; exit 0 ok, 1 failed check, 2 no loop."""
    try:
        loop = make_loop(loop_name)
    except Exception as exc:  # ImportError, or a loop that cannot even be constructed
        print(json.dumps({"status": "n/a", "error": f"{type(exc).__name__}: {exc}"}))
        return 2
    asyncio.set_event_loop(loop)
    errors: list[str] = []

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # An exception inside a callback would otherwise be logged and swallowed by the loop,
        # and a body that lost work could still look fast.
        errors.append(str(context.get("exception") or context.get("message")))
        _loop.stop()

    loop.set_exception_handler(on_error)
    try:
        result = ROWS[row].body(loop, n, seed)
        check(not errors, f"exception handler called: {errors[:3]}")
    except CheckFailed as exc:
        print(json.dumps({"status": "FAIL", "error": str(exc)}))
        return 1
    finally:
        loop.close()
    print(json.dumps({"status": "ok", **result}))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent side: schedule children, aggregate, print.
# ---------------------------------------------------------------------------------------------


def spawn(row: str, loop_name: str, n: int, seed: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", row, loop_name]
    cmd += ["--n", str(n), "--seed", str(seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "TIMEOUT", "error": f"no result after {timeout:.0f}s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        # Crashed (segfault, uncaught exception, panic): keep the tail of stderr as the reason.
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"status": "ERROR", "error": tail[0][:300]}


def probe(loop_name: str) -> dict[str, Any]:
    """Import and construct the loop in a throwaway process; report its version or why not."""
    code = (
        "import sys, importlib.metadata as md\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import micro\n"
        "micro.make_loop(sys.argv[2]).close()\n"
        "name = sys.argv[2]\n"
        "print('stdlib' if name == 'asyncio' else md.version(name))\n"
        # A failed rebuild leaves the previous native module in place: say when it was built.
        "if name == 'oxloop':\n"
        "    import os, time, oxloop._oxloop as ext\n"
        "    built = time.localtime(os.path.getmtime(ext.__file__))\n"
        "    print(time.strftime('%Y-%m-%d %H:%M:%S', built))\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, here, loop_name],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": "import timed out"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"ok": False, "why": tail[0][:200]}
    version, _, built = proc.stdout.strip().partition("\n")
    return {"ok": True, "version": version, "built": built}


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "load_avg": load,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
    }


def load_chart() -> Any:
    """benches/chart.py, loaded by its path: net.py keeps benches/ off sys.path (its docstring).

    chart.py imports matplotlib only when it draws, so this works without it.
    """
    import importlib.util

    if "chart" in sys.modules:
        return sys.modules["chart"]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chart.py")
    spec = importlib.util.spec_from_file_location("chart", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart"] = module
    spec.loader.exec_module(module)
    return module


def utc_now() -> str:
    """When a run started, for the results file and the chart's caption."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime())


def git_rev() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "-C", here, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return rev or "?"


def human_n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def fmt_seconds(s: float) -> str:
    # Three significant figures at most: the machine is not quieter than that.
    a = abs(s)
    if a >= 10:
        return f"{s:.1f} s"
    if a >= 1:
        return f"{s:.2f} s"
    if a >= 0.1:
        return f"{s * 1e3:.0f} ms"
    if a >= 0.01:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e3:.2f} ms"


def ratio_text(value: float, base: float) -> str:
    """How `value` compares with the baseline's `base`, both 'lower is better'."""
    if value <= 0 or base <= 0:
        return "-"  # overheads can be ~0 or negative within noise: a ratio would be nonsense
    r = base / value
    if 0.995 <= r < 1.005:  # rounds to 1.00x either way
        return "same"
    return f"{r:.2f}x faster" if r > 1 else f"{1 / r:.2f}x slower"


def cell(result: dict[str, Any], metric: str) -> str:
    if result["status"] != "ok":
        return result["status"]
    return fmt_seconds(result[metric])


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric over the ok samples; any failed sample fails the cell."""
    bad = [s for s in samples if s["status"] != "ok"]
    if bad:
        return {"status": bad[0]["status"], "error": bad[0].get("error", "")}
    out: dict[str, Any] = {"status": "ok"}
    for key in ("cpu", "wall", "overhead"):
        values = [s[key] for s in samples if key in s]
        if values:
            out[key] = statistics.median(values)
            out[key + "_spread"] = (max(values) - min(values)) / out[key] if out[key] > 0 else 0.0
    return out


def print_report(
    meta: dict[str, Any],
    loops: list[str],
    rows: list[Row],
    ns: dict[str, int],
    results: dict[str, dict[str, dict[str, Any]]],
    rounds: int,
) -> None:
    m = meta["machine"]
    print(f"oxloop micro benchmarks ({'quick' if meta['quick'] else 'full'} run)")
    usable = f", {m['usable_cores']} usable" if m["usable_cores"] != m["cores"] else ""
    print(f"  machine : {m['cpu']}, {m['cores']} cores{usable}; {m['platform']}")
    print(f"            load average at start {m['load_avg']}")
    print(f"  python  : {m['python']} ({m['executable']})")
    versions = []
    for name in loops:
        p = meta["probes"][name]
        if name == "oxloop" and p["ok"]:
            versions.append(f"oxloop {p['version']}")
        elif p["ok"]:
            versions.append(f"{name} {p['version']}")
        else:
            versions.append(f"{name} n/a")
    print(f"  loops   : {', '.join(versions)}")
    if "oxloop" in loops and meta["probes"]["oxloop"]["ok"]:
        built = meta["probes"]["oxloop"]["built"]
        print(f"  oxloop  : git {meta['git']}, native module built {built}")
    print(
        f"  method  : median of {rounds} round{'s' if rounds != 1 else ''}, one fresh process per"
        " sample, loops interleaved per round; seed "
        f"{meta['seed']}"
    )
    print("  cpu     : time.process_time() of the timed region (all threads); lower is better")
    print("  overhead: sleep rows only, wall time minus the longest sleep")
    print(f"  ratios  : against {BASELINE} on the same row")
    print()

    label_w = max(len(r.label.format(n=human_n(ns[r.name]))) for r in rows) + 2
    tag_w, col_w = 9, 15
    lead = label_w + tag_w
    header = " " * lead + "".join(f"{name:>{col_w}}" for name in loops)
    print(header)
    print("-" * len(header))
    for row in rows:
        per_loop = results[row.name]
        base = per_loop.get(BASELINE, {"status": "n/a"})
        metrics = ["cpu", "overhead"] if row.sleeps else ["cpu"]
        for i, metric in enumerate(metrics):
            label = row.label.format(n=human_n(ns[row.name])) if i == 0 else ""
            cells = "".join(f"{cell(per_loop[name], metric):>{col_w}}" for name in loops)
            print(f"{label:<{label_w}}{metric:<{tag_w}}{cells}")
            ratios = []
            for name in loops:
                r = per_loop[name]
                if name == BASELINE:
                    ratios.append("baseline" if r["status"] == "ok" else "")
                elif r["status"] != "ok" or base["status"] != "ok":
                    ratios.append("")
                else:
                    ratios.append(ratio_text(r[metric], base[metric]))
            print(" " * lead + "".join(f"{x:>{col_w}}" for x in ratios).rstrip())
    print()

    # The sentence form ("oxloop 2.31x faster than uvloop"), per row, for each challenger.
    for name in loops:
        if name in (BASELINE, "asyncio"):
            continue
        if not meta["probes"][name]["ok"]:
            print(f"{name} vs {BASELINE}: n/a ({name} is not importable, see notes)")
            print()
            continue
        print(f"{name} vs {BASELINE}, cpu time:")
        for row in rows:
            r, base = results[row.name][name], results[row.name].get(BASELINE)
            label = row.label.format(n=human_n(ns[row.name]))
            if base is None or base["status"] != "ok" or r["status"] != "ok":
                why = (
                    r["status"] if r["status"] != "ok" else f"{BASELINE} {base and base['status']}"
                )
                line = f"no ratio ({why})"
            else:
                line = f"{name} {ratio_text(r['cpu'], base['cpu'])} than {BASELINE}"
                line = line.replace("same than", "the same as")
                if row.sleeps:
                    line += f"; overhead {ratio_text(r['overhead'], base['overhead'])}"
            print(f"  {label:<{label_w}}{line}")
        print()

    spreads = [
        (res["cpu_spread"], row.name, name)
        for row in rows
        for name, res in results[row.name].items()
        if res["status"] == "ok" and "cpu_spread" in res
    ]
    if rounds > 1 and spreads:
        worst = max(spreads)
        typical = statistics.median(s for s, _, _ in spreads)
        print(
            f"noise: cpu (max-min)/median over rounds is {typical:.0%} typically, worst"
            f" {worst[0]:.0%} ({worst[1]} on {worst[2]});\n       a ratio within that is a tie"
        )

    notes = []
    for name in loops:
        if not meta["probes"][name]["ok"]:
            notes.append(f"  {name}: n/a: {meta['probes'][name]['why']}")
    for row in rows:
        for name in loops:
            r = results[row.name][name]
            if r["status"] not in ("ok", "n/a"):
                notes.append(f"  {row.name} on {name}: {r['status']}: {r.get('error', '')}")
    if notes:
        print("notes:")
        print("\n".join(notes))


def parse_list(text: str, known: tuple[str, ...] | list[str], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="samples per cell (default 3)")
    ap.add_argument("--quick", action="store_true", help="small N, 1 round: a smoke test")
    ap.add_argument(
        "--rows",
        default=",".join(r.name for r in ROWS.values() if r.default),
        help="comma-separated rows (default: all but the opt-in sock_* rows)",
    )
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    ap.add_argument(
        "--json",
        metavar="FILE",
        help="where to save every sample and median (default benches/results/micro.json);"
        " the chart goes beside it (.png, .svg)",
    )
    ap.add_argument("--no-chart", action="store_true", help="save the JSON but draw no chart")
    ap.add_argument("--no-save", action="store_true", help="print the table only")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the random delays")
    ap.add_argument("--n", type=int, help="override N for every selected row")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per sample")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--child", nargs=2, metavar=("ROW", "LOOP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        row, loop_name = args.child
        return run_child(row, loop_name, args.n or ROWS[row].n, args.seed)
    if args.list:
        for r in ROWS.values():
            extra = "" if r.default else "  (opt-in: name it in --rows)"
            print(f"{r.name:<22} {r.label.format(n=human_n(r.n))}{extra}")
        return 0

    wanted = parse_list(args.rows, tuple(ROWS), "row")
    rows = [r for r in ROWS.values() if r.name in wanted]  # always in the table's order
    loops = parse_list(args.loops, LOOPS, "loop")
    rounds = args.rounds or (1 if args.quick else 3)
    ns = {r.name: args.n or (r.quick_n if args.quick else r.n) for r in rows}

    meta: dict[str, Any] = {
        "bench": "micro",
        "date": utc_now(),
        "machine": machine_info(),
        "git": git_rev(),
        "quick": args.quick,
        "rounds": rounds,
        "seed": args.seed,
        "probes": {name: probe(name) for name in loops},
    }
    live = [name for name in loops if meta["probes"][name]["ok"]]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        r.name: {name: [] for name in live} for r in rows
    }
    tty = sys.stderr.isatty()
    total = rounds * len(rows) * len(live)
    done = 0
    started = time.perf_counter()
    for rnd in range(rounds):
        for row in rows:
            for name in live:
                done += 1
                msg = f"[{done}/{total}] round {rnd + 1}/{rounds} {row.name} on {name}"
                print(f"\r\033[K{msg}" if tty else msg, end="" if tty else "\n", file=sys.stderr)
                sys.stderr.flush()
                samples[row.name][name].append(
                    spawn(row.name, name, ns[row.name], args.seed, args.timeout)
                )
    elapsed = time.perf_counter() - started
    if tty:
        print("\r\033[K", end="", file=sys.stderr)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        results[row.name] = {}
        for name in loops:
            if name in live:
                results[row.name][name] = aggregate(samples[row.name][name])
            else:
                results[row.name][name] = {"status": "n/a"}

    print_report(meta, loops, rows, ns, results, rounds)
    print(f"({total} samples in {elapsed:.0f} s)")

    if not args.no_save:
        doc = {
            "meta": meta,
            "baseline": BASELINE,
            "statistic": "median",
            "rows": {
                r.name: {
                    "label": r.label.format(n=human_n(ns[r.name])),
                    "n": ns[r.name],
                    "results": results[r.name],
                    "samples": samples[r.name],
                }
                for r in rows
            },
        }
        load_chart().save(doc, args.json, "micro", chart=not args.no_chart)
    failed = any(
        res["status"] not in ("ok", "n/a") for per in results.values() for res in per.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
