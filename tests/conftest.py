"""Shared fixtures: every behaviour runs on oxloop and on stock asyncio.

`loop_factory` is parametrized over both loops; `loop` is a fresh loop from it, set as the
current event loop for the test and closed afterwards. Test ids end in [asyncio] / [oxloop].
`OXLOOP_TEST_LOOPS` (a comma-separated subset, e.g. `oxloop`) narrows the parametrization.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import signal
import sys
from pathlib import Path

import oxloop
import pytest

# A test run started in the background by a non-interactive shell inherits SIGINT ignored, and
# an ignored signal stays ignored across exec: the Ctrl-C tests' child interpreters would then
# install no KeyboardInterrupt handler and never stop (on every loop). Give this process
# Python's handler, so children start from the default disposition as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_STRESS_DIR = Path(__file__).parent / "stress"


def pytest_ignore_collect(collection_path, config):
    """tests/stress/ (minutes of load and fault tests) is collected only when a path inside it is
    named on the command line (`make stress`, `make stress-ci`), never by `pytest tests`."""
    if collection_path != _STRESS_DIR:
        return None
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        named = (base / arg.split("::")[0]).resolve()
        if named == _STRESS_DIR or _STRESS_DIR in named.parents:
            return None
    return True


FACTORIES = {
    "asyncio": asyncio.new_event_loop
    if sys.platform == "win32"
    else (lambda: asyncio.SelectorEventLoop()),
    "oxloop": oxloop.new_event_loop,
}


# OXLOOP_TEST_LOOPS=oxloop keeps only the oxloop side of the fixture's tests: `make test-debug`
# sets it, since CPython's debug build is there to catch the extension's refcount and assertion
# errors, which the stock asyncio side cannot meet (oxloop's tools that take a stock loop, such as
# dump_tasks, are Python), and that side runs on every release build of the matrix.
_LOOPS = [
    k
    for k in sorted(FACTORIES)
    if k in os.environ.get("OXLOOP_TEST_LOOPS", ",".join(FACTORIES)).split(",")
]
if not _LOOPS:
    raise pytest.UsageError(f"OXLOOP_TEST_LOOPS names none of {sorted(FACTORIES)}")


@pytest.fixture(params=_LOOPS)
def loop_kind(request) -> str:
    return request.param


@pytest.fixture
def loop_factory(loop_kind):
    return FACTORIES[loop_kind]


@pytest.fixture
def loop(loop_factory):
    lp = loop_factory()
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        if lp.is_running():  # pragma: no cover - a test bug
            lp.stop()
        if not lp.is_closed():
            lp.run_until_complete(lp.shutdown_asyncgens())
            lp.close()
        asyncio.set_event_loop(None)
        gc.collect()


@pytest.fixture
def run(loop):
    """run(coro) -> result, on the test's loop."""
    return loop.run_until_complete


def pytest_collection_finish(session):
    """Move everything alive after collection (the imported modules, pytest's and the plugins'
    objects, the collected items) to the collector's permanent generation (`gc.freeze()`).

    Why: the `loop` fixture ends each test with `gc.collect()`, so that a leak or a
    ResourceWarning shows up in the test that caused it. A full collection walks every tracked
    object, and what the session imports (pytest, hypothesis, the integration clients) made it
    cost 20-70 ms on the development VM: minutes over a suite of two thousand tests,
    spent re-walking objects that live until the interpreter exits. Objects a test creates are
    collected as before; `gc.get_objects()` and `gc.get_referrers()` see only the unfrozen ones.
    """
    gc.collect()
    gc.freeze()


def pytest_configure(config):
    # The one thing the freeze above changes that a test meets: Hypothesis (tests/test_fuzz.py)
    # checks with gc.get_referrers() that the Random it registers is referenced, and the
    # referrer (its thread-local state, made at import) is frozen, so on 3.14 it warns that the
    # Random "could be garbage collected immediately". It is not: the frozen state holds it.
    # Only where Hypothesis is installed (test_fuzz skips without it): pytest imports a filter's
    # category, and warns of each one it cannot import (PytestConfigWarning).
    if importlib.util.find_spec("hypothesis") is None:
        return
    config.addinivalue_line(
        "filterwarnings",
        "ignore:It looks like `register_random` was passed an object that could be garbage "
        "collected:hypothesis.errors.HypothesisWarning",
    )
