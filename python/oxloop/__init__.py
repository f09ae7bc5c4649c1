"""oxloop: a drop-in replacement for asyncio's event loop, written in Rust.

Public API (mirrors uvloop where users know it already):
- ``new_event_loop()`` / ``Loop``: the loop;
- ``run(main, *, debug=None, **kwargs)``: ``asyncio.run`` on an oxloop loop;
- ``install()`` / ``EventLoopPolicy``: for code that still uses policies;
- ``dump_tasks()`` / ``task_tree()``: the tree of a loop's live tasks and what they wait on;
- ``LoopMetrics`` (``loop.metrics()``) and ``SlowCallbackReport``
  (``loop.enable_slow_callback_reports()``): always-on loop insight;
- ``oxloop.testing``: ``VirtualClock``, virtual time for tests (docs/testing.md).
"""

from __future__ import annotations

from . import testing
from ._api import EventLoopPolicy, install, run
from ._insight import SlowCallbackReport
from ._loop import Loop, new_event_loop
from ._metrics import LoopMetrics
from ._tasks import dump_tasks, task_tree

__all__ = [
    "EventLoopPolicy",
    "Loop",
    "LoopMetrics",
    "SlowCallbackReport",
    "dump_tasks",
    "install",
    "new_event_loop",
    "run",
    "task_tree",
    "testing",
]
__version__ = "0.1.0"
