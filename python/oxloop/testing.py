"""Virtual time for tests: ``VirtualClock`` and the errors a virtual loop raises.

Role: a test of code that sleeps, retries with backoff or times out should not wait for real.
A loop built with a ``VirtualClock`` reads its time from that clock instead of
``time.monotonic()``, and the clock moves only when the loop makes it move:

- *autojump* (trio's ``MockClock`` rule): when no callback is ready, a zero-timeout poll finds no
  I/O, no executor / ``to_thread`` work is in flight, and the loop has then sat idle for
  ``autojump_threshold`` seconds of real time, time jumps to the next timer's deadline;
- ``await clock.advance(seconds)`` steps time forward through every timer due on the way, so
  each runs with ``loop.time()`` at its own deadline (tokio's ``time::advance``).

Nothing outside the loop is patched: ``time.monotonic()``, ``time.time()`` and threads stay on
real time (see docs/testing.md for the limits).

Invariants:
- virtual time never goes backwards;
- timers with equal deadlines fire in the order they were scheduled, and ``call_soon`` is FIFO;
  with ``seed=N`` only the dispatch order of the I/O events of one poll (which asyncio leaves
  unspecified) is shuffled, deterministically for a given seed;
- a loop that nothing can wake again raises ``Deadlock`` (naming every task and what it awaits)
  instead of hanging; reaching ``end`` raises ``EndOfVirtualTime`` (a ``TimeoutError``), once.

>>> import asyncio, oxloop
>>> from oxloop.testing import VirtualClock
>>> async def main():
...     await asyncio.sleep(3600)
...     return asyncio.get_running_loop().time()
>>> oxloop.run(main(), loop_factory=lambda: oxloop.new_event_loop(clock=VirtualClock()))
3600.0
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._tasks import live_tasks

if TYPE_CHECKING:
    from ._loop import Loop

__all__ = [
    "Deadlock",
    "EndOfVirtualTime",
    "LoopFactoryMixin",
    "VirtualClock",
    "VirtualLoopFactory",
    "describe_tasks",
    "virtual_loop_factory",
]

_U64 = (1 << 64) - 1


class Deadlock(RuntimeError):
    """A loop on virtual time can never wake again: nothing is ready, no timer can fire, no fd
    is watched and no thread work is pending. The message names each task and what it awaits.
    """


class EndOfVirtualTime(TimeoutError):
    """Virtual time reached the clock's ``end``: the code under test ran too long."""


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


class VirtualClock:
    """A test clock for one oxloop loop: ``oxloop.new_event_loop(clock=VirtualClock())``.

    ``start``: the loop's time when it is made (seconds). ``autojump_threshold``: seconds of
    real idle time after which time jumps to the next timer (0: at once; ``None`` or ``inf``:
    never, time moves only through ``advance``); a test with real socket I/O uses a small
    positive value such as 0.01 so the I/O gets a chance first. ``end``: a virtual deadline; when
    time reaches it the loop raises ``EndOfVirtualTime``. ``seed``: an int that shuffles the
    dispatch order of the I/O events of each poll, reproducibly.

    A clock drives exactly one loop; make a new one per loop.
    """

    def __init__(
        self,
        start: float = 0.0,
        autojump_threshold: float | None = 0.0,
        end: float | None = None,
        seed: int | None = None,
    ) -> None:
        self._start = _number("start", start)
        if not math.isfinite(self._start):
            raise ValueError(f"start must be finite, not {start!r}")
        self._threshold = self._check_threshold(autojump_threshold)
        if end is not None:
            end = _number("end", end)
            if math.isnan(end) or end < self._start:
                raise ValueError(f"end must be a time after start ({self._start}), not {end!r}")
        self._end = end
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int, not {type(seed).__name__}")
        self._seed = seed
        self._loop_ref: weakref.ReferenceType[Loop] | None = None
        # Pending advance() calls: (target, order, future), earliest target first.
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @staticmethod
    def _check_threshold(value: float | None) -> float:
        if value is None:
            return math.inf
        v = _number("autojump_threshold", value)
        if math.isnan(v) or v < 0:
            raise ValueError(f"autojump_threshold must be >= 0, not {value!r}")
        return v

    def __repr__(self) -> str:
        return (
            f"<VirtualClock now={self.now!r} autojump_threshold={self.autojump_threshold!r} "
            f"end={self._end!r} seed={self._seed!r}>"
        )

    # -- what the core reads ---------------------------------------------------------------

    def _config(self) -> tuple[float, float, float | None, int | None]:
        """``(start, threshold, end, seed)`` for the Rust core, which builds its clock from it."""
        seed = None if self._seed is None else self._seed & _U64
        return (self._start, self._threshold, self._end, seed)

    def _bind(self, loop: Loop) -> None:
        if self._loop_ref is not None:
            raise RuntimeError("this VirtualClock already drives a loop; make one per loop")
        self._loop_ref = weakref.ref(loop)

    def _bound_loop(self) -> Loop | None:
        return None if self._loop_ref is None else self._loop_ref()

    # -- public API ------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The loop's current time (``loop.time()``); ``start`` before the clock has a loop."""
        loop = self._bound_loop()
        return self._start if loop is None else loop.time()

    @property
    def start(self) -> float:
        return self._start

    @property
    def end(self) -> float | None:
        """The virtual deadline, or None. Cleared once reached, so cleanup code can run."""
        return self._end

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def autojump_threshold(self) -> float:
        """Real seconds of idleness before time jumps to the next timer (inf: never)."""
        return self._threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float | None) -> None:
        self._threshold = self._check_threshold(value)
        loop = self._bound_loop()
        if loop is not None and not loop.is_closed():
            loop._virtual_set_threshold(self._threshold)
            # A loop blocked in the poller re-decides with the new threshold.
            loop._write_to_self()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing every timer due on the way at its own
        deadline, and return once the loop has nothing left to do at the new time."""
        s = _number("seconds", seconds)
        if math.isnan(s) or s < 0:
            raise ValueError(f"seconds must be >= 0, not {seconds!r}")
        loop = self._bound_loop()
        if loop is None or asyncio.get_running_loop() is not loop:
            raise RuntimeError("advance() must be awaited on the loop this clock drives")
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (loop.time() + s, next(self._order), fut))
        self._update_target(loop)
        try:
            await fut
        finally:
            if any(w[2] is fut for w in self._waiters):  # cancelled: forget this target
                self._waiters = [w for w in self._waiters if w[2] is not fut]
                heapq.heapify(self._waiters)
                if not loop.is_closed():
                    self._update_target(loop)

    # -- hooks the loop calls ----------------------------------------------------------------

    def _update_target(self, loop: Loop) -> None:
        loop._virtual_advance_to(self._waiters[0][0] if self._waiters else None)

    def _advanced(self, loop: Loop) -> None:
        """The core stepped time to the earliest ``advance`` target: wake those callers."""
        now = loop.time()
        while self._waiters and self._waiters[0][0] <= now:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(None)
        self._update_target(loop)

    def _end_reached(self, loop: Loop) -> None:
        end, self._end = self._end, None
        raise EndOfVirtualTime(
            f"virtual time reached end={end!r} (the clock started at {self._start!r})\n"
            + describe_tasks(loop)
        )

    def _deadlock(self, loop: Loop) -> None:
        raise Deadlock(
            "the event loop can never wake again: no callback is ready, no timer can fire"
            + ("" if math.isfinite(self._threshold) else " (autojump is off)")
            + ", no fd is watched and no thread work is pending\n"
            + describe_tasks(loop)
        )


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a task is suspended: each coroutine of its await chain, innermost last, then the
    future it waits on."""
    out: list[str] = []
    obj: Any = task.get_coro()
    for _ in range(100):  # a cycle is impossible, but never loop forever in an error path
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        out.append(f"{code.co_name}() at {code.co_filename}:{frame.f_lineno}")
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        if obj is None:
            break
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None:
        out.append(repr(waiter))
    return out


def describe_tasks(loop: asyncio.AbstractEventLoop) -> str:
    """One line per pending task of ``loop``: its name and what it awaits."""
    # live_tasks: asyncio.all_tasks() plus the Python-class tasks it misses on 3.14+.
    tasks = sorted(live_tasks(loop), key=lambda t: t.get_name())
    if not tasks:
        return "no task is pending"
    lines = [f"{len(tasks)} pending task(s):"]
    for t in tasks:
        lines.append(f"  {t.get_name()}: " + " -> ".join(_await_chain(t) or [repr(t)]))
    return "\n".join(lines)


class VirtualLoopFactory:
    """A loop factory (for ``asyncio.Runner``, ``asyncio.run(loop_factory=)``, anyio,
    ``IsolatedAsyncioTestCase.loop_factory``) that makes an oxloop loop on a fresh
    ``VirtualClock`` with the given settings at each call.

    An object rather than a function so that it stays unbound when set as a class attribute
    (``loop_factory = virtual_loop_factory()`` in a test case class).
    """

    def __init__(
        self,
        start: float = 0.0,
        autojump_threshold: float | None = 0.0,
        end: float | None = None,
        seed: int | None = None,
    ) -> None:
        # Checked now, so a bad setting fails where it is written, not in each test.
        VirtualClock(start, autojump_threshold, end, seed)
        self._settings = (start, autojump_threshold, end, seed)

    def __call__(self) -> Loop:
        from ._loop import new_event_loop

        return new_event_loop(clock=VirtualClock(*self._settings))

    def __repr__(self) -> str:
        start, threshold, end, seed = self._settings
        return (
            f"virtual_loop_factory(start={start!r}, autojump_threshold={threshold!r}, "
            f"end={end!r}, seed={seed!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VirtualLoopFactory) and other._settings == self._settings

    def __hash__(self) -> int:
        return hash(self._settings)


def virtual_loop_factory(
    start: float = 0.0,
    autojump_threshold: float | None = 0.0,
    end: float | None = None,
    seed: int | None = None,
) -> VirtualLoopFactory:
    """A loop factory making oxloop loops on virtual time with these settings (a fresh
    ``VirtualClock`` per loop): ``asyncio.Runner(loop_factory=virtual_loop_factory())``."""
    return VirtualLoopFactory(start, autojump_threshold, end, seed)


class LoopFactoryMixin:
    """``IsolatedAsyncioTestCase.loop_factory`` (Python 3.13) for Python 3.10 to 3.12.

    ``class T(LoopFactoryMixin, unittest.IsolatedAsyncioTestCase): loop_factory = ...``
    runs each test on a loop from ``loop_factory`` (None: asyncio's default), exactly as 3.13
    does; on 3.13 and later the mixin adds nothing.
    """

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None

    if (3, 11) <= sys.version_info < (3, 13):

        def _setupAsyncioRunner(self) -> None:
            # unittest/async_case.py of 3.13, which passes loop_factory to the Runner.
            assert self._asyncioRunner is None, "asyncio runner is already initialized"  # type: ignore[has-type]
            runner = asyncio.Runner(debug=True, loop_factory=self.loop_factory)
            self._asyncioRunner = runner

    elif sys.version_info < (3, 11):

        def _setupAsyncioLoop(self) -> None:
            # unittest/async_case.py of 3.10 with the loop made by loop_factory.
            assert self._asyncioTestLoop is None, "asyncio test loop already initialized"  # type: ignore[has-type]
            loop = (self.loop_factory or asyncio.new_event_loop)()
            asyncio.set_event_loop(loop)
            loop.set_debug(True)
            self._asyncioTestLoop = loop
            fut = loop.create_future()
            self._asyncioCallsTask = loop.create_task(self._asyncioLoopRunner(fut))  # type: ignore[attr-defined]
            loop.run_until_complete(fut)
