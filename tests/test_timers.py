"""Loop core: timers.

call_later/call_at ordering (by deadline, FIFO on equal deadlines), TimerHandle (when(), cancel,
cancelled, repr, comparisons), loop.time() being time.monotonic(), timers never firing early,
mass cancellation, and odd delays (negative, zero, NaN, inf, huge, None) handled exactly as stock
asyncio handles them.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from _helpers import collect_errors, outcome, run_briefly, stock_outcome

RESOLUTION = time.get_clock_info("monotonic").resolution


# -- clock ------------------------------------------------------------------------------------


def test_time_is_monotonic_clock(loop):
    for _ in range(1000):
        before = time.monotonic()
        t = loop.time()
        after = time.monotonic()
        assert before <= t <= after
    assert isinstance(loop.time(), float)


def test_time_inside_callback_is_monotonic_clock(loop):
    seen = []

    def cb():
        before = time.monotonic()
        t = loop.time()
        after = time.monotonic()
        seen.append(before <= t <= after)

    for _ in range(10):
        loop.call_soon(cb)
    run_briefly(loop)
    assert seen == [True] * 10


def test_time_does_not_go_backwards(loop):
    last = loop.time()
    for _ in range(10000):
        now = loop.time()
        assert now >= last
        last = now


# -- TimerHandle -------------------------------------------------------------------------------


def test_call_later_returns_timer_handle(loop):
    before = loop.time()
    h = loop.call_later(10, lambda: None)
    after = loop.time()
    assert isinstance(h, asyncio.TimerHandle)
    assert isinstance(h, asyncio.Handle)
    assert before + 10 <= h.when() <= after + 10
    assert h.cancelled() is False
    h.cancel()
    assert h.cancelled() is True


def test_call_at_when_is_exact(loop):
    when = loop.time() + 5.123456789
    h = loop.call_at(when, lambda: None)
    assert isinstance(h, asyncio.TimerHandle)
    assert h.when() == when
    h.cancel()


def test_timer_handle_repr(loop):
    def my_callback():
        pass

    h = loop.call_later(10, my_callback)
    r = repr(h)
    assert r.startswith("<TimerHandle")
    assert "when=" in r
    assert "my_callback" in r
    h.cancel()
    r = repr(h)
    assert "cancelled" in r
    assert "when=" in r


def test_timer_handle_comparisons(loop):
    def cb():
        pass

    t = loop.time()
    h1 = loop.call_at(t + 1, cb)
    h2 = loop.call_at(t + 2, cb)
    h1b = loop.call_at(t + 1, cb)
    h1_args = loop.call_at(t + 1, cb, "arg")
    assert h1 < h2 and h1 <= h2 and h2 > h1 and h2 >= h1
    assert not (h2 < h1) and not (h1 > h2)
    assert h1 != h2
    assert h1 == h1b and h1 <= h1b and h1 >= h1b and not (h1 != h1b)
    assert hash(h1) == hash(h1b)
    assert h1 != h1_args
    assert h1 == h1 and not (h1 != h1)
    assert (h1 == 5) is False and (h1 != 5) is True
    with pytest.raises(TypeError):
        h1 < 5  # noqa: B015
    assert sorted([h2, h1_args, h1])[0].when() == t + 1
    assert sorted([h2, h1])[-1] is h2
    h1b.cancel()
    assert h1 != h1b  # cancelled state takes part in equality
    for h in (h1, h2, h1_args):
        h.cancel()


def test_timer_handle_cancelled_comparison_matches_stock(loop):
    def scenario(lp):
        t = lp.time() + 100

        def cb():
            pass

        a = lp.call_at(t, cb)
        b = lp.call_at(t, cb)
        b.cancel()
        res = (a == b, a <= b, a >= b, a < b, a > b, a != b)
        a.cancel()
        return res

    assert outcome(scenario, loop) == stock_outcome(scenario)


def test_timer_handle_cancel_is_idempotent_and_after_run(loop):
    calls = []
    h = loop.call_later(0, calls.append, 1)
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert calls == [1]
    assert h.cancelled() is False
    h.cancel()
    h.cancel()
    assert h.cancelled() is True


# -- ordering ---------------------------------------------------------------------------------


def test_call_later_fires_in_deadline_order(loop):
    calls = []
    for delay in (0.03, 0.01, 0.02, 0.0, 0.015, 0.005):
        loop.call_later(delay, calls.append, delay)
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert calls == sorted([0.03, 0.01, 0.02, 0.0, 0.015, 0.005])


def test_call_at_mixed_with_call_later(loop):
    calls = []
    t = loop.time()
    loop.call_at(t + 0.02, calls.append, "at-20ms")
    loop.call_later(0.01, calls.append, "later-10ms")
    loop.call_at(t + 0.005, calls.append, "at-5ms")
    loop.call_at(t + 0.03, loop.stop)
    loop.run_forever()
    assert calls == ["at-5ms", "later-10ms", "at-20ms"]


def test_equal_deadlines_all_fire_in_the_same_iteration(loop):
    """asyncio's heapq is not stable: equal deadlines fire together, in no promised order."""
    calls = []
    when = loop.time() + 0.01
    handles = [loop.call_at(when, calls.append, i) for i in range(200)]
    for h in handles[::3]:
        h.cancel()
    loop.call_at(when + 0.001, loop.stop)

    def probe():
        calls.append("probe")

    # the probe is due strictly later, so it runs after every equal-deadline timer
    loop.call_at(when + 0.0005, probe)
    loop.run_forever()
    assert calls[-1] == "probe"
    assert sorted(calls[:-1]) == [i for i in range(200) if i % 3]


def test_two_equal_deadlines_keep_scheduling_order(loop):
    calls = []
    when = loop.time() + 0.005
    loop.call_at(when, calls.append, "first")
    loop.call_at(when, calls.append, "second")
    loop.call_at(when + 0.001, loop.stop)
    loop.run_forever()
    assert calls == ["first", "second"]


def test_past_deadline_fires_next_iteration(loop):
    calls = []
    loop.call_at(loop.time() - 0.5, calls.append, "past")
    loop.call_soon(calls.append, "soon")
    loop.call_at(-1.0, calls.append, "minus-one")
    run_briefly(loop)
    assert calls == ["soon", "minus-one", "past"]


def test_timer_scheduled_from_timer_runs_next_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_later(0, calls.append, "timer-from-first")
        loop.call_soon(calls.append, "soon-from-first")

    loop.call_later(0, first)
    loop.call_later(0, calls.append, "second")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert calls == ["first", "second", "soon-from-first", "timer-from-first"]


def test_timer_cancelled_by_earlier_callback_in_same_iteration(loop):
    errors = collect_errors(loop)
    calls = []
    when = loop.time() - 1  # all due at the next iteration, in this order
    victim = []
    loop.call_at(when, lambda: victim[0].cancel())
    victim.append(loop.call_at(when + 0.1, calls.append, "victim"))
    loop.call_at(when + 0.2, calls.append, "survivor")
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert calls == ["survivor"]
    assert errors == []


# -- precision --------------------------------------------------------------------------------


def test_timer_never_fires_before_its_time(loop):
    records = []

    def cb(h_box):
        records.append((loop.time(), h_box[0].when()))

    for delay in (0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.013, 0.021):
        box = []
        box.append(loop.call_later(delay, cb, box))
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert len(records) == 8
    for fired, when in records:
        assert fired >= when - RESOLUTION, (fired, when)


def test_sleep_lasts_at_least_its_delay(loop):
    async def main():
        durations = []
        for delay in (0.001, 0.005, 0.01):
            t0 = loop.time()
            await asyncio.sleep(delay)
            durations.append((loop.time() - t0, delay))
        return durations

    for elapsed, delay in loop.run_until_complete(main()):
        assert elapsed >= delay - RESOLUTION


def test_loop_sleeps_until_timer_without_spinning(loop):
    """Waiting for a 50 ms timer takes a handful of iterations, not a busy loop."""
    ticks = []

    def tick():
        ticks.append(loop.time())
        if len(ticks) < 1000:
            loop.call_later(0.01, tick)

    loop.call_soon(tick)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert 2 <= len(ticks) <= 7


# -- cancellation at scale --------------------------------------------------------------------


def test_cancelling_many_timers(loop):
    calls = []
    now = loop.time()
    handles = [loop.call_at(now + 0.001 + i * 1e-6, calls.append, i) for i in range(20000)]
    for i, h in enumerate(handles):
        if i % 1000:
            h.cancel()
    loop.call_at(now + 0.05, loop.stop)
    loop.run_forever()
    assert calls == list(range(0, 20000, 1000))
    assert all(h.cancelled() for i, h in enumerate(handles) if i % 1000)


def test_cancelling_all_far_timers_lets_loop_stop(loop):
    handles = [loop.call_later(3600 + i, lambda: None) for i in range(5000)]
    for h in handles:
        h.cancel()
    assert loop.run_until_complete(asyncio.sleep(0.001, "done")) == "done"


def test_cancel_timers_while_running(loop):
    calls = []
    handles = [loop.call_later(0.02, calls.append, i) for i in range(500)]

    def cancel_odd():
        for h in handles[1::2]:
            h.cancel()

    loop.call_later(0.001, cancel_odd)
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert calls == list(range(0, 500, 2))


# -- odd delays -------------------------------------------------------------------------------


def test_negative_and_zero_delays_fire_next_iteration(loop):
    calls = []
    loop.call_later(0, calls.append, "zero")
    loop.call_later(-1, calls.append, "minus-one")
    loop.call_later(-math.inf, calls.append, "minus-inf")
    loop.call_soon(calls.append, "soon")
    run_briefly(loop)
    # Earlier deadlines first: -inf < now-1 < now.
    assert calls == ["soon", "minus-inf", "minus-one", "zero"]


def test_nan_delay_matches_stock(loop):
    """Stock asyncio: a NaN deadline never compares >= now, so it fires at the next timer pass."""

    def scenario(lp):
        calls = []
        h = lp.call_later(math.nan, calls.append, "nan")
        when_is_nan = math.isnan(h.when())
        lp.call_later(0, calls.append, "zero")
        lp.call_soon(calls.append, "soon")
        lp.call_soon(lp.stop)
        lp.run_forever()
        first_iteration = sorted(calls)
        lp.call_later(0.001, lp.stop)
        lp.run_forever()
        return when_is_nan, first_iteration, sorted(calls)

    with_loop = outcome(scenario, loop)
    assert with_loop == stock_outcome(scenario)
    assert with_loop == ("ok", (True, ["nan", "soon", "zero"], ["nan", "soon", "zero"]))


def test_inf_delay_never_fires_and_loop_still_stops(loop):
    calls = []
    h = loop.call_later(math.inf, calls.append, "inf")
    h_at = loop.call_at(math.inf, calls.append, "at-inf")
    assert h.when() == math.inf
    assert h_at.when() == math.inf
    loop.call_later(0.01, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5
    assert calls == []
    assert loop.run_until_complete(asyncio.sleep(0.001, "ok")) == "ok"
    assert calls == []
    assert h.cancelled() is False
    h.cancel()
    h_at.cancel()


def test_huge_delay_never_fires(loop):
    calls = []
    handles = [loop.call_later(d, calls.append, d) for d in (1e9, 1e18, 1e300, 2.0**63)]
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    assert calls == []
    for h in handles:
        h.cancel()


def test_only_inf_timer_then_stop_from_thread(loop):
    """The loop blocks on an infinite timer; a thread-safe stop still wakes it."""
    import threading

    loop.call_later(math.inf, lambda: None)
    started = threading.Event()
    loop.call_soon(started.set)
    t = threading.Thread(target=lambda: (started.wait(5), loop.call_soon_threadsafe(loop.stop)))
    t.start()
    t0 = time.monotonic()
    loop.run_forever()
    t.join()
    assert time.monotonic() - t0 < 5


def test_call_later_none_delay_is_type_error(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, lambda: None)


def test_call_at_none_matches_stock(loop):
    def scenario(lp):
        return lp.call_at(None, lambda: None)

    ref = stock_outcome(scenario)
    assert ref[0] == "raise"
    assert outcome(scenario, loop) == ref


@pytest.mark.parametrize("bad", ["1", object(), [1]])
def test_call_later_non_number_delay_is_type_error(loop, bad):
    assert stock_outcome(lambda lp: lp.call_later(bad, lambda: None))[:2] == ("raise", TypeError)
    with pytest.raises(TypeError):
        loop.call_later(bad, lambda: None)
    # the loop is not corrupted
    assert loop.run_until_complete(asyncio.sleep(0, "fine")) == "fine"


def test_call_later_accepts_int_and_bool_delays(loop):
    calls = []
    loop.call_later(0, calls.append, "int")
    loop.call_later(False, calls.append, "bool")
    h = loop.call_later(1, calls.append, "one")
    run_briefly(loop)
    assert calls == ["int", "bool"]
    h.cancel()


def test_call_at_with_an_int_deadline_beyond_a_float(loop):
    # asyncio accepts it: the handle keeps the int, and the heap orders it exactly (int/float
    # comparisons are exact). oxloop refused it with OverflowError (issue 15).
    fired = []
    far = loop.call_at(10**400, fired.append, "far")
    past = loop.call_at(-(10**400), fired.append, "past")
    assert far.when() == 10**400 and past.when() == -(10**400)
    loop.call_later(0, fired.append, "now")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert fired == ["past", "now"]
    assert not far.cancelled()
    # Still ordered behind every reachable deadline.
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert fired == ["past", "now"]
    far.cancel()


# -- a replaced clock (issue 15) -----------------------------------------------------------------
# Test suites control time by replacing `loop.time`: asyncio's `_run_once` calls `self.time()`
# for the poll timeout (when nothing is ready and a timer is scheduled) and, after the poll,
# for which timers are due; `call_later` uses `self.time() + delay`. The expected outcomes
# below are what stock asyncio does, and the same on every version.


def _tick_until(loop, now, out, step, end):
    """A callback chain that advances the fake clock by `step` per iteration (so the loop
    never blocks) and stops the loop once it reaches `end`."""

    def tick():
        out.append(("tick", now[0]))
        now[0] += step
        if now[0] < end:
            loop.call_soon(tick)
        else:
            loop.stop()

    loop.call_soon(tick)


def test_patched_time_drives_call_later_and_call_at(loop):
    from unittest import mock

    out = []
    now = [1000.0]
    with mock.patch.object(loop, "time", side_effect=lambda: now[0]) as fake:
        assert loop.call_later(10, out.append, "later 10").when() == 1010.0
        loop.call_at(1005, out.append, "at 1005")
        _tick_until(loop, now, out, 3, 1020)
        loop.run_forever()
        calls = fake.call_count
    assert out == [
        ("tick", 1000.0),
        ("tick", 1003.0),
        ("tick", 1006.0),
        "at 1005",
        ("tick", 1009.0),
        ("tick", 1012.0),
        "later 10",
        ("tick", 1015.0),
        ("tick", 1018.0),
    ]
    # One call for call_later, one per iteration after the poll (the loop never blocks, so
    # never asks for a timeout).
    assert calls == 8


def test_frozen_patched_time_holds_a_due_timer_back(loop):
    """A timer due by the real clock does not run while the patched clock says it is not."""
    from unittest import mock

    out = []
    fake_now = 50.0
    spins = [0]

    def spin():
        spins[0] += 1
        if spins[0] < 200:
            loop.call_soon(spin)
        else:
            loop.stop()

    loop.time = mock.Mock(return_value=fake_now)
    try:
        loop.call_later(0, out.append, "due at once")
        loop.call_at(fake_now + 1, out.append, "due at 51")
        loop.call_soon(spin)
        loop.run_forever()
        assert out == ["due at once"]
        loop.time.return_value = fake_now + 1.5
        spins[0] = 190
        loop.call_soon(spin)
        loop.run_forever()
        assert out == ["due at once", "due at 51"]
    finally:
        del loop.time
    # The real clock again: a short timer fires promptly, a far one does not.
    loop.call_later(0.01, out.append, "real")
    loop.call_later(3600, out.append, "far")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out[-1] == "real"


def test_patched_time_sets_the_poll_timeout(loop):
    """Nothing ready, one timer: the loop blocks for `_when - self.time()` (here 0.05 s of real
    time, although the real clock says the timer is an hour away), asking the patched clock
    before and after the poll."""
    from unittest import mock

    out = []
    times = [0.0, 3600.0 - 0.05, 3600.0]
    with mock.patch.object(loop, "time", side_effect=lambda: times.pop(0) if times else 3600.0):
        loop.call_later(3600, out.append, "fired")  # time() -> 0.0: when = 3600
        loop.call_at(3600, loop.stop)
        t0 = time.monotonic()
        loop.run_forever()
        waited = time.monotonic() - t0
        calls = loop.time.call_count
    assert out == ["fired"]
    assert 0.04 <= waited < 2.0
    assert calls == 3  # call_later, the timeout, the due timers


def test_subclass_time_drives_timers(loop_kind, loop_factory):
    probe = loop_factory()
    probe.close()  # only its class is wanted; an unclosed loop warns when collected
    base = type(probe)

    class Clocked(base):
        fake = 100.0

        def time(self):
            return self.fake

    lp = Clocked()
    try:
        out = []
        lp.call_later(5, out.append, "at 105")
        lp.call_at(103, out.append, "at 103")
        steps = iter([101.0, 104.0, 106.0])

        def advance():
            try:
                lp.fake = next(steps)
            except StopIteration:
                lp.stop()
                return
            out.append(lp.fake)
            lp.call_soon(advance)

        lp.call_soon(advance)
        lp.run_forever()
        # The timers due at an iteration run after the callbacks already ready.
        assert out == [101.0, 104.0, 106.0, "at 103", "at 105"]
    finally:
        lp.close()


def test_time_patched_on_the_class(loop):
    from unittest import mock

    out = []
    now = [10.0]
    with mock.patch.object(type(loop), "time", lambda self: now[0]):
        loop.call_later(2, out.append, "at 12")
        _tick_until(loop, now, out, 1, 15)
        loop.run_forever()
    assert out == [
        ("tick", 10.0),
        ("tick", 11.0),
        ("tick", 12.0),
        "at 12",
        ("tick", 13.0),
        ("tick", 14.0),
    ]
    # Unpatched again: the loop follows the real clock.
    loop.call_later(0.01, out.append, "real")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out[-1] == "real"
