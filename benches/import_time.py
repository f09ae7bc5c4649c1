"""Import time: what `import oxloop` costs a script, beside `import asyncio`, uvloop and rloop.

Role: scripts, CLIs and serverless cold starts pay for the import on every run; oxloop's must
cost no more than uvloop's (issue 17). Each row is one `import X` in a fresh interpreter; the
table shows the median time and what the loop adds on top of `import asyncio`.

Invariants (so the numbers compare like with like on a shared, noisy machine):
- Every sample is a fresh interpreter (`--child`), timing only the import statement with
  `time.perf_counter()` (wall: what a user waits for) and `time.process_time()` (CPU).
- Loops are interleaved within each round (asyncio, uvloop, rloop, oxloop, then again), so load
  drift hits every loop alike; the number is the median over rounds.
- Bytecode caches exist for every module, as they do after `pip install` (which compiles them):
  the children run without PYTHONDONTWRITEBYTECODE and one untimed import of each loop comes
  first, so an editable oxloop is not charged for compiling its sources.
- A loop that cannot be imported is shown as n/a, never dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

LOOPS = ("asyncio", "uvloop", "rloop", "oxloop")
BASELINE = "uvloop"

_CHILD = """\
import sys, time
name = sys.argv[1]
w, c = time.perf_counter(), time.process_time()
__import__(name)
c, w = time.process_time() - c, time.perf_counter() - w
print(w, c)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # pip compiles bytecode at install time; the bench must not charge a loop for compiling.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for name in ("PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONASYNCIODEBUG"):
        env.pop(name, None)
    return env


def sample(name: str, env: dict[str, str]) -> tuple[float, float] | None:
    """(wall, cpu) seconds of `import name` in a fresh interpreter; None if it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if proc.returncode != 0:
        return None
    wall, cpu = proc.stdout.split()
    return float(wall), float(cpu)


def _version(name: str) -> str:
    if name == "asyncio":
        return "stdlib"
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def run(loops: list[str], rounds: int) -> dict[str, dict[str, list[float]] | None]:
    env = _env()
    results: dict[str, dict[str, list[float]] | None] = {}
    for name in loops:  # untimed: writes any missing bytecode cache, finds what is missing
        results[name] = None if sample(name, env) is None else {"wall": [], "cpu": []}
    for _ in range(rounds):
        for name in loops:
            cell = results[name]
            if cell is None:
                continue
            got = sample(name, env)
            if got is None:
                results[name] = None
                continue
            cell["wall"].append(got[0])
            cell["cpu"].append(got[1])
    return results


def table(results: dict[str, dict[str, list[float]] | None]) -> str:
    """Medians in ms; the ratio compares CPU time over asyncio's (steadier than wall time on a
    shared machine, where waiting for a CPU another process holds is counted in wall time)."""

    def med(name: str, key: str) -> float | None:
        cell = results.get(name)
        return None if cell is None else statistics.median(cell[key]) * 1e3

    base = {key: med("asyncio", key) for key in ("cpu", "wall")}
    ref = med(BASELINE, "cpu")
    ref_over = None if ref is None or base["cpu"] is None else ref - base["cpu"]
    lines = [
        f"{'import':<10}{'cpu ms':>9}{'+asyncio':>10}{'vs ' + BASELINE:>11}"
        f"{'wall ms':>10}{'+asyncio':>10}"
    ]
    for name in results:
        cpu, wall = med(name, "cpu"), med(name, "wall")
        if cpu is None or wall is None:
            lines.append(f"{name:<10}{'n/a':>9}")
            continue
        over = {"cpu": "", "wall": ""}
        ratio = ""
        if name != "asyncio":
            for key, value in (("cpu", cpu), ("wall", wall)):
                b = base[key]
                if b is not None:
                    over[key] = f"{value - b:+.1f}"
            if ref_over and ref_over > 0 and base["cpu"] is not None:
                ratio = f"{(cpu - base['cpu']) / ref_over:.2f}x"
        lines.append(
            f"{name:<10}{cpu:>9.1f}{over['cpu']:>10}{ratio:>11}{wall:>10.1f}{over['wall']:>10}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21, help="fresh interpreters per loop (21)")
    ap.add_argument("--quick", action="store_true", help="5 rounds: a smoke test")
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    ap.add_argument("--json", metavar="FILE", help="also write every sample here")
    args = ap.parse_args(argv)
    loops = [name for name in args.loops.split(",") if name]
    rounds = 5 if args.quick else args.rounds
    results = run(loops, rounds)
    print(
        f"import time, median of {rounds} fresh interpreters, interleaved; "
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}; " + ", ".join(f"{n} {_version(n)}" for n in loops)
    )
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "python": platform.python_version(), **results}, f)
    return 0 if results.get("oxloop") is not None or "oxloop" not in loops else 1


if __name__ == "__main__":
    sys.exit(main())
