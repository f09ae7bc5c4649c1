"""Loop core: running, stopping and closing.

run_until_complete (futures, coroutines, tasks, awaitables, errors), run_forever and stop,
re-entrancy errors (running twice, nested loops, closing a running loop), the closed state and
what raises after close, is_running/is_closed, the running loop seen from callbacks, async
generator finalization, the loop's repr and the ResourceWarning of an unclosed loop.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings

import pytest
from _helpers import run_briefly

# -- run_until_complete -----------------------------------------------------------------------


def test_run_until_complete_coroutine(loop):
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(main(21)) == 42


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_result, "value")
    assert loop.run_until_complete(fut) == "value"
    assert fut.done()


def test_run_until_complete_done_future(loop):
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_task(loop):
    async def main():
        return "task-result"

    task = loop.create_task(main())
    assert loop.run_until_complete(task) == "task-result"
    assert task.done()


def test_run_until_complete_awaitable(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_raises_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("from coroutine")

    with pytest.raises(ValueError, match="from coroutine"):
        loop.run_until_complete(main())
    assert not loop.is_running()


def test_run_until_complete_future_exception(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, KeyError("k"))
    with pytest.raises(KeyError):
        loop.run_until_complete(fut)


def test_run_until_complete_cancelled(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


@pytest.mark.parametrize("bad", [None, 42, "string", object(), [1]])
def test_run_until_complete_non_future_type_error(loop, bad):
    with pytest.raises(TypeError):
        loop.run_until_complete(bad)
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_stopped_before_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    assert not fut.done()
    loop.call_soon(fut.set_result, 1)
    assert loop.run_until_complete(fut) == 1


def test_run_until_complete_leaves_pending_callbacks(loop):
    calls = []

    async def main():
        loop.call_soon(calls.append, "pending")
        return "done"

    assert loop.run_until_complete(main()) == "done"
    run_briefly(loop)
    assert calls == ["pending"]


def test_run_until_complete_many_times(loop):
    async def main(i):
        await asyncio.sleep(0)
        return i

    assert [loop.run_until_complete(main(i)) for i in range(200)] == list(range(200))


# -- run_forever / stop -----------------------------------------------------------------------


def test_stop_before_run_runs_one_iteration(loop):
    calls = []

    def cb():
        calls.append("cb")
        loop.call_soon(calls.append, "next-iteration")

    loop.stop()
    loop.call_soon(cb)
    loop.run_forever()
    assert calls == ["cb"]
    loop.stop()
    loop.run_forever()
    assert calls == ["cb", "next-iteration"]


def test_stop_from_callback_finishes_iteration(loop):
    calls = []

    def stopper():
        calls.append("stopper")
        loop.stop()
        loop.call_soon(calls.append, "scheduled-after-stop")

    loop.call_soon(stopper)
    loop.call_soon(calls.append, "already-scheduled")
    loop.run_forever()
    assert calls == ["stopper", "already-scheduled"]
    assert not loop.is_running()
    run_briefly(loop)
    assert calls == ["stopper", "already-scheduled", "scheduled-after-stop"]


def test_stop_twice(loop):
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.run_forever()
    # _stopping is reset when run_forever returns: the next run is not cut short
    calls = []
    loop.call_later(0.001, calls.append, "timer")
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert calls == ["timer"]


def test_stop_from_timer_with_pending_timers(loop):
    calls = []
    loop.call_later(0.001, loop.stop)
    loop.call_later(3600, calls.append, "far")
    loop.run_forever()
    assert calls == []


def test_run_forever_returns_after_stop_in_coroutine(loop):
    async def main():
        await asyncio.sleep(0.001)
        loop.stop()
        return "x"

    task = loop.create_task(main())
    loop.run_forever()
    assert task.result() == "x"


# -- re-entrancy ------------------------------------------------------------------------------


def test_run_until_complete_while_running(loop):
    errors = []

    async def inner():
        return 1

    def cb():
        coro = inner()
        try:
            loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["This event loop is already running"]


def test_run_forever_while_running(loop):
    errors = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["This event loop is already running"]


def test_nested_run_of_another_loop(loop, loop_factory):
    other = loop_factory()
    errors = []

    async def other_main():
        return 1

    def cb():
        coro = other_main()
        try:
            other.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    try:
        loop.call_soon(cb)
        loop.run_forever()
    finally:
        other.close()
    assert errors == ["Cannot run the event loop while another loop is running"] * 2


def test_refused_run_forever_keeps_the_running_loop(loop, loop_factory):
    """Another loop's run_forever, refused because this loop runs in the thread, leaves this
    loop the running one (gh-130145). 3.13.0-3.13.2 ran the cleanup after the refused setup,
    which unset it: get_running_loop() raised afterwards (fixed in 3.13.3)."""
    other = loop_factory()

    async def main():
        with pytest.raises(RuntimeError, match="another loop is running"):
            other.run_forever()
        return asyncio._get_running_loop()

    try:
        running = loop.run_until_complete(main())
    finally:
        other.close()
    if (3, 13) <= sys.version_info < (3, 13, 3):
        assert running is None
    else:
        assert running is loop


def test_nested_run_of_stock_loop_inside(loop):
    """Running a stock asyncio loop from inside our loop is refused as well (shared state)."""
    other = asyncio.SelectorEventLoop()
    errors = []

    def cb():
        try:
            other.run_until_complete(asyncio.sleep(0))
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the unawaited sleep coroutine
            loop.call_soon(cb)
            loop.run_forever()
    finally:
        other.close()
    assert errors == ["Cannot run the event loop while another loop is running"]


def test_close_while_running(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


# -- closing ----------------------------------------------------------------------------------


def test_close_twice(loop):
    loop.close()
    loop.close()
    assert loop.is_closed()


def test_close_discards_pending_callbacks(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_later(0, calls.append, 2)
    loop.close()
    assert calls == []


@pytest.mark.parametrize(
    "method",
    [
        "call_soon",
        "call_later",
        "call_at",
        "call_soon_threadsafe",
        "create_task",
        "run_forever",
        "run_until_complete",
    ],
)
def test_methods_after_close_raise(loop, method):
    loop.close()

    async def coro_fn():
        pass

    coro = coro_fn()
    calls = {
        "call_soon": lambda: loop.call_soon(print),
        "call_later": lambda: loop.call_later(1, print),
        "call_at": lambda: loop.call_at(1, print),
        "call_soon_threadsafe": lambda: loop.call_soon_threadsafe(print),
        "create_task": lambda: loop.create_task(coro),
        "run_forever": lambda: loop.run_forever(),
        "run_until_complete": lambda: loop.run_until_complete(coro),
    }
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            calls[method]()
    finally:
        coro.close()
    assert loop.is_closed()
    assert not loop.is_running()


def test_stop_after_close_is_harmless(loop):
    loop.close()
    loop.stop()
    assert loop.is_closed()


def test_close_is_idempotent_after_run(loop):
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    loop.close()
    assert loop.is_closed()


# -- states -----------------------------------------------------------------------------------


def test_is_running_and_is_closed_states(loop):
    states = []
    assert loop.is_running() is False
    assert loop.is_closed() is False
    loop.call_soon(lambda: states.append((loop.is_running(), loop.is_closed())))
    run_briefly(loop)
    assert states == [(True, False)]
    assert loop.is_running() is False
    loop.close()
    assert loop.is_running() is False
    assert loop.is_closed() is True


def test_is_running_in_coroutine(loop):
    async def main():
        return loop.is_running()

    assert loop.run_until_complete(main()) is True
    assert loop.is_running() is False


def test_get_running_loop_inside_callbacks(loop):
    seen = []

    def cb():
        seen.append(asyncio.get_running_loop())
        seen.append(asyncio._get_running_loop())
        seen.append(asyncio.get_event_loop())

    loop.call_soon(cb)
    loop.call_later(0, cb)
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert seen == [loop] * 6
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert asyncio._get_running_loop() is None


def test_get_running_loop_reset_after_exception(loop):
    def cb():
        raise KeyboardInterrupt

    loop.call_soon(cb)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert asyncio._get_running_loop() is None
    assert not loop.is_running()


def test_get_running_loop_in_coroutine(loop):
    async def main():
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop


# -- async generators -------------------------------------------------------------------------


def test_shutdown_asyncgens_finalizes(loop):
    finalized = []

    async def agen():
        try:
            for i in range(10):
                yield i
                await asyncio.sleep(0)
        finally:
            finalized.append("finally")

    gens = []

    async def main():
        g = agen()
        gens.append(g)
        assert await g.__anext__() == 0

    loop.run_until_complete(main())
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == ["finally"]


def test_asyncgen_finalized_by_gc_via_loop(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            finalized.append("finally")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert finalized == ["finally"]


def test_asyncgen_hooks_installed_while_running(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        hooks = sys.get_asyncgen_hooks()
        return hooks.firstiter is not None and hooks.finalizer is not None

    assert loop.run_until_complete(main()) is True
    assert sys.get_asyncgen_hooks() == before


def test_shutdown_asyncgens_after_close_of_gens_is_noop(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_asyncgens())


# -- repr / __del__ ---------------------------------------------------------------------------


def test_repr(loop):
    cls = type(loop).__name__
    assert repr(loop) == f"<{cls} running=False closed=False debug=False>"
    seen = []
    loop.call_soon(lambda: seen.append(repr(loop)))
    run_briefly(loop)
    assert seen == [f"<{cls} running=True closed=False debug=False>"]
    loop.set_debug(True)
    assert repr(loop) == f"<{cls} running=False closed=False debug=True>"
    loop.set_debug(False)
    loop.close()
    assert repr(loop) == f"<{cls} running=False closed=True debug=False>"


def test_unclosed_loop_warns_resource_warning(loop_factory):
    lp = loop_factory()
    lp.run_until_complete(asyncio.sleep(0))
    asyncio.set_event_loop(None)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del lp
        gc.collect()


def test_closed_loop_does_not_warn(loop_factory):
    lp = loop_factory()
    lp.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del lp
        gc.collect()
