"""Helpers shared by the loop-core tests (not fixtures: plain functions)."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from asyncio import format_helpers

PY = sys.version_info[:2]


def callback_source(func, args=(), *, debug: bool = False) -> str:
    """How the running asyncio formats a callback in 'Exception in callback ...' messages."""
    params = inspect.signature(format_helpers._format_callback_source).parameters
    if "debug" in params:
        return format_helpers._format_callback_source(func, args, debug=debug)
    return format_helpers._format_callback_source(func, args)


def collect_errors(loop: asyncio.AbstractEventLoop) -> list[dict]:
    """Install an exception handler that records every context dict it receives."""
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    return errors


def run_briefly(loop: asyncio.AbstractEventLoop, iterations: int = 1) -> None:
    """Run exactly `iterations` loop iterations' worth of callbacks scheduled now."""
    for _ in range(iterations):
        loop.call_soon(loop.stop)
        loop.run_forever()


def python_subprocess(code: str, *argv: str, flags=(), env: dict | None = None, **kw):
    """Start `python [flags] -c code [argv]` with the running interpreter and this environment
    (PYTHONASYNCIODEBUG removed unless env sets it); stdout/stderr are text pipes."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONASYNCIODEBUG", None)
    full_env.pop("PYTHONDEVMODE", None)
    if env:
        full_env.update(env)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, *flags, "-c", code, *argv], env=full_env, text=True, **kw
    )


def outcome(fn, lp):
    """fn(lp) summarised: ('ok', result) or ('raise', type, errno)."""
    try:
        return ("ok", fn(lp))
    except Exception as exc:
        return ("raise", type(exc), getattr(exc, "errno", None))


def stock_outcome(fn):
    """outcome(fn, loop) on a fresh stock asyncio loop: what CPython does is the spec."""
    ref = asyncio.SelectorEventLoop()
    try:
        return outcome(fn, ref)
    finally:
        ref.close()


def fast_path(loop_kind: str, *entries: str) -> bool:
    """Whether oxloop's fast path needing the CPython contract ``entries`` runs for this loop:
    never on asyncio, and on oxloop unless a probe failed (or ``OXLOOP_CONTRACT_FAIL`` made it
    fail, as tests/test_contract.py does). A test asserting how oxloop does something, not
    what it does, asks this first."""
    if loop_kind != "oxloop":
        return False
    from oxloop import _contract

    status = _contract.status()
    return all(status[entry] for entry in entries)


CHILD_ENV = "OXLOOP_TESTS_ISOLATED"


def isolate_oxloop(request, loop_kind: str) -> bool:
    """Run this test's oxloop variant in a child pytest, so that a crash of the core fails the
    test instead of killing the session. Returns True in the parent once the child passed
    (the caller then returns); False where the test body should run (asyncio, or the child)."""
    if loop_kind != "oxloop" or os.environ.get(CHILD_ENV):
        return False
    env = dict(os.environ, **{CHILD_ENV: "1"})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:asyncio",
            "-p",
            "no:cacheprovider",
            request.node.nodeid,
        ],
        cwd=str(request.config.rootpath),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        signal_note = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
        raise AssertionError(
            f"child pytest exited {proc.returncode}{signal_note}:\n" + "\n".join(out[-25:])
        )
    return True
