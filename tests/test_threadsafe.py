"""Loop core: cross-thread entry points and executors.

call_soon_threadsafe from many threads at once (wakes a sleeping loop promptly, keeps each
thread's order), call_soon_threadsafe racing with close(), run_in_executor, asyncio.to_thread,
set_default_executor and shutdown_default_executor (with its timeout where the version has it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import inspect
import sys
import threading
import time
import warnings

import pytest

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def start_when_running(loop, target, *args) -> threading.Thread:
    """Start a thread running target(*args) once the loop has begun running."""
    t = threading.Thread(target=target, args=args, daemon=True)
    loop.call_soon(t.start)
    return t


@pytest.mark.timeout(30)
def test_threadsafe_wakes_sleeping_loop_promptly(loop):
    """The loop sleeps on a 30 s timer; a call from a thread must wake it at once."""
    loop.call_later(30, loop.stop)
    running = threading.Event()
    sent_at = []

    def waker():
        running.wait(5)
        time.sleep(0.05)  # let the loop enter its long poll
        sent_at.append(time.monotonic())
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(running.set)
    t = threading.Thread(target=waker)
    t.start()
    loop.run_forever()
    woke_at = time.monotonic()
    t.join()
    assert woke_at - sent_at[0] < 1.0


@pytest.mark.timeout(60)
def test_many_threads_concurrently(loop):
    n_threads, per_thread = 8, 500
    total = n_threads * per_thread
    received: dict[int, list[int]] = {i: [] for i in range(n_threads)}
    count = [0]
    go = threading.Event()

    def on_item(tid, i):
        received[tid].append(i)
        count[0] += 1
        if count[0] == total:
            loop.stop()

    def producer(tid):
        go.wait(5)
        for i in range(per_thread):
            loop.call_soon_threadsafe(on_item, tid, i)

    threads = [threading.Thread(target=producer, args=(tid,)) for tid in range(n_threads)]
    for t in threads:
        t.start()
    loop.call_later(30, loop.stop)  # safety net; the loop sleeps on this timer otherwise
    loop.call_soon(go.set)
    t0 = time.monotonic()
    loop.run_forever()
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join()
    assert count[0] == total
    for tid in range(n_threads):
        assert received[tid] == list(range(per_thread))  # per-thread order is kept
    assert elapsed < 20


@pytest.mark.timeout(30)
def test_threadsafe_wakes_loop_blocked_without_timers(loop):
    """No timers at all: the poll blocks indefinitely until a thread calls in."""
    results = []

    def worker():
        time.sleep(0.02)
        loop.call_soon_threadsafe(results.append, "from-thread")
        loop.call_soon_threadsafe(loop.stop)

    start_when_running(loop, worker)
    t0 = time.monotonic()
    loop.run_forever()
    assert results == ["from-thread"]
    assert time.monotonic() - t0 < 5


def test_threadsafe_returns_handle_and_can_be_cancelled(loop):
    calls = []
    h = loop.call_soon_threadsafe(calls.append, "cancelled")
    assert isinstance(h, asyncio.Handle)
    h.cancel()
    assert h.cancelled()
    loop.call_soon_threadsafe(calls.append, "ran")
    loop.call_soon_threadsafe(loop.stop)
    loop.run_forever()
    assert calls == ["ran"]


# 3.14+ (gh-128340): call_soon_threadsafe's handle holds a lock while its callback runs, taken
# by cancel() and cancelled(); before 3.14 it is a plain Handle that takes no lock.
THREADSAFE_HANDLE_LOCKS = sys.version_info >= (3, 14)


@pytest.mark.timeout(30)
def test_threadsafe_cancel_from_another_thread_waits_for_a_running_callback(loop):
    """3.14+: a cancel() from another thread while the callback runs returns only once the
    callback has returned (the callback waits for the cancel in vain, for half a second).
    Before 3.14, cancel() returns at once, while the callback still runs."""
    order = []
    started = threading.Event()
    cancel_returned = threading.Event()

    def callback():
        started.set()
        cancel_returned.wait(0.5)
        order.append("callback returned")

    def other_thread():
        h = loop.call_soon_threadsafe(callback)
        started.wait(10)
        h.cancel()
        order.append("cancel returned")
        cancel_returned.set()
        loop.call_soon_threadsafe(loop.stop)

    t = start_when_running(loop, other_thread)
    loop.run_forever()
    t.join(10)
    if THREADSAFE_HANDLE_LOCKS:
        assert order == ["callback returned", "cancel returned"]
    else:
        assert order == ["cancel returned", "callback returned"]


@pytest.mark.timeout(30)
def test_threadsafe_cancel_from_another_thread_before_the_callback_runs(loop):
    """Cancelled from another thread before the loop reaches it, the callback never runs."""
    calls = []
    ev = threading.Event()

    def other_thread():
        h = loop.call_soon_threadsafe(calls.append, "cancelled")
        h.cancel()
        calls.append(h.cancelled())
        ev.set()
        loop.call_soon_threadsafe(loop.stop)

    # The loop starts the thread, then waits in ev.wait until the thread has queued and
    # cancelled the handle.
    t = start_when_running(loop, other_thread)
    loop.call_soon(ev.wait, 10)
    loop.run_forever()
    t.join(10)
    assert calls == [True]


def test_threadsafe_callback_cancels_its_own_handle(loop):
    """A callback may cancel its own handle (3.14+: the lock is reentrant): it runs to its end
    and the handle reads as cancelled."""
    handles = []
    calls = []

    def callback():
        handles[0].cancel()
        calls.append(handles[0].cancelled())
        loop.stop()

    handles.append(loop.call_soon_threadsafe(callback))
    loop.run_forever()
    assert calls == [True]
    assert handles[0].cancelled()


def test_threadsafe_handle_source_traceback_in_debug(loop):
    """In debug mode the handle's creation point is the call_soon_threadsafe call, whatever
    the handle's class."""
    loop.set_debug(True)

    def caller():
        return loop.call_soon_threadsafe(lambda: None)

    h = caller()
    assert h._source_traceback[-1].name == "caller"
    h.cancel()


def test_threadsafe_from_loop_thread_keeps_fifo_with_call_soon(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_soon_threadsafe(calls.append, 2)
    loop.call_soon(calls.append, 3)
    loop.call_soon_threadsafe(calls.append, 4)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1, 2, 3, 4]


def test_threadsafe_context(loop):
    seen = []
    ctx = contextvars.Context()
    ctx.run(VAR.set, "ctx")

    def worker():
        VAR.set("thread-value")
        loop.call_soon_threadsafe(lambda: seen.append(VAR.get()))
        loop.call_soon_threadsafe(lambda: seen.append(VAR.get()), context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    start_when_running(loop, worker)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    # default context: a copy of the calling thread's context
    assert seen == ["thread-value", "ctx"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("round_", range(20))
def test_threadsafe_racing_close(loop_factory, round_):
    """Threads call in until they see the loop closed: each call either queues or raises
    RuntimeError('Event loop is closed'); nothing else, no crash, no hang."""
    lp = loop_factory()
    ok = [0]
    errors = []
    closed_seen = []
    started = threading.Barrier(4)
    deadline = time.monotonic() + 20

    def spammer():
        started.wait(5)
        while time.monotonic() < deadline:
            try:
                lp.call_soon_threadsafe(lambda: None)
                ok[0] += 1
            except RuntimeError as exc:
                if str(exc) != "Event loop is closed":
                    errors.append(exc)
                closed_seen.append(True)
                return
            except BaseException as exc:  # pragma: no cover - a bug
                errors.append(exc)
                return

    threads = [threading.Thread(target=spammer) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(5)
    lp.run_until_complete(asyncio.sleep(0.001 * (round_ % 4)))
    lp.close()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert closed_seen == [True] * 3
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        lp.call_soon_threadsafe(lambda: None)


@pytest.mark.timeout(30)
def test_threadsafe_during_run_until_complete_then_close(loop_factory):
    lp = loop_factory()
    done = threading.Event()
    results = []

    def worker():
        for i in range(1000):
            try:
                lp.call_soon_threadsafe(results.append, i)
            except RuntimeError:
                break
        done.set()

    async def main():
        t = threading.Thread(target=worker)
        t.start()
        while not done.is_set():
            await asyncio.sleep(0.001)
        t.join()

    lp.run_until_complete(main())
    lp.run_until_complete(asyncio.sleep(0))
    lp.close()
    assert results == list(range(1000))


# -- executors --------------------------------------------------------------------------------


def test_run_in_executor_default(loop):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    result, tid = loop.run_until_complete(loop.run_in_executor(None, work, 2, 3))
    assert result == 5
    assert tid != main_thread


def test_run_in_executor_exception(loop):
    def work():
        raise ValueError("in executor")

    with pytest.raises(ValueError, match="in executor"):
        loop.run_until_complete(loop.run_in_executor(None, work))


def test_run_in_executor_custom_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="custom") as ex:

        def work():
            return threading.current_thread().name

        name = loop.run_until_complete(loop.run_in_executor(ex, work))
    assert name.startswith("custom")


def test_run_in_executor_returns_future(loop):
    fut = loop.run_in_executor(None, lambda: 1)
    assert isinstance(fut, asyncio.Future)
    assert loop.run_until_complete(fut) == 1


def test_run_in_executor_many(loop):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(50)))

    assert loop.run_until_complete(main()) == [i * i for i in range(50)]


def test_to_thread_passes_context(loop):
    def work(x):
        return x, VAR.get(), threading.get_ident()

    async def main():
        VAR.set("in-task")
        return await asyncio.to_thread(work, 1)

    x, value, tid = loop.run_until_complete(main())
    assert (x, value) == (1, "in-task")
    assert tid != threading.get_ident()


def test_run_in_executor_after_close(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, lambda: None)


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mine")
    loop.set_default_executor(ex)
    try:
        name = loop.run_until_complete(
            loop.run_in_executor(None, lambda: threading.current_thread().name)
        )
        assert name.startswith("mine")
        name = loop.run_until_complete(asyncio.to_thread(lambda: threading.current_thread().name))
        assert name.startswith("mine")
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
    assert ex._shutdown


def _set_non_pool_executor(lp):
    class NotAPool(concurrent.futures.Executor):
        pass

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            lp.set_default_executor(NotAPool())
        except TypeError:
            return "TypeError"
    return [w.category for w in rec]


def test_set_default_executor_non_thread_pool(loop):
    """3.10 warns (DeprecationWarning), 3.11+ raise TypeError: follow stock asyncio."""
    ref = asyncio.SelectorEventLoop()
    try:
        stock = _set_non_pool_executor(ref)
    finally:
        ref.close()
    assert _set_non_pool_executor(loop) == stock


def test_shutdown_default_executor(loop):
    loop.run_until_complete(loop.run_in_executor(None, lambda: None))
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())


def test_shutdown_default_executor_waits_for_jobs(loop):
    release = threading.Event()
    finished = []

    def job():
        release.wait(10)
        finished.append(True)

    async def main():
        fut = loop.run_in_executor(None, job)
        loop.call_later(0.01, release.set)
        await loop.shutdown_default_executor()
        return fut

    fut = loop.run_until_complete(main())
    assert finished == [True]
    assert loop.run_until_complete(fut) is None


@pytest.mark.skipif(
    "timeout" not in inspect.signature(asyncio.BaseEventLoop.shutdown_default_executor).parameters,
    reason="shutdown_default_executor(timeout=) is 3.12+",
)
def test_shutdown_default_executor_timeout(loop):
    loop.run_until_complete(loop.run_in_executor(None, lambda: None))
    t0 = time.monotonic()
    loop.run_until_complete(loop.shutdown_default_executor(timeout=5))
    assert time.monotonic() - t0 < 5
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


# -- a flood of cross-thread calls (issue 15) ----------------------------------------------------
# Threads calling call_soon_threadsafe as fast as they can must not starve the loop's timers
# or stop(): asyncio runs per iteration only the callbacks ready when it starts them, and due
# timers join the end of the queue, so what matters is how far behind the flood lets the loop
# fall. Bounds are loose (stock asyncio: stop at ~0.31 s, timers ~45 ms late at worst; oxloop
# before the fix: stop after 1.4-4 s, timers 0.6-4 s late); benches/flood.py has the figures.


class _Flood:
    """`n` threads calling `loop.call_soon_threadsafe(self.tick)` until told to stop or refused
    (RuntimeError: the loop was closed); counts calls made and callbacks run."""

    def __init__(self, loop, n):
        self.loop = loop
        self.ran = 0
        self.ran_after_close = 0
        self.closed = False
        self.made = [0] * n
        self.refused = [False] * n
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._produce, args=(i,)) for i in range(n)]

    def tick(self):
        self.ran += 1
        if self.closed:
            self.ran_after_close += 1

    def _produce(self, i):
        call = self.loop.call_soon_threadsafe
        n = 0
        try:
            while not self.halt.is_set():
                call(self.tick)
                n += 1
        except RuntimeError:
            self.refused[i] = True
        self.made[i] = n

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self, timeout=10.0):
        self.halt.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads)


def _flood_once(loop):
    """One 0.3 s run under a 4-thread flood: (when stop() returned, each timer's lateness)."""
    flood = _Flood(loop, 4)
    lateness = []
    started = []

    def start():
        t0 = time.monotonic()
        started.append(t0)
        for k in range(1, 9):
            loop.call_later(
                k * 0.03, lambda due=t0 + k * 0.03: lateness.append(time.monotonic() - due)
            )
        loop.call_later(0.3, loop.stop)
        flood.start()

    loop.call_soon(start)
    # The collector stays off while the flood runs: a million handles in 0.3 s set off a full
    # collection, which in a process holding the whole test session's objects holds the loop
    # thread for 100-250 ms (seen in CI and in full local runs: timers 2-5 ran together at
    # 180 ms, 6-8 with stop() at 300 ms; a standalone run with 3M live objects shows one such
    # 220 ms pause). That pause is the interpreter's, on any loop, and not what this measures.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        loop.run_forever()
        stopped_after = time.monotonic() - started[0]
        ran_by_stop = flood.ran
    finally:
        if gc_was_enabled:
            gc.enable()
        flood.stop()
    # Everything the threads queued before they stopped runs, once.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert flood.ran == sum(flood.made)
    assert ran_by_stop > 1000  # the flood really ran alongside
    assert len(lateness) == 8
    return stopped_after, sorted(lateness)


@pytest.mark.timeout(60)
def test_flood_does_not_starve_timers_or_stop(loop):
    # Timing on a shared 2-core machine: five threads compete for two CPUs, and other processes
    # for the same CPUs can hold the loop thread off for 100-200 ms at a time (seen locally on
    # stock asyncio under load). Starvation, the bug this guards against, fails every attempt
    # (0.6-4 s late before the fix); noise does not, so the best of three attempts must meet
    # the bounds.
    attempts = []
    for _ in range(3):
        stopped_after, late = _flood_once(loop)
        attempts.append((stopped_after, [round(x * 1e3) for x in late]))
        # All but the latest timer within 100 ms: the OS alone can hold the loop thread off the
        # CPU for one timer (seen: 155-196 ms once per run, on both loops).
        if stopped_after < 0.5 and late[-2] < 0.1 and late[-1] < 0.3:
            return
    pytest.fail(f"stop() returned after (s), timers ran late (ms): {attempts}")


@pytest.mark.timeout(60)
def test_flood_across_close_runs_nothing_after_close(loop):
    """The loop is stopped and closed while threads flood it: their next call is refused
    (RuntimeError), they end, and no callback runs after close."""
    flood = _Flood(loop, 3)
    loop.call_soon(flood.start)
    loop.call_later(0.1, loop.stop)
    try:
        loop.run_forever()
        loop.close()
        flood.closed = True
        for t in flood.threads:
            t.join(10)
        assert all(flood.refused)
    finally:
        flood.stop()
    assert flood.ran_after_close == 0
    assert flood.ran > 0
