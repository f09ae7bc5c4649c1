"""Exception handlers.

set_exception_handler/get_exception_handler, call_exception_handler with and without a custom
handler, a handler that raises, default_exception_handler's logging (compared record by record
with stock asyncio's), the context the handler runs in, and bad handlers.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging

import pytest
from _helpers import callback_source, collect_errors, run_briefly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def asyncio_records(caplog):
    return [r for r in caplog.records if r.name == "asyncio"]


def summarize(records):
    """What a log record says, minus what differs between two loops (reprs, addresses)."""
    out = []
    for r in records:
        exc = r.exc_info[0] if r.exc_info else None
        out.append((r.levelno, r.getMessage().splitlines()[0], exc))
    return out


def test_default_handler_is_none(loop):
    assert loop.get_exception_handler() is None


def test_set_and_get_handler(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("bad", [1, "handler", object()], ids=repr)
def test_non_callable_handler(loop, bad):
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        loop.set_exception_handler(bad)
    assert loop.get_exception_handler() is None


def test_call_exception_handler_with_handler(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    ctx = {"message": "hello", "custom": 1}
    loop.call_exception_handler(ctx)
    assert calls == [(loop, ctx)]
    assert calls[0][1] is ctx


def test_call_exception_handler_bound_method(loop):
    class Collector:
        def __init__(self):
            self.seen = []

        def handle(self, lp, ctx):
            self.seen.append(ctx["message"])

    c = Collector()
    loop.set_exception_handler(c.handle)
    loop.call_exception_handler({"message": "m"})
    assert c.seen == ["m"]


def test_call_exception_handler_without_handler_logs(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    try:
        raise ValueError("the error")
    except ValueError as exc:
        err = exc
    loop.call_exception_handler({"message": "Something broke", "exception": err})
    recs = asyncio_records(caplog)
    assert len(recs) == 1
    assert recs[0].levelno == logging.ERROR
    assert recs[0].getMessage().startswith("Something broke")
    assert recs[0].exc_info[1] is err


def test_default_exception_handler_matches_stock(loop, caplog):
    """The same context logs the same message lines on both loops."""
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def contexts(lp):
        fut = lp.create_future()
        return [
            {"message": "only a message"},
            {},
            {"message": "with exception", "exception": RuntimeError("x")},
            {"message": "with future", "future": fut},
            {"message": "with extra", "extra_key": [1, 2, 3]},
            {"exception": KeyError("no message")},
        ]

    ref = asyncio.SelectorEventLoop()
    caplog.clear()  # "Using selector: ..." at DEBUG
    try:
        for ctx in contexts(ref):
            ref.default_exception_handler(ctx)
        expected = asyncio_records(caplog)
        expected_lines = [r.getMessage().splitlines() for r in expected]
        expected_summary = summarize(expected)
    finally:
        ref.close()
    caplog.clear()
    for ctx in contexts(loop):
        loop.default_exception_handler(ctx)
    got = asyncio_records(caplog)
    assert summarize(got) == expected_summary
    # every line of the message carries the same keys in the same order
    got_lines = [r.getMessage().splitlines() for r in got]
    assert [[ln.split(":")[0] for ln in m] for m in got_lines] == [
        [ln.split(":")[0] for ln in m] for m in expected_lines
    ]


def test_callback_exception_logged_by_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def bad_callback():
        raise ZeroDivisionError

    loop.call_soon(bad_callback)
    run_briefly(loop)
    recs = asyncio_records(caplog)
    assert len(recs) == 1
    first_line = recs[0].getMessage().splitlines()[0]
    assert first_line == f"Exception in callback {callback_source(bad_callback, ())}"
    assert recs[0].exc_info[0] is ZeroDivisionError
    assert "handle: <Handle" in recs[0].getMessage()


def test_handler_raising(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def handler(lp, ctx):
        raise RuntimeError("handler failed")

    loop.set_exception_handler(handler)
    loop.call_exception_handler({"message": "original"})
    recs = asyncio_records(caplog)
    assert len(recs) == 1
    assert recs[0].getMessage().startswith("Unhandled error in exception handler")
    assert recs[0].exc_info[0] is RuntimeError
    # the loop keeps working and keeps using the handler
    loop.call_soon(lambda: 1 / 0)
    run_briefly(loop)
    assert len(asyncio_records(caplog)) == 2


def test_handler_raising_from_callback_does_not_stop_loop(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    calls = []
    loop.set_exception_handler(lambda lp, ctx: 1 / 0)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(calls.append, "next")
    run_briefly(loop)
    assert calls == ["next"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_handler_raising_fatal_propagates(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type

    loop.set_exception_handler(handler)
    with pytest.raises(exc_type):
        loop.call_exception_handler({"message": "x"})
    loop.call_soon(lambda: 1 / 0)
    with pytest.raises(exc_type):
        run_briefly(loop)
    assert not loop.is_running()
    loop.set_exception_handler(None)


def test_custom_handler_can_call_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_exception_handler({"message": "forwarded"})
    assert seen == ["forwarded"]
    assert asyncio_records(caplog)[0].getMessage().startswith("forwarded")


def test_handler_context_matches_stock(loop):
    """Which contextvars context the handler sees (3.12+: the failing handle's)."""

    def scenario(lp):
        seen = []
        lp.set_exception_handler(lambda _lp, ctx: seen.append(VAR.get()))
        cb_ctx = contextvars.Context()
        cb_ctx.run(VAR.set, "callback-ctx")
        lp.call_soon(lambda: 1 / 0, context=cb_ctx)
        run_briefly(lp)
        return seen

    ref = asyncio.SelectorEventLoop()
    try:
        expected = scenario(ref)
    finally:
        ref.close()
    assert scenario(loop) == expected


def test_unretrieved_task_exception_reported(loop):
    errors = collect_errors(loop)

    async def fail():
        raise ValueError("never retrieved")

    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.sleep(0.001))
    assert task.done()
    del task
    gc.collect()
    assert len(errors) == 1
    assert errors[0]["message"] == "Task exception was never retrieved"
    assert isinstance(errors[0]["exception"], ValueError)
    assert "future" in errors[0]


def test_unretrieved_future_exception_reported(loop):
    errors = collect_errors(loop)
    fut = loop.create_future()
    fut.set_exception(KeyError("lost"))
    del fut
    gc.collect()
    assert len(errors) == 1
    assert errors[0]["message"].startswith("Future exception was never retrieved")


def test_exception_in_done_callback(loop):
    errors = collect_errors(loop)
    fut = loop.create_future()

    def bad_done(f):
        raise OSError("in done callback")

    fut.add_done_callback(bad_done)
    fut.set_result(None)
    run_briefly(loop)
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], OSError)
    assert errors[0]["message"].startswith("Exception in callback ")
