"""A small retry-with-backoff test suite, timed on real and on virtual time (docs/testing.md).

Role: the before/after figure of docs/testing.md. Run as a script, it runs pytest on this very
file twice in fresh interpreters — once as it stands (pytest-asyncio on asyncio's loop, real
time) and once with ``--oxloop-virtual-time`` — and prints each run's outcome line, wall time
and CPU time (user + system of the child). As a pytest module it is the suite itself: six tests
of a retry helper with a 50 ms round trip and 0.5 s doubling backoff.

Invariants: both runs execute the same tests with the same outcomes (the script fails
otherwise); nothing here is collected by the repository's own test run (``testpaths = tests``).

Usage: ``.venv/3.11/bin/python benches/virtual_time_suite.py``
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import sys
import time

import pytest


class Flaky:
    """An operation that is refused `failures` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0.05)  # the round trip
        if self.calls <= self.failures:
            raise ConnectionError(f"refused ({self.calls})")
        return "ok"


async def retry(op, *, base: float = 0.5, factor: float = 2.0, attempts: int = 6):
    delay = base
    for attempt in range(attempts):
        try:
            return await op()
        except ConnectionError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay *= factor


@pytest.mark.asyncio
@pytest.mark.parametrize("failures", [0, 1, 2, 3])
async def test_retry_succeeds(failures: int) -> None:
    op = Flaky(failures)
    assert await retry(op) == "ok"
    assert op.calls == failures + 1


@pytest.mark.asyncio
async def test_retry_gives_up() -> None:
    with pytest.raises(ConnectionError):
        await retry(Flaky(10))


@pytest.mark.asyncio
async def test_overall_deadline() -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(retry(Flaky(10), attempts=100), timeout=5)


def _run(*args: str) -> tuple[str, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, *args]
    cmd += ["-o", "asyncio_default_fixture_loop_scope=function"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return lines[-1], wall, cpu


def main() -> None:
    print(f"Python {sys.version.split()[0]}")
    outcomes = set()
    for label, args in [
        ("asyncio, real time", ()),
        ("oxloop, virtual time", ("--oxloop-virtual-time",)),
    ]:
        line, wall, cpu = _run(*args)
        outcomes.add(re.sub(r" in [\d.]+s.*", "", line))
        print(f"{label:22} {line:28} wall {wall:6.2f} s  cpu {cpu:5.2f} s")
    if len(outcomes) != 1:
        raise SystemExit(f"the two runs disagree: {outcomes}")


if __name__ == "__main__":
    main()
