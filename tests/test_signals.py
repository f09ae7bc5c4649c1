"""Loop core: Unix signals.

add_signal_handler/remove_signal_handler (delivery with args, replacement, errors for invalid
signals, SIGKILL, coroutines and non-main threads), close() restoring the handlers it installed,
and Ctrl-C: SIGINT interrupting a loop blocked in sleep() with KeyboardInterrupt, in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import sys
import threading
import time
import warnings

import pytest
from _helpers import collect_errors, outcome, python_subprocess, stock_outcome

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix signals")

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@pytest.fixture(autouse=True)
def guard_signals():
    """Keep the test process alive whatever the loop does: SIGUSR1/2 get a recording handler
    (add_signal_handler replaces it), and every disposition is restored afterwards."""
    stray = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
    for s in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, lambda n, f: stray.append(n))
    yield stray
    for s, h in saved.items():
        signal.signal(s, h)
    signal.set_wakeup_fd(-1)


def deliver_and_run(loop, sig, until, timeout=5.0):
    """Send sig to this process from a callback and run until `until` (a future) is done."""
    loop.call_soon(os.kill, os.getpid(), sig)
    return loop.run_until_complete(asyncio.wait_for(until, timeout))


def test_handler_runs_with_args(loop):
    fut = loop.create_future()

    def handler(*args):
        fut.set_result((args, asyncio.get_running_loop() is loop))

    assert loop.add_signal_handler(signal.SIGUSR1, handler, "a", 1) is None
    assert deliver_and_run(loop, signal.SIGUSR1, fut) == (("a", 1), True)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_handler_runs_while_callbacks_keep_the_loop_busy(loop):
    # No fd of the test's own is watched and the loop never blocks; the signal must still be
    # picked up by the next poll.
    spins = []
    seen_at = []

    def spin():
        spins.append(None)
        if len(spins) == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        if len(spins) < 50 and not seen_at:
            loop.call_soon(spin)
        else:
            loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, lambda: seen_at.append(len(spins)))
    loop.call_soon(spin)
    loop.run_forever()
    loop.remove_signal_handler(signal.SIGUSR1)
    assert seen_at and seen_at[0] <= 5


def test_handler_installs_process_disposition(loop, guard_signals):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    current = signal.getsignal(signal.SIGUSR1)
    assert current not in (signal.SIG_DFL, signal.SIG_IGN, None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_from_thread_wakes_sleeping_loop(loop):
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR2, lambda: fut.set_result(time.monotonic()))
    sent = []

    def sender():
        time.sleep(0.05)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGUSR2)

    loop.call_soon(threading.Thread(target=sender).start)
    received = loop.run_until_complete(asyncio.wait_for(fut, 10))
    assert received - sent[0] < 1.0
    loop.remove_signal_handler(signal.SIGUSR2)


def test_handler_runs_in_context_captured_at_add(loop):
    fut = loop.create_future()
    token = VAR.set("at-add")
    try:
        loop.add_signal_handler(signal.SIGUSR1, lambda: fut.set_result(VAR.get()))
    finally:
        VAR.reset(token)
    assert deliver_and_run(loop, signal.SIGUSR1, fut) == "at-add"


def test_replacing_handler(loop):
    calls = []
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, lambda: fut.set_result("new"))
    assert deliver_and_run(loop, signal.SIGUSR1, fut) == "new"
    assert calls == []
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_two_signals(loop):
    got = []
    done = loop.create_future()

    def handler(name):
        got.append(name)
        if len(got) == 2 and not done.done():
            done.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, handler, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, handler, "usr2")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
    deliver_and_run(loop, signal.SIGUSR1, done)
    assert sorted(got) == ["usr1", "usr2"]


def test_handler_exception_goes_to_exception_handler(loop):
    errors = collect_errors(loop)
    fut = loop.create_future()

    def handler():
        loop.call_soon(fut.set_result, None)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, handler)
    deliver_and_run(loop, signal.SIGUSR1, fut)
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ValueError)
    assert errors[0]["message"].startswith("Exception in callback ")


def test_remove_returns_false_when_none(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert loop.remove_signal_handler(signal.SIGUSR2) is False


@pytest.mark.parametrize("sig", [0, -1, 1000, signal.NSIG, 2**31], ids=repr)
def test_invalid_signal_numbers(loop, sig):
    def add(lp):
        return lp.add_signal_handler(sig, lambda: None)

    def remove(lp):
        return lp.remove_signal_handler(sig)

    expected = stock_outcome(add)
    assert expected[:2] == ("raise", ValueError)
    assert outcome(add, loop) == expected
    assert outcome(remove, loop) == stock_outcome(remove)


@pytest.mark.parametrize("sig", ["SIGUSR1", 1.5, None], ids=repr)
def test_non_int_signal(loop, sig):
    def add(lp):
        return lp.add_signal_handler(sig, lambda: None)

    expected = stock_outcome(add)
    assert expected[:2] == ("raise", TypeError)
    assert outcome(add, loop) == expected
    assert outcome(lambda lp: lp.remove_signal_handler(sig), loop) == stock_outcome(
        lambda lp: lp.remove_signal_handler(sig)
    )


@pytest.mark.parametrize("name", ["SIGKILL", "SIGSTOP"])
def test_uncatchable_signal(loop, name):
    sig = getattr(signal, name)
    with pytest.raises(RuntimeError, match=f"sig {int(sig)} cannot be caught"):
        loop.add_signal_handler(sig, lambda: None)
    assert loop.remove_signal_handler(sig) is False


def test_coroutine_function_handler(loop):
    async def coro_fn():
        pass

    with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_emits_no_deprecation_warning(loop):
    # 3.14 deprecates asyncio.iscoroutinefunction; asyncio's own add_signal_handler checks the
    # callback with the silent private one, so a project whose pytest config says
    # `filterwarnings = error` can install signal handlers (uvicorn does) on either loop.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_add_from_non_main_thread(loop):
    result = []

    def in_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
            result.append("no error")
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(10)
    assert len(result) == 1
    assert isinstance(result[0], RuntimeError)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_loop_created_in_thread_cannot_add(loop_factory):
    result = []

    def in_thread():
        lp = loop_factory()
        try:
            lp.add_signal_handler(signal.SIGUSR1, lambda: None)
            result.append("no error")
        except BaseException as exc:
            result.append(exc)
        finally:
            lp.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(10)
    assert len(result) == 1 and isinstance(result[0], RuntimeError)


def test_add_after_close(loop):
    loop.close()

    def add(lp):
        return lp.add_signal_handler(signal.SIGUSR1, lambda: None)

    ref = asyncio.SelectorEventLoop()
    ref.close()
    expected = outcome(add, ref)
    assert expected[:2] == ("raise", RuntimeError)
    assert outcome(add, loop) == expected
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL,)  # our guard is untouched


def test_close_removes_installed_handlers(loop_factory):
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    lp.add_signal_handler(signal.SIGUSR2, lambda: None)
    lp.add_signal_handler(signal.SIGINT, lambda: None)
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert lp.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wakeup_fd_released_after_last_remove(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.remove_signal_handler(signal.SIGUSR1)
    loop.remove_signal_handler(signal.SIGUSR2)
    # set_wakeup_fd returns the previous fd: -1 means the loop released it
    ref_prev = signal.set_wakeup_fd(-1)
    ref = asyncio.SelectorEventLoop()
    try:
        ref.add_signal_handler(signal.SIGUSR1, lambda: None)
        ref.remove_signal_handler(signal.SIGUSR1)
        stock_prev = signal.set_wakeup_fd(-1)
    finally:
        ref.close()
    assert (ref_prev == -1) == (stock_prev == -1)


# -- Ctrl-C ---------------------------------------------------------------------------------------

CTRL_C_CHILD = r"""
import asyncio, sys
import oxloop

kind, mode = sys.argv[1], sys.argv[2]
new_loop = oxloop.new_event_loop if kind == "oxloop" else asyncio.new_event_loop
run = oxloop.run if kind == "oxloop" else asyncio.run

async def main():
    print("loop:", type(asyncio.get_running_loop()).__module__, flush=True)
    print("ready", flush=True)
    await asyncio.sleep(30)

try:
    if mode == "asyncio.run":
        run(main())
    elif mode == "run_until_complete":
        loop = new_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    else:
        loop = new_loop()
        loop.call_soon(print, "loop: " + type(loop).__module__)
        loop.call_soon(print, "ready")
        loop.call_soon(sys.stdout.flush)
        loop.call_later(30, loop.stop)
        try:
            loop.run_forever()
        finally:
            loop.close()
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(42)
print("no interrupt", flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["asyncio.run", "run_until_complete", "run_forever"])
def test_ctrl_c_interrupts_sleeping_loop(loop_kind, mode):
    proc = python_subprocess(CTRL_C_CHILD, loop_kind, mode)
    try:
        first = proc.stdout.readline()
        ready = proc.stdout.readline()
        assert ready == "ready\n", (first, ready, proc.stderr.read() if proc.poll() else "")
        if loop_kind == "oxloop":
            assert first.startswith("loop: oxloop"), first
        time.sleep(0.1)  # let the loop block in its poll
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 42, (out, err)
    assert out == "KeyboardInterrupt\n"
    assert elapsed < 2.0
