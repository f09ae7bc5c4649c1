"""Load and fault tests: sizes, per-test figures and the summary table.

The size comes from OXLOOP_STRESS: unset or "ci" is the reduced size CI runs (`make stress-ci`, a
few minutes on 2 cores), "full" the size the issue names (`make stress`). Every test takes the
`loop` / `loop_factory` / `loop_kind` fixtures of tests/conftest.py, so it runs on oxloop and on
stock asyncio; each has a hard timeout (pytest-timeout) scaled with the size.

The `figures` fixture (autouse) records wall time, CPU time of this process and of its children,
and resident memory for every test; tests add their own figures to it. The table is printed at the
end of the run (and written as JSON lines to $OXLOOP_STRESS_REPORT when that is set).
"""

from __future__ import annotations

import json
import os
import resource
import time

import pytest
from _stress import FULL, SIZE, rss_mib


def pytest_configure(config):
    config.addinivalue_line("markers", "stress: a load or fault test of tests/stress")


def pytest_report_header(config):
    return f"oxloop stress size: {SIZE} (OXLOOP_STRESS={os.environ.get('OXLOOP_STRESS', '')!r})"


_RESULTS: list[dict] = []


@pytest.fixture(autouse=True)
def figures(request):
    """A dict of figures for this test, reported in the summary (wall, cpu, rss + the test's)."""
    figs: dict = {}
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss0 = rss_mib()
    t0 = time.monotonic()
    yield figs
    wall = time.monotonic() - t0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {
        "test": request.node.nodeid.split("::", 1)[-1],
        "wall_s": round(wall, 2),
        "cpu_s": round(self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime, 2),
        "child_cpu_s": round(kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime, 2),
        "rss_mib": round(rss_mib(), 1),
        "rss_delta_mib": round(rss_mib() - rss0, 1),
        **figs,
    }
    _RESULTS.append(row)


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section(f"stress figures ({SIZE} size)")
    for row in _RESULTS:
        rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "test")
        terminalreporter.write_line(f"{row['test']}: {rest}")
    path = os.environ.get("OXLOOP_STRESS_REPORT")
    if path:
        with open(path, "a") as f:
            for row in _RESULTS:
                f.write(json.dumps({"size": SIZE, **row}) + "\n")


__all__ = ["FULL", "SIZE"]
