"""Route every event loop that CPython's test.test_asyncio builds to the loop under test.

Role: imported by the child process (``_child.py``) before it imports a test module. ``install``
makes the stock ways of getting a loop produce the loop under test; ``adapt_module`` then rewires
the few places where a test module builds a loop by naming a stock class.

Invariants:
- Every loop the hook hands out goes through ``_make_loop``, which counts it; the count is what
  proves the hook works (a module that ran tests but created no hooked loop is flagged).
- ``--loop asyncio`` goes through exactly the same patches with the stock factory, so a run on
  stock asyncio validates the hook and the adapters themselves: every default-module test must
  pass there.
- The policy stays a subclass of the stock default policy, so child watchers (3.10-3.13) and
  every other policy behaviour the tests check are CPython's own; only ``new_event_loop`` changes.
- The hook itself emits no DeprecationWarning: on 3.14+, where the public policy API is
  deprecated (gh-127949), it goes through the private names ``asyncio.events`` uses, and leaves
  ``asyncio.DefaultEventLoopPolicy`` to the package's warning ``__getattr__`` (tests assert on
  that warning).
- ``test_utils.TestLoop`` (fake time) is left alone: it is a test double, not an event loop
  implementation under test.
"""

from __future__ import annotations

import sys
import types
import unittest

# Loops created through the hook since the process started.
loops_created = 0

_factory = None

# test_events, test_sock_lowlevel and test_sendfile run one mixin over each selector
# (EPoll, Poll, Select, Kqueue). Under the hook they would all run the same loop, so only the
# EPoll variant is kept: it keeps CPython's test ids, and epoll is what oxloop's mio uses on Linux.
_SELECTOR_DUPLICATES = ("KqueueEventLoopTests", "PollEventLoopTests", "SelectEventLoopTests")

# Methods through which test classes say which loop their tests run on.
_LOOP_SEAMS = ("create_event_loop", "new_loop")


def _make_loop():
    global loops_created
    loop = _factory()
    loops_created += 1
    return loop


def _policy_api():
    """The stock default policy class, the name it is re-created from, and the setter, as
    ``asyncio.events`` itself uses them on the running version.

    3.14 deprecated the public policy API (``asyncio.DefaultEventLoopPolicy`` and
    ``asyncio.set_event_loop_policy`` warn, and go in 3.16; gh-127949): there
    ``events._init_event_loop_policy`` re-creates the policy from
    ``unix_events._DefaultEventLoopPolicy``, and the tests reset it with
    ``events._set_event_loop_policy(None)``. Going through those private names emits no
    DeprecationWarning that a test asserting on warnings could see. Before 3.14,
    ``events.get_event_loop_policy`` re-creates it with ``from . import DefaultEventLoopPolicy``.
    """
    import asyncio.events
    import asyncio.unix_events

    private_setter = getattr(asyncio.events, "_set_event_loop_policy", None)
    private_default = getattr(asyncio.unix_events, "_DefaultEventLoopPolicy", None)
    if private_setter is not None and isinstance(private_default, type):
        return private_default, "_DefaultEventLoopPolicy", private_setter
    return asyncio.unix_events.DefaultEventLoopPolicy, "DefaultEventLoopPolicy", None


def install(loop_name: str) -> None:
    """Make policies, ``asyncio.new_event_loop``, ``asyncio.run``/``Runner`` and, on 3.13+,
    ``asyncio.EventLoop`` produce loops of ``loop_name`` ("oxloop" or "asyncio"), on
    Python 3.10-3.15."""
    global _factory
    import asyncio.events
    import asyncio.unix_events

    stock_policy, policy_name, private_setter = _policy_api()
    if loop_name == "oxloop":
        import oxloop

        _factory = oxloop.new_event_loop
    elif loop_name == "asyncio":
        _factory = stock_policy._loop_factory
    else:
        raise ValueError(f"unknown loop {loop_name!r}")

    class DefaultEventLoopPolicy(stock_policy):
        # Only the loop factory differs from the stock policy (see the module invariants).
        def new_event_loop(self):
            return _make_loop()

    DefaultEventLoopPolicy.__module__ = stock_policy.__module__
    DefaultEventLoopPolicy.__qualname__ = stock_policy.__qualname__
    DefaultEventLoopPolicy.__name__ = stock_policy.__name__
    # Resetting the policy (set_event_loop_policy(None), which most modules call in
    # tearDownModule) re-creates it from the module attribute named by _policy_api: patching
    # that attribute is what makes the hook survive it.
    setattr(asyncio.unix_events, policy_name, DefaultEventLoopPolicy)
    if private_setter is not None:
        # 3.14+: the package's DefaultEventLoopPolicy is a deprecated module __getattr__ that
        # returns unix_events._DefaultEventLoopPolicy, so it already gives the class above,
        # with its warning. Setting the package attribute would silence that warning.
        private_setter(DefaultEventLoopPolicy())
    else:
        asyncio.DefaultEventLoopPolicy = DefaultEventLoopPolicy
        asyncio.set_event_loop_policy(DefaultEventLoopPolicy())

    if hasattr(asyncio, "EventLoop"):
        # 3.13+: asyncio.run(main(), loop_factory=asyncio.EventLoop). A class, as the stock
        # name is: 3.14's test_taskgroups stores it as a class attribute
        # (`loop_factory = asyncio.EventLoop`), where a function would bind as a method.
        class EventLoop:
            def __new__(cls):
                return _make_loop()

        EventLoop.__module__ = asyncio.unix_events.__name__
        asyncio.EventLoop = EventLoop
        asyncio.unix_events.EventLoop = EventLoop


def _wrap_runners_loop(loop):
    # test_runners' BaseTest.tearDown asserts that asyncio.run/Runner called
    # loop.shutdown_asyncgens(); its stock new_loop records that on a mocked BaseEventLoop.
    # Record it the same way on a real loop, and still run the real shutdown.
    loop.shutdown_ag_run = False
    real_shutdown_asyncgens = loop.shutdown_asyncgens

    async def shutdown_asyncgens():
        loop.shutdown_ag_run = True
        await real_shutdown_asyncgens()

    loop.shutdown_asyncgens = shutdown_asyncgens
    return loop


def _adapt_test_runners(module: types.ModuleType) -> None:
    # BaseTest.new_loop builds asyncio.BaseEventLoop() with a mocked selector, and every
    # Runner/asyncio.run test gets its loop from it through a TestPolicy.
    module.BaseTest.new_loop = lambda self: _wrap_runners_loop(_make_loop())


def _adapt_test_pep492(module: types.ModuleType) -> None:
    # BaseTest.setUp builds asyncio.BaseEventLoop() with a mocked selector that never blocks;
    # the tests only run coroutines that need no I/O, so a real loop serves them as well.
    base = module.BaseTest

    def setUp(self):
        super(base, self).setUp()  # test_utils.TestCase.setUp: thread bookkeeping
        self.loop = _make_loop()
        self.set_event_loop(self.loop)

    base.setUp = setUp


_MODULE_ADAPTERS = {
    "test_runners": _adapt_test_runners,
    "test_pep492": _adapt_test_pep492,
}


def adapt_module(module: types.ModuleType) -> list[str]:
    """Rewire the loop seams of an imported test module; returns what was changed, for the log."""
    changes = []
    names = vars(module)
    if "EPollEventLoopTests" in names:
        for name in _SELECTOR_DUPLICATES:
            if name in names:
                delattr(module, name)
                changes.append(f"dropped {name} (duplicate of EPollEventLoopTests)")
    for name, obj in list(vars(module).items()):
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)):
            continue
        for seam in _LOOP_SEAMS:
            # Only classes that define the seam themselves name a stock loop class there.
            if seam in vars(obj):
                setattr(obj, seam, lambda self: _make_loop())
                changes.append(f"{name}.{seam} -> hooked loop")
    # Module adapters run last: they override the generic seam where a module needs more.
    short = module.__name__.rpartition(".")[2]
    if short in _MODULE_ADAPTERS:
        _MODULE_ADAPTERS[short](module)
        changes.append(f"module adapter for {short}")
    return changes


def describe() -> str:
    return f"{sys.version.split()[0]} factory={getattr(_factory, '__qualname__', _factory)!r}"
