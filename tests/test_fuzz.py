"""The differential fuzzer (fuzz/): a short fixed-seed run, and the driver's own checks.

The run compares oxloop with stock asyncio by itself (each program runs on both, in child
processes), so these tests take no loop fixture. `make fuzz` and `make fuzz-ci` run longer.
"""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

pytest.importorskip("hypothesis")

from fuzz import allowlist  # noqa: E402
from fuzz.__main__ import fuzz, load_program  # noqa: E402
from fuzz.driver import Session  # noqa: E402
from fuzz.program import render_step  # noqa: E402


def _compat_rows() -> list[str]:
    with open(os.path.join(ROOT, "docs", "compatibility.md")) as f:
        return [line[2:] for line in f if line.startswith("| ") and not line.startswith("| ---")]


def test_every_allowed_difference_has_its_row_in_compatibility_md():
    rows = _compat_rows()
    named = [e.row for e in allowlist.ALLOWED] + [row for _, row in allowlist.TAINTS]
    named += [row for _, row in allowlist.EVENT_ALLOWED]
    for row in named:
        assert any(r.startswith(row) for r in rows), row
    # A pending entry is a known bug, not a divergence: it names the issue item instead.
    assert all(e.pending and not e.row for e in allowlist.PENDING)


def test_a_short_run_finds_no_crash_and_no_new_difference():
    session = fuzz(seconds=60, seed=0, max_programs=30)
    session.close()
    assert session.programs == 30
    new = [f for f in session.findings.values() if f.status == "new"]
    assert not session.crashes and not new, session.report() or (session.crashes, new)


def _run(prog, **kw):
    session = Session(**kw)
    try:
        return session, session.run_both(prog)
    finally:
        session.close()


def test_a_crash_is_caught_with_its_step_and_the_worker_restarts():
    prog = load_program(
        "(('direct', ('loop', 'self'), 'call_soon', 'call', (('fn', 'abort'),), ()),"
        " ('direct', ('loop', 'self'), 'run_until_complete', 'call', (('coro', 'sleep0'),), ()))"
    )
    session = Session()
    try:
        for _ in range(2):  # the second run needs a new worker
            res = session.run_both(prog)
            for kind in ("asyncio", "oxloop"):
                outs, events = res[kind]
                assert outs[0] == ("ok", "Handle")
                assert outs[1][:2] == ("crash", "signal SIGABRT")
                assert events is None
        assert session.workers["oxloop"].restarts == 2
        assert "loop.run_until_complete" in render_step(prog[1])
    finally:
        session.close()


def test_a_hang_is_caught():
    prog = load_program(
        "(('direct', ('loop', 'self'), 'call_soon', 'call', (('fn', 'hang'),), ()),)"
    )
    _, res = _run(prog, step_timeout=1.0)
    for kind in ("asyncio", "oxloop"):
        outs, events = res[kind]
        assert outs == [("ok", "Handle"), ("hang",)]  # the hang is in the final run


@pytest.mark.parametrize("mode", ["direct", "thread"])
def test_a_stop_left_pending_by_another_thread_is_not_an_event(mode):
    # A loop.stop() from another thread lands in whichever iteration the thread's timing gives
    # it, so whether a stop is still pending when the program's final run starts is timing (it
    # made fuzz-ci report the same program as differing on either loop). Called from a thread
    # while the loop is not running, the stop is always left pending: the final run must not
    # count it. The same stop called directly is the program's own, and stays an event.
    prog = load_program(f"(('{mode}', ('loop', 'self'), 'stop', 'call', (), ()),)")
    _, res = _run(prog)
    for kind in ("asyncio", "oxloop"):
        outs, events = res[kind]
        assert outs == [("ok", "None")], (kind, outs)
        assert (("flush-raise", "RuntimeError") in events) == (mode == "direct"), (kind, events)
