"""A smoke run of benches/streams_bulk.py (issue 18's bulk rows) at a tiny size.

Benchmark tooling, not loop behaviour: no loop fixture. Both modes (one process, and two
processes with the transfer both ways at once) run 2 MiB on oxloop and stock asyncio, in the
script's real child processes, and must print a row per loop: a few seconds in all.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("mode", [[], ["--two-process"], ["--two-process", "--family", "unix"]])
def test_streams_bulk_prints_a_row_per_loop(mode):
    script = os.path.join(ROOT, "benches", "streams_bulk.py")
    args = ["--total-mib", "2", "--chunk-mib", "0.5", "--rounds", "1", "--loops", "oxloop,asyncio"]
    proc = subprocess.run(
        [sys.executable, script, *args, *mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert ("two processes, 2 MiB each way at once" in lines[0]) == bool(mode)
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == {"oxloop", "asyncio"}
    # wall s, MiB/s and the server's and the client's CPU s; or wall s, CPU s and MiB/s.
    assert all(len(cells) == (4 if mode else 3) for cells in rows.values())
    assert all(float(cell) > 0 for cells in rows.values() for cell in cells)
