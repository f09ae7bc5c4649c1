"""Subprocess benchmarks: oxloop beside stock asyncio, uvloop and rloop, in one table.

Role: measures what a loop adds to running child processes, for every loop side by side:
spawning and reaping 1,000 `true` processes at once (fork/exec, exit watching, reaping, the
Process bookkeeping), and 256 MiB read from a child's stdout through a pipe (`head -c N
/dev/zero`, read with `proc.stdout.read`): the read pipe transport, flow control and the stream
reader.

Invariants (as benches/micro.py, whose helpers this reuses):
- Every (row, loop) sample runs in a fresh interpreter (`--child`); loops are interleaved within
  each round, rounds are the outer loop; the reported number is the median over rounds.
- `cpu` is `time.process_time()` of the benchmark process around the timed region (every
  thread: a loop that reaps in a helper thread pays for it). `children` is the CPU time of the
  reaped children over the same region (`RUSAGE_CHILDREN`): the same programs run for every loop,
  so it mostly shows whether a loop makes children costlier (fork versus vfork/posix_spawn).
  `wall` is elapsed time.
- Every body checks its own result (every child's return code, every byte counted, no error
  reaching the exception handler); a failed check is a FAIL cell, never a time.

This file is named after the stdlib module it benchmarks, so it takes its own directory off the
front of sys.path before importing anything that imports `subprocess`.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# `python benches/children.py` puts benches/ first on sys.path, where this file would shadow
# the stdlib `subprocess` for asyncio and everything else: move it to the end (micro.py is
# still found there).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import micro  # noqa: E402
from micro import (  # noqa: E402
    BASELINE,
    LOOPS,
    CheckFailed,
    check,
    fmt_seconds,
    git_rev,
    machine_info,
    make_loop,
    parse_list,
    ratio_text,
)

assert subprocess.__file__ != __file__, "the stdlib subprocess module is shadowed"

METRICS = ("cpu", "children", "wall")


class Stopwatch:
    """Process CPU, children's CPU and wall time of a `with` block."""

    cpu = children = wall = 0.0

    def __enter__(self) -> Stopwatch:
        gc.collect()
        gc.freeze()
        self._ch0 = self._children_cpu()
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0
        self.children = self._children_cpu() - self._ch0
        gc.unfreeze()

    @staticmethod
    def _children_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children only
        return ru.ru_utime + ru.ru_stime


def bench_spawn(loop: asyncio.AbstractEventLoop, n: int) -> dict[str, float]:
    true = shutil.which("true") or "/bin/true"  # absolute: no PATH search in any loop

    async def main() -> list[int]:
        procs = await asyncio.gather(*(asyncio.create_subprocess_exec(true) for _ in range(n)))
        return await asyncio.gather(*(p.wait() for p in procs))

    with Stopwatch() as sw:
        codes = loop.run_until_complete(main())
    check(codes == [0] * n, f"return codes {sorted(set(codes))}, expected all 0")
    return {"cpu": sw.cpu, "children": sw.children, "wall": sw.wall}


def bench_pipe_read(loop: asyncio.AbstractEventLoop, n: int) -> dict[str, float]:
    head = shutil.which("head") or "/usr/bin/head"

    async def main() -> tuple[int, bool, int]:
        proc = await asyncio.create_subprocess_exec(
            head, "-c", str(n), "/dev/zero", stdout=subprocess.PIPE
        )
        got = 0
        zeros = True
        read = proc.stdout.read
        while True:
            chunk = await read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            # Spot checks only: scanning every byte would cost more than the loop under test.
            zeros = zeros and chunk[0] == 0 and chunk[-1] == 0
        return got, zeros, await proc.wait()

    with Stopwatch() as sw:
        got, zeros, rc = loop.run_until_complete(main())
    check(got == n, f"read {got} bytes, expected {n}")
    check(zeros, "a chunk read does not start and end with a zero byte")
    check(rc == 0, f"head exited {rc}")
    return {"cpu": sw.cpu, "children": sw.children, "wall": sw.wall}


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    n: int
    quick_n: int
    body: Callable[[asyncio.AbstractEventLoop, int], dict[str, float]]


def human_bytes(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} B"


ROWS = {
    r.name: r
    for r in (
        Row("spawn", "spawn+reap {n} `true`", 1000, 200, bench_spawn),
        Row("pipe", "{n} from a child's stdout", 256 << 20, 32 << 20, bench_pipe_read),
    )
}


def label_of(row: Row, n: int) -> str:
    return row.label.format(n=human_bytes(n) if row.name == "pipe" else micro.human_n(n))


def run_child(row: str, loop_name: str, n: int) -> int:
    """Child entry point: one JSON line on stdout; exit 0 ok, 1 failed check, 2 no loop."""
    try:
        loop = make_loop(loop_name)
    except Exception as exc:
        print(json.dumps({"status": "n/a", "error": f"{type(exc).__name__}: {exc}"}))
        return 2
    asyncio.set_event_loop(loop)
    errors: list[str] = []

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(str(context.get("exception") or context.get("message")))

    loop.set_exception_handler(on_error)
    try:
        result = ROWS[row].body(loop, n)
        check(not errors, f"exception handler called: {errors[:3]}")
    except CheckFailed as exc:
        print(json.dumps({"status": "FAIL", "error": str(exc)}))
        return 1
    except NotImplementedError as exc:  # a loop without subprocess support
        print(json.dumps({"status": "n/a", "error": f"NotImplementedError: {exc}"}))
        return 2
    finally:
        loop.close()
    print(json.dumps({"status": "ok", **result}))
    return 0


def spawn_sample(row: str, loop_name: str, n: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", row, loop_name, "--n", str(n)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "TIMEOUT", "error": f"no result after {timeout:.0f}s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"status": "ERROR", "error": tail[0][:300]}


def probe(loop_name: str) -> dict[str, Any]:
    """Import and construct the loop in a throwaway process (micro.probe's check, through this
    file so the stdlib subprocess module is not shadowed there either)."""
    code = (
        "import sys, importlib.metadata as md\n"
        "sys.path.append(sys.argv[1])\n"
        "import micro\n"
        "micro.make_loop(sys.argv[2]).close()\n"
        "name = sys.argv[2]\n"
        "print('stdlib' if name == 'asyncio' else md.version(name))\n"
        "if name == 'oxloop':\n"
        "    import os, time, oxloop._oxloop as ext\n"
        "    built = time.localtime(os.path.getmtime(ext.__file__))\n"
        "    print(time.strftime('%Y-%m-%d %H:%M:%S', built))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, _HERE, loop_name],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": "import timed out"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"ok": False, "why": tail[0][:200]}
    version, _, built = proc.stdout.strip().partition("\n")
    return {"ok": True, "version": version, "built": built}


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [s for s in samples if s["status"] != "ok"]
    if bad:
        return {"status": bad[0]["status"], "error": bad[0].get("error", "")}
    out: dict[str, Any] = {"status": "ok"}
    for key in METRICS:
        values = [s[key] for s in samples]
        out[key] = statistics.median(values)
        out[key + "_spread"] = (max(values) - min(values)) / out[key] if out[key] > 0 else 0.0
    return out


def cell(result: dict[str, Any], metric: str) -> str:
    return fmt_seconds(result[metric]) if result["status"] == "ok" else result["status"]


def print_report(
    meta: dict[str, Any],
    loops: list[str],
    rows: list[Row],
    ns: dict[str, int],
    results: dict[str, dict[str, dict[str, Any]]],
    rounds: int,
) -> None:
    m = meta["machine"]
    print(f"oxloop subprocess benchmarks ({'quick' if meta['quick'] else 'full'} run)")
    print(f"  machine : {m['cpu']}, {m['cores']} cores; {m['platform']}")
    print(f"            load average at start {m['load_avg']}")
    print(f"  python  : {m['python']} ({m['executable']})")
    versions = [
        f"{name} {meta['probes'][name]['version']}" if meta["probes"][name]["ok"] else f"{name} n/a"
        for name in loops
    ]
    print(f"  loops   : {', '.join(versions)}")
    if "oxloop" in loops and meta["probes"]["oxloop"]["ok"]:
        built = meta["probes"]["oxloop"]["built"]
        print(f"  oxloop  : git {meta['git']}, native module built {built}")
    print(
        f"  method  : median of {rounds} round{'s' if rounds != 1 else ''}, one fresh process"
        " per sample, loops interleaved per round"
    )
    print("  cpu     : time.process_time() of the timed region (all threads); lower is better")
    print("  children: CPU time of the children reaped in that region (RUSAGE_CHILDREN)")
    print(f"  ratios  : against {BASELINE} on the same row")
    print()

    label_w = max(len(label_of(r, ns[r.name])) for r in rows) + 2
    tag_w, col_w = 10, 15
    lead = label_w + tag_w
    header = " " * lead + "".join(f"{name:>{col_w}}" for name in loops)
    print(header)
    print("-" * len(header))
    for row in rows:
        per_loop = results[row.name]
        base = per_loop.get(BASELINE, {"status": "n/a"})
        for i, metric in enumerate(METRICS):
            label = label_of(row, ns[row.name]) if i == 0 else ""
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
    spreads = [
        (res[f"{metric}_spread"], row.name, name, metric)
        for row in rows
        for name, res in results[row.name].items()
        if res["status"] == "ok"
        for metric in ("cpu", "wall")
    ]
    if rounds > 1 and spreads:
        worst = max(spreads)
        typical = statistics.median(s for s, *_ in spreads)
        print(
            f"noise: (max-min)/median over rounds is {typical:.0%} typically, worst"
            f" {worst[0]:.0%} ({worst[3]} of {worst[1]} on {worst[2]});"
            " a ratio within that is a tie"
        )
    notes = [
        f"  {name}: n/a: {meta['probes'][name]['why']}"
        for name in loops
        if not meta["probes"][name]["ok"]
    ]
    for row in rows:
        for name in loops:
            r = results[row.name][name]
            if r["status"] != "ok" and r.get("error"):
                notes.append(f"  {row.name} on {name}: {r['status']}: {r['error']}")
    if notes:
        print("notes:")
        print("\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="samples per cell (default 5)")
    ap.add_argument("--quick", action="store_true", help="small N, 1 round: a smoke test")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    ap.add_argument(
        "--json",
        metavar="FILE",
        help="where to save every sample and median (default benches/results/subprocess.json);"
        " the chart goes beside it (.png, .svg)",
    )
    ap.add_argument("--no-chart", action="store_true", help="save the JSON but draw no chart")
    ap.add_argument("--no-save", action="store_true", help="print the table only")
    ap.add_argument("--n", type=int, help="override N (children, or bytes) for selected rows")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per sample")
    ap.add_argument("--child", nargs=2, metavar=("ROW", "LOOP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        row, loop_name = args.child
        return run_child(row, loop_name, args.n or ROWS[row].n)

    wanted = parse_list(args.rows, tuple(ROWS), "row")
    rows = [r for r in ROWS.values() if r.name in wanted]
    loops = parse_list(args.loops, LOOPS, "loop")
    rounds = args.rounds or (1 if args.quick else 5)
    ns = {r.name: args.n or (r.quick_n if args.quick else r.n) for r in rows}
    meta: dict[str, Any] = {
        "bench": "subprocess",
        "date": micro.utc_now(),
        "machine": machine_info(),
        "git": git_rev(),
        "quick": args.quick,
        "rounds": rounds,
        "probes": {name: probe(name) for name in loops},
    }
    live = [name for name in loops if meta["probes"][name]["ok"]]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        r.name: {name: [] for name in live} for r in rows
    }
    total = rounds * len(rows) * len(live)
    done = 0
    started = time.perf_counter()
    for rnd in range(rounds):
        for row in rows:
            for name in live:
                done += 1
                print(
                    f"[{done}/{total}] round {rnd + 1}/{rounds} {row.name} on {name}",
                    file=sys.stderr,
                )
                samples[row.name][name].append(
                    spawn_sample(row.name, name, ns[row.name], args.timeout)
                )
    elapsed = time.perf_counter() - started
    results = {
        row.name: {
            name: aggregate(samples[row.name][name]) if name in live else {"status": "n/a"}
            for name in loops
        }
        for row in rows
    }
    print_report(meta, loops, rows, ns, results, rounds)
    print(f"({total} samples in {elapsed:.0f} s)")
    if not args.no_save:
        doc = {
            "meta": meta,
            "baseline": BASELINE,
            "statistic": "median",
            "rows": {
                r.name: {
                    "label": label_of(r, ns[r.name]),
                    "n": ns[r.name],
                    "results": results[r.name],
                    "samples": samples[r.name],
                }
                for r in rows
            },
        }
        micro.load_chart().save(doc, args.json, "subprocess", chart=not args.no_chart)
    failed = any(
        res["status"] not in ("ok", "n/a") for per in results.values() for res in per.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
