"""Instructions per operation for one micro.py row, counted by valgrind's callgrind.

Role: wall and CPU time on the shared machine move 10-30% between runs; instruction counts do not.
This runs one row of benches/micro.py (its `--child` mode, the very same body and checks) under
`valgrind --tool=callgrind` twice, with N and 2N operations, and prints (I(2N) - I(N)) / N: the
instructions one more operation costs, with interpreter start-up, imports and setup cancelled
out. With `--top K` it does the same subtraction per function (self cost, from
callgrind_annotate), which shows where an operation's instructions go. With `--cache` it runs
`valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes` instead and prints every event per
operation (D1 and last-level misses, branch mispredicts): what an instruction count cannot see
when two loops' CPU times and instruction counts disagree (this VM has no hardware counters).

Invariants:
- Both runs use the same interpreter, row, loop, seed and PYTHONHASHSEED, so everything except
  the N-dependent work is identical and cancels in the difference.
- A run whose body check fails (or that crashes) is an error, never a number.
- Profiles are kept in benches/results/callgrind/ (git-ignored) for callgrind_annotate or
  kcachegrind afterwards.

Usage: python benches/callgrind.py ROW [LOOP[,LOOP...]] [--n N] [--top K | --cache]
  e.g. .venv/3.11/bin/python benches/callgrind.py call_soon uvloop,oxloop --top 20
       .venv/3.11/bin/python benches/callgrind.py gather rloop,oxloop --cache
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import micro  # noqa: E402  (needs HERE on sys.path)

OUT_DIR = os.path.join(HERE, "results", "callgrind")
# "  1,234,567  file:function [object]" in callgrind_annotate's function list.
FUNC_LINE = re.compile(r"^\s*([\d,]+)\s+(\S.*)$")


# cachegrind's events, in the order of its "events:" line with both simulations on.
CACHE_EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")
CACHE_EVENTS += ("Bc", "Bcm", "Bi", "Bim")


def profile(
    row: str, loop: str, n: int, seed: int, python: str, cache: bool = False
) -> tuple[int, str]:
    """Run the row under callgrind (cachegrind with `cache`); return (total Ir, profile path)."""
    os.makedirs(OUT_DIR, exist_ok=True)
    out = os.path.join(OUT_DIR, f"{row}.{loop}.{n}.{'cg' if cache else 'out'}")
    if cache:
        cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes"]
        cmd += [f"--cachegrind-out-file={out}", python]
    else:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python]
    cmd += [os.path.join(HERE, "micro.py"), "--child", row, loop, "--n", str(n)]
    cmd += ["--seed", str(seed)]
    # A fixed hash seed makes dict and set layouts, hence instruction counts, repeatable.
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    status = json.loads(lines[-1]) if lines else {"status": "ERROR", "error": proc.stderr[-500:]}
    if status["status"] != "ok":
        raise SystemExit(f"{row} on {loop} with n={n}: {status['status']}: {status.get('error')}")
    return total_instructions(out), out


def total_instructions(path: str) -> int:
    # The profile ends with "totals: <Ir>" (or "summary:" in older valgrinds).
    total = 0
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    if not total:
        raise SystemExit(f"no totals line in {path}")
    return total


def cache_totals(path: str) -> dict[str, int]:
    """Every event's total in a cachegrind profile ("events:" names, "summary:" counts)."""
    names: list[str] = []
    values: list[int] = []
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith("summary:"):
                values = [int(v) for v in line.split()[1:]]
    if not names or len(names) != len(values):
        raise SystemExit(f"no events/summary lines in {path}")
    return dict(zip(names, values, strict=True))


def per_function(path: str) -> dict[str, int]:
    """Self instruction count of every function in a profile."""
    proc = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", "--show-percs=no", path],
        capture_output=True,
        text=True,
        check=True,
    )
    counts: dict[str, int] = {}
    in_list = False
    for line in proc.stdout.splitlines():
        if line.strip().endswith("file:function"):
            in_list = True
            continue
        if in_list:
            m = FUNC_LINE.match(line)
            if m:
                name = shorten(m.group(2))
                counts[name] = counts.get(name, 0) + int(m.group(1).replace(",", ""))
    return counts


def shorten(name: str) -> str:
    # Drop build directories and the object path: "ceval.c:_PyEval_EvalFrameDefault" is enough,
    # and recursion markers ('2) would split one function's cost over several lines.
    obj = re.search(r"\s+\[([^\]]*)\]$", name)
    name = name[: obj.start()] if obj else name
    file, sep, func = name.partition(":")  # file paths have no colon; Rust names do
    if file == "???" and obj:  # no debug info: the object at least says whose code it is
        return f"{os.path.basename(obj.group(1))}:{func}"
    func = re.sub(r"'\d+$", "", func)
    return f"{os.path.basename(file)}{sep}{func}" if sep else func


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", choices=list(micro.ROWS), help="a micro.py row")
    ap.add_argument("loops", nargs="?", default="oxloop", help="comma-separated loops")
    ap.add_argument("--n", type=int, help="operations in the first run (default: the --quick N)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--top", type=int, default=0, help="also show the K costliest functions/op")
    ap.add_argument("--python", default=sys.executable, help="interpreter to run the row with")
    ap.add_argument(
        "--cache",
        action="store_true",
        help="cachegrind with cache and branch simulation: every event per operation",
    )
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found")
    loops = micro.parse_list(args.loops, micro.LOOPS, "loop")
    row = micro.ROWS[args.row]
    n = args.n or row.quick_n  # callgrind is ~50x slower than native: the quick N is plenty

    if args.cache:
        return cache_main(row, loops, n, args)
    per_op: dict[str, float] = {}
    for loop in loops:
        print(f"{row.name} on {loop}: N={n:,} and 2N={2 * n:,} under callgrind ...", flush=True)
        i1, p1 = profile(row.name, loop, n, args.seed, args.python)
        i2, p2 = profile(row.name, loop, 2 * n, args.seed, args.python)
        per_op[loop] = (i2 - i1) / n
        print(f"  I(N)  = {i1:>16,}   {os.path.relpath(p1)}")
        print(f"  I(2N) = {i2:>16,}   {os.path.relpath(p2)}")
        print(f"  (I(2N) - I(N)) / N = {per_op[loop]:,.0f} instructions per operation")
        if args.top:
            before, after = per_function(p1), per_function(p2)
            diff = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after.keys() | before}
            print(f"  top {args.top} functions, self instructions per operation:")
            for name, cost in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
                print(f"    {cost:>9,.1f}  {100 * cost / per_op[loop]:5.1f}%  {name}")
        print()

    if len(per_op) > 1:
        base = per_op.get(micro.BASELINE)
        print(f"{row.label.format(n=micro.human_n(n))}: instructions per operation")
        for loop, cost in per_op.items():
            vs = ""
            if base and loop != micro.BASELINE:
                vs = f"  ({micro.ratio_text(cost, base)} than {micro.BASELINE})"
            print(f"  {loop:<8} {cost:>10,.0f}{vs}")
    return 0


def cache_main(row: micro.Row, loops: list[str], n: int, args: argparse.Namespace) -> int:
    """`--cache`: each cachegrind event per operation, (E(2N) - E(N)) / N, a loop per column."""
    per_op: dict[str, dict[str, float]] = {}
    for loop in loops:
        print(f"{row.name} on {loop}: N={n:,} and 2N={2 * n:,} under cachegrind ...", flush=True)
        _, p1 = profile(row.name, loop, n, args.seed, args.python, cache=True)
        _, p2 = profile(row.name, loop, 2 * n, args.seed, args.python, cache=True)
        e1, e2 = cache_totals(p1), cache_totals(p2)
        per_op[loop] = {k: (e2[k] - e1.get(k, 0)) / n for k in e2}
    print(f"\n{row.label.format(n=micro.human_n(n))}: cachegrind events per operation")
    print(f"  {'event':<6}" + "".join(f"{loop:>12}" for loop in loops))
    for event in CACHE_EVENTS:
        if all(event in per_op[loop] for loop in loops):
            cells = "".join(f"{per_op[loop][event]:>12,.1f}" for loop in loops)
            print(f"  {event:<6}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
