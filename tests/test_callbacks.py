"""Loop core: call_soon callbacks.

FIFO order and arguments, the Handle returned, cancellation before the callback runs, the
iteration order of CPython's `_run_once` (callbacks already ready, then I/O callbacks, then due
timers; callbacks scheduled by a callback run in the next iteration), contextvars contexts,
exceptions routed to the exception handler, and KeyboardInterrupt/SystemExit escaping the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
import sys
import warnings
import weakref

import pytest
from _helpers import callback_source, collect_errors, run_briefly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_call_soon_fifo_with_args(loop):
    calls = []
    for i in range(100):
        loop.call_soon(calls.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == list(range(100))


def test_call_soon_multiple_args(loop):
    calls = []
    loop.call_soon(lambda *a: calls.append(a), 1, "two", None, (3,))
    loop.call_soon(lambda: calls.append(()))
    run_briefly(loop)
    assert calls == [(1, "two", None, (3,)), ()]


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(lambda: None)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    assert h.cancelled() is False
    assert "Handle" in repr(h)
    run_briefly(loop)
    assert h.cancelled() is False


def test_call_soon_keyword_only_context(loop):
    with pytest.raises(TypeError):
        loop.call_soon(lambda: None, context=None, bogus=1)


def test_scheduling_methods_bind_arguments_as_python_does(loop):
    # Each takes `(lead..., *args, context=None)`: leading parameters by position or keyword,
    # extra positionals into *args, context keyword-only.
    calls = []

    def cb(*a):
        calls.append((a, VAR.get()))

    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "ctx")
    loop.call_soon(callback=cb)
    loop.call_soon(cb, 1, 2, context=ctx)
    loop.call_soon_threadsafe(callback=cb, context=ctx)
    loop.call_soon_threadsafe(cb, 3)
    loop.call_later(delay=0, callback=cb)
    loop.call_later(0, cb, 4, 5, context=ctx)
    loop.call_at(when=loop.time(), callback=cb, context=ctx)
    loop.call_at(loop.time(), cb, 6)
    run_briefly(loop)
    run_briefly(loop)
    assert sorted(calls) == sorted(
        [
            ((), "unset"),
            ((1, 2), "ctx"),
            ((), "ctx"),
            ((3,), "unset"),
            ((), "unset"),
            ((4, 5), "ctx"),
            ((), "ctx"),
            ((6,), "unset"),
        ]
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda lp, f: lp.call_soon(),
        lambda lp, f: lp.call_soon(context=None),
        lambda lp, f: lp.call_soon(f, callback=f),
        lambda lp, f: lp.call_soon(f, bogus=1),
        lambda lp, f: lp.call_soon_threadsafe(),
        lambda lp, f: lp.call_soon_threadsafe(f, 1, bogus=1),
        lambda lp, f: lp.call_later(0),
        lambda lp, f: lp.call_later(),
        lambda lp, f: lp.call_later(0, f, delay=1),
        lambda lp, f: lp.call_later(callback=f),
        lambda lp, f: lp.call_at(1),
        lambda lp, f: lp.call_at(callback=f, context=None),
        lambda lp, f: lp.call_at(1, f, bogus=1),
    ],
)
def test_scheduling_methods_reject_bad_arguments(loop, call):
    ran = []
    with pytest.raises(TypeError):
        call(loop, lambda *a: ran.append(a))
    run_briefly(loop)
    assert ran == []  # nothing was scheduled


def test_cancel_before_run(loop):
    # A cancelled handle is skipped: its callback does not run, and nothing reaches the
    # exception handler (cancel() cleared the callback, which `_run` would call as None).
    errors = collect_errors(loop)
    calls = []
    h1 = loop.call_soon(calls.append, 1)
    h2 = loop.call_soon(calls.append, 2)
    loop.call_soon(calls.append, 3)
    h2.cancel()
    assert h2.cancelled() is True
    assert h1.cancelled() is False
    run_briefly(loop)
    assert calls == [1, 3]
    h2.cancel()  # idempotent
    assert h2.cancelled() is True
    assert errors == []


def test_cancel_from_earlier_callback(loop):
    errors = collect_errors(loop)
    calls = []
    later = []
    loop.call_soon(lambda: later[0].cancel())
    later.append(loop.call_soon(calls.append, "cancelled"))
    loop.call_soon(calls.append, "ran")
    run_briefly(loop)
    assert calls == ["ran"]
    assert errors == []


def test_cancel_after_run_is_harmless(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    run_briefly(loop)
    h.cancel()
    assert h.cancelled() is True
    assert calls == [1]


def test_callbacks_scheduled_by_callbacks_run_next_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "scheduled-by-first")

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # stop() ends the run after the iteration in progress: the callback that `first`
    # scheduled belongs to the next iteration and has not run yet.
    assert calls == ["first", "second"]
    run_briefly(loop)
    assert calls == ["first", "second", "scheduled-by-first"]


def test_self_rescheduling_callback_does_not_starve_others(loop):
    calls = []

    def spin(n):
        calls.append(("spin", n))
        if n < 3:
            loop.call_soon(spin, n + 1)

    def other(n):
        calls.append(("other", n))
        if n < 3:
            loop.call_soon(other, n + 1)

    loop.call_soon(spin, 0)
    loop.call_soon(other, 0)
    run_briefly(loop, 4)
    assert calls == [(k, n) for n in range(4) for k in ("spin", "other")]


def test_iteration_order_ready_then_io_then_timers(loop):
    """CPython's _run_once appends I/O callbacks, then due timers, after what is ready."""
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        calls = []

        def setup():
            loop.call_later(0, calls.append, "timer0")
            loop.add_reader(a.fileno(), lambda: calls.append("reader"))
            loop.call_soon(calls.append, "soon")

        loop.call_soon(setup)
        run_briefly(loop)  # runs setup only
        assert calls == []
        loop.call_soon(loop.stop)  # queued after "soon": stops at the end of the next iteration
        loop.run_forever()
        loop.remove_reader(a.fileno())
        assert calls == ["soon", "reader", "timer0"]
    finally:
        a.close()
        b.close()


def test_call_later_zero_runs_after_call_soon(loop):
    calls = []
    loop.call_later(0, calls.append, "later0")
    loop.call_soon(calls.append, "soon")
    loop.call_later(0, calls.append, "later0-b")
    loop.call_soon(calls.append, "soon-b")
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert calls == ["soon", "soon-b", "later0", "later0-b"]


# -- contexts ---------------------------------------------------------------------------------


def test_callback_runs_in_copy_of_current_context(loop):
    seen = []
    token = VAR.set("at-schedule")
    try:
        loop.call_soon(lambda: seen.append(VAR.get()))
        VAR.set("changed-after-schedule")
    finally:
        VAR.reset(token)
    run_briefly(loop)
    assert seen == ["at-schedule"]


def test_explicit_context_argument(loop):
    ctx = contextvars.Context()
    ctx.run(VAR.set, "in-ctx")
    seen = []
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_later(0, lambda: seen.append(VAR.get()), context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon_threadsafe(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()))
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert seen == ["in-ctx", "in-ctx", "unset", "in-ctx", "in-ctx"]


def test_context_keyword_not_interned(loop):
    # A `context` keyword whose name is an equal but distinct str, as asyncio's C Task and
    # Future pass it on 3.11/3.12 (their ("context",) comes from Py_BuildValue): the same
    # binding every time, and other non-interned names are still rejected.
    name = "".join(["con", "text"])
    assert name == "context" and sys.intern(name) is not name
    ctx = contextvars.Context()
    ctx.run(VAR.set, "in ctx")
    seen = []
    for _ in range(3):
        loop.call_soon(lambda: seen.append(VAR.get()), **{name: ctx})
    loop.call_soon(lambda: seen.append(VAR.get()), **{"".join(["con", "text"]): ctx})
    with pytest.raises(TypeError):
        loop.call_soon(lambda: None, **{"".join(["con", "texts"]): ctx})
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["in ctx"] * 4


def test_set_in_explicit_context_persists_in_that_context(loop):
    ctx = contextvars.Context()

    def setter():
        VAR.set("set-inside")

    loop.call_soon(setter, context=ctx)
    run_briefly(loop)
    assert ctx[VAR] == "set-inside"
    assert VAR.get() == "unset"


def test_contextvar_set_in_callback_does_not_leak(loop):
    seen = []

    def setter():
        VAR.set("leaked?")
        seen.append(("setter", VAR.get()))

    def reader():
        seen.append(("reader", VAR.get()))

    loop.call_soon(setter)
    loop.call_soon(reader)
    loop.call_later(0, reader)
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert seen == [("setter", "leaked?"), ("reader", "unset"), ("reader", "unset")]
    assert VAR.get() == "unset"


def test_same_context_shared_between_callbacks(loop):
    ctx = contextvars.copy_context()
    seen = []
    loop.call_soon(VAR.set, "shared", context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    run_briefly(loop)
    assert seen == ["shared"]


@pytest.mark.skipif(not hasattr(asyncio.Handle, "get_context"), reason="Handle.get_context: 3.12+")
def test_handle_get_context(loop):
    ctx = contextvars.Context()
    h = loop.call_soon(lambda: None, context=ctx)
    assert h.get_context() is ctx
    th = loop.call_later(10, lambda: None, context=ctx)
    assert th.get_context() is ctx
    th.cancel()
    h2 = loop.call_soon(lambda: None)
    assert isinstance(h2.get_context(), contextvars.Context)
    assert h2.get_context() is not contextvars.copy_context()
    run_briefly(loop)


# -- exceptions -------------------------------------------------------------------------------


def _boom(*args):
    raise ZeroDivisionError("boom")


def test_exception_goes_to_handler_and_loop_continues(loop):
    errors = collect_errors(loop)
    calls = []
    h = loop.call_soon(_boom, 1, 2)
    loop.call_soon(calls.append, "after")
    run_briefly(loop)
    assert calls == ["after"]
    assert len(errors) == 1
    ctx = errors[0]
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["handle"] is h
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["message"] == f"Exception in callback {callback_source(_boom, (1, 2))}"
    # the loop is still usable
    run_briefly(loop)
    assert not loop.is_running()


def test_exception_in_timer_callback_goes_to_handler(loop):
    errors = collect_errors(loop)
    h = loop.call_later(0, _boom)
    loop.call_later(0, loop.stop)
    loop.run_forever()
    assert len(errors) == 1
    assert errors[0]["handle"] is h
    assert isinstance(errors[0]["handle"], asyncio.TimerHandle)
    assert errors[0]["message"] == f"Exception in callback {callback_source(_boom, ())}"


def test_base_exception_subclass_goes_to_handler(loop):
    class Custom(BaseException):
        pass

    def raiser():
        raise Custom

    errors = collect_errors(loop)
    loop.call_soon(raiser)
    run_briefly(loop)
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], Custom)


def test_cancelled_error_in_callback_goes_to_handler(loop):
    def raiser():
        raise asyncio.CancelledError

    errors = collect_errors(loop)
    loop.call_soon(raiser)
    run_briefly(loop)
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], asyncio.CancelledError)


def test_many_failures_in_one_iteration(loop):
    errors = collect_errors(loop)
    for _ in range(10):
        loop.call_soon(_boom)
    run_briefly(loop)
    assert len(errors) == 10


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_fatal_exception_propagates_from_run_forever(loop, exc_type):
    calls = []

    def raiser():
        raise exc_type

    loop.call_soon(calls.append, 1)
    loop.call_soon(raiser)
    loop.call_soon(calls.append, 2)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert calls == [1]
    assert not loop.is_running()
    assert not loop.is_closed()
    # The callbacks left in the ready queue run on the next run.
    run_briefly(loop)
    assert calls == [1, 2]
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_fatal_exception_propagates_from_run_until_complete(loop, exc_type):
    def raiser():
        raise exc_type

    async def main():
        loop.call_soon(raiser)
        await asyncio.sleep(3600)

    task = loop.create_task(main())
    with pytest.raises(exc_type):
        loop.run_until_complete(task)
    assert not loop.is_running()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_fatal_exception_from_timer_propagates(loop, exc_type):
    def raiser():
        raise exc_type

    loop.call_later(0.001, raiser)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    run_briefly(loop)


# -- garbage collection -----------------------------------------------------------------------


class _Holder:
    def method(self):
        pass


def test_cycle_through_run_handle_is_collected(loop):
    """A callback object that references its own handle is freed once the handle ran."""
    holder = _Holder()
    holder.handle = loop.call_soon(holder.method)
    ref = weakref.ref(holder)
    del holder
    run_briefly(loop)
    gc.collect()
    assert ref() is None


def test_cycle_through_pending_timer_is_collected_after_cancel(loop):
    holder = _Holder()
    holder.handle = loop.call_later(3600, holder.method)
    holder.handle.cancel()
    ref = weakref.ref(holder)
    del holder
    gc.collect()
    assert ref() is None
    run_briefly(loop)


def test_pending_callbacks_freed_by_close(loop_factory):
    lp = loop_factory()
    holders = [_Holder() for _ in range(3)]
    refs = [weakref.ref(h) for h in holders]
    lp.call_soon(holders[0].method)
    lp.call_later(3600, holders[1].method)
    lp.call_soon_threadsafe(holders[2].method)
    del holders
    lp.close()
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_loop_with_pending_callbacks_is_collected(loop_factory):
    """An unclosed loop holding queued handles (which reference it) is still collectable."""
    lp = loop_factory()
    holder = _Holder()
    holder.loop = lp
    lp.call_soon(holder.method)
    lp.call_later(3600, holder.method)
    ref = weakref.ref(holder)
    del holder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        lp.close()
        del lp
        gc.collect()
    assert ref() is None


def test_context_of_pending_handle_is_the_given_one_after_gc(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "kept")
    seen = []
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    del ctx
    gc.collect()
    run_briefly(loop)
    assert seen == ["kept"]
