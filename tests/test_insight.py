"""Always-on loop metrics and slow-callback reports without debug mode (oxloop only).

These are oxloop features with no asyncio counterpart, so the tests run on oxloop alone. The
stalls are real (a watchdog can only see real time), but short: ``slow_callback_duration`` is
lowered to 50 ms and the stalls last 150 ms.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import oxloop
import pytest
from _helpers import collect_errors, python_subprocess

STALL = 0.15
THRESHOLD = 0.05


@pytest.fixture
def lp():
    loop = oxloop.new_event_loop()
    try:
        yield loop
    finally:
        if not loop.is_closed():
            loop.close()


def burn_cpu(seconds: float) -> int:
    end = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < end:  # the line the report must name
        spins += 1
    return spins


# -- metrics ---------------------------------------------------------------------------------


def test_counters_follow_what_the_loop_did(lp):
    before = lp.metrics()
    assert isinstance(before, oxloop.LoopMetrics)
    assert before.iterations == 0 and before.callbacks == 0

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(100):
            loop.call_soon(lambda: None)
        t = loop.call_later(10, lambda: None)
        t.cancel()
        await asyncio.sleep(0.001)
        a, b = __import__("socket").socketpair()
        loop.add_reader(a, lambda: None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        loop.remove_reader(a)
        a.close()
        b.close()

    lp.run_until_complete(main())
    m = lp.metrics()
    assert m.callbacks >= 100
    assert m.iterations >= 3
    assert m.timers_scheduled >= 2  # call_later + the sleep's timer
    assert m.timers_cancelled >= 1
    assert m.timers_fired >= 1
    assert m.busy_ns > 0 and m.idle_ns > 0
    assert 0.0 < m.utilization < 1.0
    assert sum(m.busy_histogram) == m.iterations - 1  # the first poll has no busy time before it
    assert m.longest_stall_ns <= m.busy_ns
    assert m.timestamp_ns > before.timestamp_ns


def test_snapshots_are_immutable_and_subtract_into_intervals(lp):
    lp.run_until_complete(asyncio.sleep(0))
    m1 = lp.metrics()
    with pytest.raises(AttributeError):
        m1.iterations = 5  # type: ignore[misc]
    lp.run_until_complete(asyncio.sleep(0.01))
    m2 = lp.metrics()
    iv = m2 - m1
    assert iv.interval and not m2.interval
    assert iv.iterations == m2.iterations - m1.iterations > 0
    assert iv.idle_ns == m2.idle_ns - m1.idle_ns
    pairs = zip(m2.busy_histogram, m1.busy_histogram, strict=True)
    assert iv.busy_histogram == tuple(a - b for a, b in pairs)
    assert 0.0 <= iv.utilization <= 1.0
    assert iv.fds == m2.fds  # gauges are the later snapshot's
    with pytest.raises(ValueError):
        iv - m1
    with pytest.raises(TypeError):
        m2 - 1  # type: ignore[operator]


def test_busy_percentiles_come_from_the_histogram():
    raw = (0,) * 15 + tuple([0] * 40)
    empty = oxloop.LoopMetrics._from_raw(raw)
    assert empty.busy_percentile(0.5) == 0 and empty.utilization == 0.0
    hist = [0] * 40
    hist[10] = 90  # 512-1023 ns
    hist[20] = 10  # ~0.5-1 ms
    m = oxloop.LoopMetrics._from_raw((0,) * 15 + tuple(hist))
    assert m.busy_percentile(0.5) == 1023
    assert m.busy_percentile(0.9) == 1023
    assert m.busy_percentile(0.99) == (1 << 20) - 1
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError):
            m.busy_percentile(bad)
    d = m.as_dict()
    assert d["busy_p50_ns"] == 1023 and "utilization" in d


def test_slow_iterations_use_slow_callback_duration(lp):
    lp.slow_callback_duration = THRESHOLD
    assert lp.slow_callback_duration == THRESHOLD

    async def main():
        asyncio.get_running_loop().call_soon(burn_cpu, STALL)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    lp.run_until_complete(main())
    m = lp.metrics()
    assert m.slow_iterations == 1
    assert m.longest_stall_ns >= STALL * 1e9 * 0.9


def test_time_stopped_between_runs_is_not_busy(lp):
    lp.run_until_complete(asyncio.sleep(0))
    m1 = lp.metrics()
    time.sleep(STALL)  # the loop is stopped: neither busy nor idle
    lp.run_until_complete(asyncio.sleep(0))
    iv = lp.metrics() - m1
    assert iv.busy_ns < STALL * 1e9 / 2
    assert iv.slow_iterations == 0 and lp.metrics().longest_stall_ns < STALL * 1e9 / 2


def test_slow_callback_duration_keeps_any_value(lp):
    # asyncio stores whatever it is given; a non-number only means "never slow".
    lp.slow_callback_duration = "soon"
    assert lp.slow_callback_duration == "soon"
    lp.run_until_complete(asyncio.sleep(0))
    assert lp.metrics().slow_iterations == 0


def test_metrics_are_readable_from_another_thread_while_running(lp):
    seen = []

    def reader():
        for _ in range(200):
            seen.append(lp.metrics().iterations)

    async def main():
        t = threading.Thread(target=reader)
        t.start()
        while t.is_alive():
            await asyncio.sleep(0)
        t.join()

    lp.run_until_complete(main())
    assert len(seen) == 200 and seen == sorted(seen)


# -- slow-callback reports -----------------------------------------------------------------


def _run_with_reports(lp, coro_fn, threshold=THRESHOLD, **kw):
    reports = []
    lp.slow_callback_duration = threshold
    lp.enable_slow_callback_reports(reports.append, min_interval=0, **kw)

    async def main():
        await coro_fn(asyncio.get_running_loop())
        # The report is queued when the watchdog sees the stall end (within ~5 ms here).
        for _ in range(100):
            if reports:
                break
            await asyncio.sleep(0.005)

    lp.run_until_complete(main())
    return reports


def test_cpu_burn_is_reported_with_its_line(lp, caplog):
    async def body(loop):
        loop.call_soon(burn_cpu, STALL)
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        reports = _run_with_reports(lp, body)
    assert len(reports) == 1
    r = reports[0]
    assert isinstance(r, oxloop.SlowCallbackReport)
    assert r.sampled
    assert r.stack[-1].name == "burn_cpu"
    # The stack is sampled at one instant, which lands on either line of the burn loop: its
    # test or its body (the body more often on a slower interpreter, such as a debug build).
    assert r.stack[-1].line in (
        "while time.perf_counter() < end:  # the line the report must name",
        "spins += 1",
    )
    # At least the threshold by construction; the upper bound allows a loaded machine.
    assert THRESHOLD <= r.duration <= STALL * 3
    assert "burn_cpu(" in r.callback  # 3.13 drops the arguments outside debug mode
    assert any(
        rec.getMessage().startswith("Executing <Handle burn_cpu(")
        and "took" in rec.getMessage()
        and "in burn_cpu" in rec.getMessage()
        for rec in caplog.records
    )
    assert lp.metrics().slow_callbacks == 1


def test_blocking_sleep_in_a_coroutine_names_the_sleep_line(lp):
    async def sleepy():
        await asyncio.sleep(0)
        time.sleep(STALL)  # blocking
        await asyncio.sleep(0)

    async def body(loop):
        await asyncio.create_task(sleepy(), name="sleepy-task")

    reports = _run_with_reports(lp, body)
    assert len(reports) == 1
    r = reports[0]
    assert r.task_name == "sleepy-task"
    assert r.coroutine and r.coroutine.endswith("sleepy")
    assert r.stack[-1].name == "sleepy" and r.stack[-1].line == "time.sleep(STALL)  # blocking"
    assert r.await_chain and "in sleepy" in r.await_chain[0]


def test_blocking_after_an_awaited_future_names_the_task(lp):
    # The Task's wakeup is queued without a Handle (src/loop_core/mod.rs, `is_task_wakeup`);
    # the report still gets the Handle asyncio would have run.
    async def waiter(fut):
        await fut
        time.sleep(STALL)  # blocking, in the step the wakeup runs

    async def body(loop):
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "ready")
        await loop.create_task(waiter(fut), name="waking-task")

    reports = _run_with_reports(lp, body)
    assert len(reports) == 1
    r = reports[0]
    assert r.task_name == "waking-task"
    assert r.stack[-1].name == "waiter"
    assert r.stack[-1].line == "time.sleep(STALL)  # blocking, in the step the wakeup runs"
    assert "task_wakeup" in r.callback, r.callback


def test_no_report_for_a_burst_of_fast_callbacks(lp):
    async def body(loop):
        for _ in range(1000):
            loop.call_soon(lambda: None)
        await asyncio.sleep(0)
        await asyncio.sleep(0.02)

    # asyncio's default threshold (a shared CI machine can deschedule us for 50 ms).
    assert _run_with_reports(lp, body, threshold=0.1) == []
    assert lp.metrics().slow_callbacks == 0


def test_a_c_call_holding_the_gil_is_reported_unsampled(lp):
    # Catastrophic backtracking: the regex engine holds the GIL for the whole stall.
    pattern = re.compile(r"(a+)+$")
    subject = "a" * 24 + "b"
    t0 = time.perf_counter()
    pattern.match(subject)
    cost = time.perf_counter() - t0
    if cost < THRESHOLD * 2:
        pytest.skip(f"regex stall too short on this machine ({cost:.3f} s)")

    async def body(loop):
        loop.call_soon(pattern.match, subject)
        await asyncio.sleep(0)

    reports = _run_with_reports(lp, body)
    assert len(reports) == 1
    assert not reports[0].sampled
    assert "held the GIL" in reports[0].note
    # The loop kept the handle as the callback ended, so the report still names it.
    assert reports[0].callback.startswith("<Handle Pattern.match(")


def test_rate_limit_counts_suppressed_reports(lp):
    reports = []
    lp.slow_callback_duration = 0.02
    lp.enable_slow_callback_reports(reports.append, min_interval=60)

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(3):
            loop.call_soon(burn_cpu, 0.1)
            await asyncio.sleep(0.02)
        # Each report is queued when the watchdog sees its stall end: wait for the third.
        for _ in range(200):
            if loop.metrics().slow_callbacks >= 3:
                break
            await asyncio.sleep(0.01)

    lp.run_until_complete(main())
    assert len(reports) == 1
    assert lp.metrics().slow_callbacks == 3


def test_hook_errors_reach_the_exception_handler(lp):
    errors = collect_errors(lp)

    def hook(report):
        raise ZeroDivisionError("hook")

    lp.slow_callback_duration = THRESHOLD
    lp.enable_slow_callback_reports(hook, min_interval=0)

    async def main():
        asyncio.get_running_loop().call_soon(burn_cpu, STALL)
        for _ in range(100):
            await asyncio.sleep(0.005)
            if errors:
                break

    lp.run_until_complete(main())
    assert [e["message"] for e in errors] == ["Exception in the slow-callback report hook"]
    assert isinstance(errors[0]["exception"], ZeroDivisionError)


def test_bad_arguments(lp):
    with pytest.raises(TypeError):
        lp.enable_slow_callback_reports(hook=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lp.enable_slow_callback_reports(min_interval=-1)
    assert not lp._watchdog_running()


def test_watchdog_thread_is_joined_on_disable_and_close(lp):
    def watchdogs():
        return [t for t in threading.enumerate() if t.name == "oxloop-watchdog"]

    base = len(watchdogs())
    lp.enable_slow_callback_reports()
    lp.enable_slow_callback_reports()  # idempotent: still one thread
    assert lp._watchdog_running()
    lp.disable_slow_callback_reports()
    assert not lp._watchdog_running()
    lp.enable_slow_callback_reports()
    lp.close()
    assert not lp._watchdog_running()
    assert len(watchdogs()) == base


def test_debug_mode_keeps_asyncios_own_report(lp, caplog):
    lp.set_debug(True)
    lp.slow_callback_duration = THRESHOLD

    async def main():
        asyncio.get_running_loop().call_soon(burn_cpu, STALL)
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        lp.run_until_complete(main())
    msgs = [r.getMessage() for r in caplog.records if "burn_cpu" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].startswith("Executing <Handle burn_cpu(")
    assert "Blocked at" not in msgs[0]  # asyncio's report, not the watchdog's


def test_environment_variable_enables_reports():
    code = (
        "import asyncio, time, oxloop\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    loop.slow_callback_duration = 0.05\n"
        "    loop.call_soon(time.sleep, 0.15)\n"
        "    await asyncio.sleep(0)\n"
        "    await asyncio.sleep(0.05)\n"
        "oxloop.run(main())\n"
    )
    proc = python_subprocess(code, env={"OXLOOP_SLOW_CALLBACKS": "1"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Executing <Handle sleep(" in err
    quiet = python_subprocess(code)
    _, err = quiet.communicate(timeout=60)
    assert quiet.returncode == 0 and "Executing" not in err
