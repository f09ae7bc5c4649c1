"""``python -m fuzz``: run the differential fuzzer for a time budget, or replay a program.

  python -m fuzz --seconds 600            random programs for 10 minutes (make fuzz)
  python -m fuzz --seconds 60 --seed 0    the same programs every run (make fuzz-ci)
  python -m fuzz --replay FILE            run one program (a reproducer) on both loops

Exits 1 when oxloop crashed or hung, or a difference is neither allowed nor pending
(fuzz/allowlist.py); the report lists every difference with its program.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from .driver import Session
from .program import programs, render_step


class _BudgetSpent(BaseException):
    """Raised through Hypothesis (which re-raises what is not an Exception) to stop."""


def fuzz(
    seconds: float, seed: int | None, max_programs: int | None = None, session=None
) -> Session:
    session = session or Session()
    end = time.monotonic() + seconds

    @settings(
        database=None,
        deadline=None,
        max_examples=10**9,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(programs())
    def one(prog):
        if time.monotonic() > end or (
            max_programs is not None and session.programs >= max_programs
        ):
            raise _BudgetSpent
        session.run(prog)

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    try:
        one()
    except _BudgetSpent:
        pass
    return session


def load_program(text: str):
    return eval(text, {"__builtins__": {}}, {"nan": math.nan, "inf": math.inf})  # noqa: S307


def write_findings(session: Session, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for n, f in enumerate(session.findings.values()):
        path = os.path.join(out_dir, f"finding-{n}.txt")
        with open(path, "w") as fh:
            fh.write(repr(f.program) + "\n")
        f.file = path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=None, help="fixed seed (default: random)")
    ap.add_argument("--max-programs", type=int, default=None)
    ap.add_argument(
        "--replay", metavar="FILE", help="run the program in FILE (a repr) on both loops"
    )
    ap.add_argument("--out", default=os.path.join("target", "fuzz"), help="where reproducers go")
    args = ap.parse_args(argv)
    if args.replay:
        with open(args.replay) as fh:
            prog = load_program(fh.read())
        session = Session()
        try:
            res = session.run_both(prog)
        finally:
            session.close()
        for i, s in enumerate(prog):
            print(render_step(s))
            for k, (outs, _) in res.items():
                print(f"    {k:8} {outs[i] if i < len(outs) else ('not run',)}")
        for k, (_, events) in res.items():
            print(f"events {k}: {events}")
        diff = session.compare(prog, res)
        print("difference:", diff)
        return 1 if diff else 0
    t0 = time.monotonic()
    if args.seed is None:
        args.seed = random.getrandbits(32)  # random, but reported: --seed repeats the run
    session = fuzz(args.seconds, args.seed, args.max_programs)
    session.close()
    write_findings(session, args.out)
    session.report(seed=args.seed)
    print(
        f"\nfuzz: {time.monotonic() - t0:.0f} s;"
        f" reproducers in {args.out}/ (python -m fuzz --replay FILE)"
    )
    return 1 if session.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
