"""The high-level entry points: ``run``, ``install`` and ``EventLoopPolicy``.

Role: give users the ways they already know from uvloop to put oxloop under an asyncio program.

Invariants:
- ``run(main)`` behaves exactly as the running interpreter's ``asyncio.run(main)`` (same checks in
  the same order, same errors, same shutdown sequence), except that the loop is an oxloop loop.
  It delegates to asyncio wherever asyncio accepts a loop factory (``asyncio.run(loop_factory=)``
  on 3.12+, ``asyncio.Runner(loop_factory=)`` on 3.11) and re-implements 3.10's ``asyncio.run``
  line for line on 3.10, where neither exists.
- ``EventLoopPolicy`` is asyncio's default policy for the platform with only the loop factory
  replaced, so everything else (current loop per thread, child watchers on 3.10-3.11, the
  implicit-loop DeprecationWarning of 3.12+) stays what asyncio does.
- ``install()`` warns exactly when uvloop's does: a ``DeprecationWarning`` from Python 3.12 on,
  where CPython began steering users from policies to ``asyncio.run(loop_factory=)``; on 3.14+
  asyncio's own ``set_event_loop_policy`` warning follows, as it does for uvloop.
- Defining these emits nothing on any version: the policy class derives from the private class
  behind ``asyncio.DefaultEventLoopPolicy`` (``_compat.default_policy_class``), since 3.14 warns
  on every access of the public name. The package warns when users reach for
  ``oxloop.EventLoopPolicy`` on 3.14+ (``oxloop.__getattr__``), as asyncio warns for its own.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Callable, Coroutine

from ._compat import default_policy_class
from ._loop import Loop, new_event_loop

# Not `from typing import ...`: typing is not loaded by asyncio on 3.14+, and `import oxloop`
# must not pay for it (benches/import_time.py). Type checkers treat this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")

__all__ = ["EventLoopPolicy", "install", "run"]


def run(
    main: Coroutine[Any, Any, _T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    debug: bool | None = None,
    **run_kwargs: Any,
) -> _T:
    """Run the coroutine ``main`` on a new oxloop loop and return its result.

    Equivalent to ``asyncio.run(main, debug=debug, loop_factory=oxloop.new_event_loop)`` on
    every supported Python version. ``loop_factory`` replaces ``oxloop.new_event_loop`` (for a
    subclass of ``oxloop.Loop``, say); ``run_kwargs`` are passed on to ``asyncio.run`` so that
    arguments added by later Python versions keep working.
    """
    factory = new_event_loop if loop_factory is None else loop_factory
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=factory, **run_kwargs)
    if run_kwargs:
        # What asyncio.run() itself would say about an argument it does not know.
        name = next(iter(run_kwargs))
        raise TypeError(f"run() got an unexpected keyword argument {name!r}")
    if sys.version_info >= (3, 11):
        # asyncio.run() of 3.11 minus the factory it cannot take: the running-loop check comes
        # first (a short traceback), then Runner does the rest.
        if asyncio.events._get_running_loop() is not None:
            raise RuntimeError("asyncio.run() cannot be called from a running event loop")
        with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)
    return _run_310(main, factory, debug)


def _run_310(
    main: Coroutine[Any, Any, _T],
    factory: Callable[[], asyncio.AbstractEventLoop],
    debug: bool | None,
) -> _T:
    # asyncio.run() of Python 3.10 (Lib/asyncio/runners.py) with events.new_event_loop()
    # replaced by the factory. Keep it in step with that file: same checks, same order.
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")

    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    # asyncio.runners._cancel_all_tasks of 3.10: cancel what main() left behind, let it unwind,
    # and report the tasks that failed instead of being cancelled.
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


class EventLoopPolicy(default_policy_class()):  # type: ignore[misc]
    """asyncio's default event loop policy, creating oxloop loops.

    Prefer ``oxloop.run()`` or ``asyncio.Runner(loop_factory=oxloop.new_event_loop)``: CPython
    deprecates policies in 3.14 and removes them in 3.16 (from 3.14 on, ``oxloop.EventLoopPolicy``
    warns as ``asyncio.DefaultEventLoopPolicy`` does, and 3.16 will not have it).

    >>> import asyncio, oxloop
    >>> asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())
    >>> isinstance(asyncio.new_event_loop(), oxloop.Loop)
    True
    """

    def _loop_factory(self) -> Loop:
        # BaseDefaultEventLoopPolicy.new_event_loop() calls self._loop_factory(); everything
        # else the policy does is asyncio's own.
        return new_event_loop()


def install() -> None:
    """Make oxloop the loop of every later ``asyncio.run()`` / ``asyncio.new_event_loop()``.

    Sets an ``EventLoopPolicy`` as asyncio's policy. Deprecated from Python 3.12 on in favour of
    ``oxloop.run()``, as ``uvloop.install()`` is; gone with policies in 3.16.
    """
    if sys.version_info >= (3, 12):
        # Same category, message and trigger as uvloop.install(). stacklevel=2 points at the
        # caller, so the default filters show it when a __main__ script calls install().
        warnings.warn(
            "oxloop.install() is deprecated in favor of oxloop.run() starting with Python 3.12.",
            DeprecationWarning,
            stacklevel=2,
        )
    # The public setter: on 3.14+ it adds asyncio's own DeprecationWarning, as uvloop.install()'s
    # call of it does.
    asyncio.set_event_loop_policy(EventLoopPolicy())
