"""Debug mode.

set_debug/get_debug, PYTHONASYNCIODEBUG=1 and -X dev turning debug on for new loops (checked in
a subprocess), the slow-callback warning, and the checks debug mode adds: thread affinity of
non-thread-safe methods, coroutines and non-callables rejected by call_soon/call_later/call_at.
Without debug mode asyncio does not check callbacks up front; the error surfaces when the
callback runs, through the exception handler, and the tests assert the same on both loops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from _helpers import collect_errors, python_subprocess, run_briefly


def exc_message(fn, lp):
    try:
        fn(lp)
    except Exception as exc:
        return type(exc), str(exc)
    return None


def stock_debug_message(fn):
    ref = asyncio.SelectorEventLoop()
    ref.set_debug(True)
    try:
        return exc_message(fn, ref)
    finally:
        ref.close()


async def _coro_fn():
    pass


def test_set_get_debug(loop):
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_in_running_loop(loop):
    loop.set_debug(True)

    async def main():
        return asyncio.get_running_loop().get_debug()

    assert loop.run_until_complete(main()) is True


def test_set_debug_while_running(loop):
    seen = []

    def flip():
        loop.set_debug(True)
        seen.append(loop.get_debug())

    loop.call_soon(flip)
    run_briefly(loop)
    assert seen == [True]
    assert loop.get_debug() is True


# -- environment --------------------------------------------------------------------------------

DEBUG_CHILD = r"""
import asyncio, sys
import oxloop
kind = sys.argv[1]
loop = oxloop.new_event_loop() if kind == "oxloop" else asyncio.new_event_loop()
print(type(loop).__module__, loop.get_debug())
loop.close()
async def main():
    return asyncio.get_running_loop().get_debug()
run = oxloop.run if kind == "oxloop" else asyncio.run
print(run(main()))
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "how,expected",
    [
        ("plain", False),
        ("PYTHONASYNCIODEBUG=1", True),
        ("-X dev", True),
        ("PYTHONDEVMODE=1", True),
    ],
)
def test_debug_from_environment(loop_kind, how, expected):
    env, flags = {}, []
    if how.startswith("-X"):
        flags = ["-X", "dev"]
    elif "=" in how:
        key, value = how.split("=")
        env[key] = value
    proc = python_subprocess(DEBUG_CHILD, loop_kind, flags=flags, env=env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    module, debug = lines[0].split()
    if loop_kind == "oxloop":
        assert module.startswith("oxloop")
    assert debug == str(expected)
    assert lines[1] == str(expected)


# -- slow callbacks -----------------------------------------------------------------------------


def test_slow_callback_warning(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_callback():
        time.sleep(0.03)

    loop.call_soon(slow_callback)
    loop.call_soon(lambda: None)  # fast: no warning
    run_briefly(loop)
    warnings = [
        r for r in caplog.records if r.name == "asyncio" and r.getMessage().startswith("Executing")
    ]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert "slow_callback" in msg
    assert " took " in msg and msg.endswith(" seconds")
    took = float(msg.rsplit(" took ", 1)[1].split()[0])
    assert took >= 0.03 - 0.001


def test_slow_timer_callback_warning(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_timer():
        time.sleep(0.02)

    loop.call_later(0, slow_timer)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.startswith("Executing <TimerHandle") and "slow_timer" in m for m in msgs), msgs


def test_no_slow_callback_warning_without_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    run_briefly(loop)
    assert not [r for r in caplog.records if r.getMessage().startswith("Executing")]


def test_slow_callback_duration_attribute(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == 0.5


# -- thread checks ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_foreign_thread_call_in_debug_mode(loop, method):
    loop.set_debug(True)
    result = []
    calls = {
        "call_soon": lambda: loop.call_soon(lambda: None),
        "call_later": lambda: loop.call_later(0, lambda: None),
        "call_at": lambda: loop.call_at(loop.time(), lambda: None),
    }

    def foreign():
        try:
            calls[method]()
            result.append(None)
        except BaseException as exc:
            result.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=foreign).start)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert len(result) == 1
    assert isinstance(result[0], RuntimeError)
    assert str(result[0]) == (
        "Non-thread-safe operation invoked on an event loop other than the current one"
    )


@pytest.mark.timeout(30)
def test_foreign_thread_call_soon_threadsafe_in_debug_mode(loop):
    loop.set_debug(True)
    results = []

    def foreign():
        loop.call_soon_threadsafe(results.append, "ok")
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=foreign).start)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert results == ["ok"]


def test_foreign_thread_call_soon_when_not_running(loop):
    """Debug mode checks the thread only while the loop runs (as asyncio's _thread_id)."""
    loop.set_debug(True)
    result = []

    def foreign():
        try:
            loop.call_soon(result.append, "ran")
            result.append("scheduled")
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=foreign)
    t.start()
    t.join(10)
    assert result == ["scheduled"]
    run_briefly(loop)
    assert result == ["scheduled", "ran"]


@pytest.mark.timeout(30)
def test_foreign_thread_call_soon_without_debug(loop):
    result = []

    def foreign():
        try:
            loop.call_soon(result.append, "ran")
            result.append("scheduled")
        except BaseException as exc:
            result.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=foreign).start)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    run_briefly(loop)
    assert result[0] == "scheduled"


# -- callback checks ----------------------------------------------------------------------------

SCHEDULERS = {
    "call_soon": lambda lp, cb: lp.call_soon(cb),
    "call_later": lambda lp, cb: lp.call_later(0, cb),
    "call_at": lambda lp, cb: lp.call_at(lp.time(), cb),
    "call_soon_threadsafe": lambda lp, cb: lp.call_soon_threadsafe(cb),
}


@pytest.mark.parametrize("method", sorted(SCHEDULERS))
def test_coroutine_function_rejected_in_debug(loop, method):
    loop.set_debug(True)

    def scenario(lp):
        return SCHEDULERS[method](lp, _coro_fn)

    expected = stock_debug_message(scenario)
    assert expected is not None and expected[0] is TypeError
    assert exc_message(scenario, loop) == expected
    if method == "call_soon":
        assert expected[1] == "coroutines cannot be used with call_soon()"


@pytest.mark.parametrize("method", sorted(SCHEDULERS))
def test_coroutine_object_rejected_in_debug(loop, method):
    loop.set_debug(True)
    coros = []

    def scenario(lp):
        coros.append(_coro_fn())
        return SCHEDULERS[method](lp, coros[-1])

    try:
        expected = stock_debug_message(scenario)
        assert expected is not None and expected[0] is TypeError
        assert exc_message(scenario, loop) == expected
    finally:
        for c in coros:
            c.close()


@pytest.mark.parametrize("method", sorted(SCHEDULERS))
@pytest.mark.parametrize("bad", [42, "not callable", None], ids=repr)
def test_non_callable_rejected_in_debug(loop, method, bad):
    loop.set_debug(True)

    def scenario(lp):
        return SCHEDULERS[method](lp, bad)

    expected = stock_debug_message(scenario)
    assert expected is not None and expected[0] is TypeError
    assert exc_message(scenario, loop) == expected


def test_run_in_executor_coroutine_rejected_in_debug(loop):
    loop.set_debug(True)

    def scenario(lp):
        return lp.run_in_executor(None, _coro_fn)

    expected = stock_debug_message(scenario)
    assert expected == (TypeError, "coroutines cannot be used with run_in_executor()")
    assert exc_message(scenario, loop) == expected


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_callable_without_debug_fails_when_run(loop, method):
    """No up-front check: the handle is returned and the TypeError reaches the handler."""
    errors = collect_errors(loop)
    h = SCHEDULERS[method](loop, 42)
    assert isinstance(h, asyncio.Handle)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], TypeError)
    assert errors[0]["handle"] is h
    assert errors[0]["message"].startswith("Exception in callback ")


def test_debug_handles_carry_source_traceback(loop):
    loop.set_debug(True)
    errors = collect_errors(loop)

    def fail():
        raise ValueError

    h = loop.call_soon(fail)
    assert h._source_traceback  # noqa: SLF001 - asyncio's documented debug attribute
    run_briefly(loop)
    assert len(errors) == 1
    assert set(errors[0]) == {"message", "exception", "handle", "source_traceback"}


def test_debug_repr_of_cancelled_handle_keeps_callback(loop):
    loop.set_debug(True)

    def named_callback():
        pass

    h = loop.call_soon(named_callback)
    h.cancel()
    assert "named_callback" in repr(h)
    assert "cancelled" in repr(h)
    run_briefly(loop)
