"""Slow-callback reports without debug mode: what the watchdog samples and how it reports.

The Rust watchdog thread (src/loop_core/watchdog.rs) notices a callback that has run longer
than ``loop.slow_callback_duration``, takes the GIL and calls ``sample`` (in the watchdog
thread, while the loop thread is paused inside the callback) to capture the loop thread's Python
stack, the callback's repr and its task. When the callback ends it calls ``Loop._watchdog_report``,
which queues ``deliver`` on the loop thread: one ``SlowCallbackReport`` per stall, rate-limited,
to the ``asyncio`` logger (a warning in the shape asyncio's debug mode uses, plus the sampled
stack) and to the user's hook.

Invariants: nothing here runs per callback; ``sample`` only reads (it never resumes or alters
the paused callback); the hook and the logger run on the loop thread.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from asyncio import base_events, events, futures
from asyncio.log import logger
from collections.abc import Callable
from typing import Any

__all__ = ["SlowCallbackReport"]

# Frames of the loop's own run machinery: the sampled stack starts below the innermost one.
_RUN_FRAMES = {
    ("_loop.py", "run_forever"),
    ("_loop.py", "_run_handle_debug"),
    ("base_events.py", "run_forever"),
    ("base_events.py", "_run_once"),
    ("events.py", "_run"),
}


@dataclasses.dataclass(frozen=True)
class SlowCallbackReport:
    """One callback that ran longer than ``loop.slow_callback_duration``.

    ``stack`` is the loop thread's Python stack sampled during the stall, innermost frame last
    (empty when it could not be sampled: ``sampled`` is False and ``note`` says why).
    ``await_chain`` lists ``file:line in function`` for the task's coroutine and each coroutine
    it awaits, outermost first. ``suppressed`` counts reports dropped by rate limiting since the
    previous one.
    """

    duration: float
    callback: str
    task_name: str | None
    coroutine: str | None
    await_chain: tuple[str, ...]
    stack: tuple[traceback.FrameSummary, ...]
    sampled: bool
    note: str
    suppressed: int = 0

    def format(self) -> str:
        """The report as the ``asyncio`` logger prints it."""
        lines = [f"Executing {self.callback} took {self.duration:.3f} seconds"]
        if self.task_name is not None:
            lines.append(f"Task {self.task_name!r} running {self.coroutine}")
        for link in self.await_chain:
            lines.append(f"  awaiting at {link}")
        if self.sampled:
            lines.append("Blocked at (loop thread stack sampled during the stall):")
            lines.extend(line.rstrip("\n") for line in traceback.format_list(list(self.stack)))
        else:
            lines.append(self.note)
        if self.suppressed:
            lines.append(f"({self.suppressed} more slow callbacks not reported: rate limit)")
        return "\n".join(lines)

    __str__ = format


@dataclasses.dataclass
class _Sample:
    callback: str
    task_name: str | None
    coroutine: str | None
    await_chain: tuple[str, ...]
    stack: tuple[traceback.FrameSummary, ...]


def _trim(stack: traceback.StackSummary) -> tuple[traceback.FrameSummary, ...]:
    start = 0
    for i, fs in enumerate(stack):
        if (fs.filename.rpartition("/")[2], fs.name) in _RUN_FRAMES:
            start = i + 1
    return tuple(stack[start:])


def _task_of(callback: Any) -> Any:
    # Task steps and wakeups are scheduled as bound methods (or C method wrappers) of the task.
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, futures.Future) and hasattr(owner, "get_coro"):
        return owner
    return None


def sample(loop: Any, handle: events.Handle) -> _Sample:
    """Runs in the watchdog thread, with the loop thread paused inside ``handle``."""
    frame = sys._current_frames().get(loop._thread_id)
    stack = _trim(traceback.extract_stack(frame)) if frame is not None else ()
    task = _task_of(handle._callback)
    coro = task.get_coro() if task is not None else None
    return _Sample(
        callback=base_events._format_handle(handle),
        task_name=task.get_name() if task is not None else None,
        coroutine=getattr(coro, "__qualname__", repr(coro)) if coro is not None else None,
        # Taken now, while the task's coroutines are suspended or running mid-stall.
        await_chain=_await_chain(coro),
        stack=stack,
    )


def _await_chain(coro: Any) -> tuple[str, ...]:
    chain = []
    seen = 0
    while coro is not None and seen < 64:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            chain.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return tuple(chain)


def build_report(
    sample_: _Sample | None, duration: float, unsampled: bool, handle: Any = None
) -> SlowCallbackReport:
    """Runs on the loop thread once the callback has ended. ``handle`` is the slow callback's
    handle as the loop kept it at its end, for a stall the watchdog could not sample."""
    if sample_ is None:
        callback = "<callback>"
        task_name = coroutine = None
        if handle is not None:
            callback = base_events._format_handle(handle)
            task = _task_of(handle._callback)
            if task is not None:
                task_name = task.get_name()
                coro = task.get_coro()
                coroutine = getattr(coro, "__qualname__", repr(coro))
        return SlowCallbackReport(
            duration=duration,
            callback=callback,
            task_name=task_name,
            coroutine=coroutine,
            await_chain=(),
            stack=(),
            sampled=False,
            note="Stack not sampled: the callback held the GIL (a C call) for the whole stall.",
        )
    return SlowCallbackReport(
        duration=duration,
        callback=sample_.callback,
        task_name=sample_.task_name,
        coroutine=sample_.coroutine,
        await_chain=sample_.await_chain,
        stack=sample_.stack,
        sampled=bool(sample_.stack),
        note="" if sample_.stack else "Stack not sampled: no Python frame was running.",
    )


class Reporter:
    """Per-loop settings and rate limiting of slow-callback reports (loop thread only)."""

    def __init__(self, hook: Callable[[SlowCallbackReport], object] | None, min_interval: float):
        self.hook = hook
        self.min_interval = min_interval
        self.last = -float("inf")
        self.suppressed = 0

    def deliver(self, loop: Any, report: SlowCallbackReport) -> None:
        now = time.monotonic()
        if now - self.last < self.min_interval:
            self.suppressed += 1
            return
        self.last = now
        if self.suppressed:
            report = dataclasses.replace(report, suppressed=self.suppressed)
            self.suppressed = 0
        logger.warning("%s", report.format())
        if self.hook is not None:
            try:
                self.hook(report)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                loop.call_exception_handler(
                    {
                        "message": "Exception in the slow-callback report hook",
                        "exception": exc,
                        "report": report,
                    }
                )
