"""Runs benches/tls_bio/tls_bio (built by its Makefile) and prints the per-message table.

Role: the measurement behind docs/tls.md's cost model of approach B (issue 18): the server's
cost of one TLS 1.3 echo message through memory BIOs (``mem``, what CPython's SSLObject and so
oxloop's approach A do), through a BIO over caller-owned buffers (``own``), and through one that
hands each record on at once (``sink``), at 1 KiB and 64 KiB.

    python3 run.py BINARY [--rounds 5]      # CPU ns per message, median of interleaved rounds
    python3 run.py --callgrind BINARY       # instructions per message: (I(2M) - I(M)) / M
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile

MODES = ("mem", "own", "sink")
SIZES = (1024, 65536)


def native(binary: str, mode: str, size: int) -> float:
    n = 20000 if size <= 4096 else 2000
    out = subprocess.run([binary, mode, str(size), str(n)], capture_output=True, text=True)
    out.check_returncode()
    return float(out.stdout.split()[4])


def instructions(binary: str, mode: str, size: int) -> int:
    m = 1000 if size <= 4096 else 100
    totals = []
    with tempfile.TemporaryDirectory() as d:
        for n in (m, 2 * m):
            path = os.path.join(d, "cg.out")
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--quiet",
                    "--collect-atstart=no",
                    f"--callgrind-out-file={path}",
                    binary,
                    mode,
                    str(size),
                    str(n),
                ],
                check=True,
                capture_output=True,
            )
            with open(path) as f:
                line = next(x for x in f if x.startswith(("summary:", "totals:")))
            totals.append(int(line.split()[1]))
    return (totals[1] - totals[0]) // m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--callgrind", action="store_true")
    a = ap.parse_args()
    if a.callgrind:
        print("server instructions per echo message (callgrind)")
        res = {(s, k): instructions(a.binary, k, s) for s in SIZES for k in MODES}
        fmt = "{:>14,}"
    else:
        print(f"server CPU ns per echo message (median of {a.rounds} interleaved rounds)")
        runs: dict[tuple[int, str], list[float]] = {(s, k): [] for s in SIZES for k in MODES}
        for _ in range(a.rounds):
            for s in SIZES:
                for k in MODES:
                    runs[s, k].append(native(a.binary, k, s))
        res = {key: statistics.median(v) for key, v in runs.items()}
        fmt = "{:>14,.0f}"
    print(f"{'size':<8}" + "".join(f"{k:>14}" for k in MODES) + f"{'mem-own':>14}{'mem-sink':>14}")
    for s in SIZES:
        row = [res[s, k] for k in MODES]
        cells = [*row, row[0] - row[1], row[0] - row[2]]
        print(f"{s:<8}" + "".join(fmt.format(x) for x in cells))


if __name__ == "__main__":
    main()
