"""oxloop: a drop-in replacement for asyncio's event loop, written in Rust.

Public API (mirrors uvloop where users know it already):
- ``new_event_loop()`` / ``Loop``: the loop;
- ``run(main, *, debug=None, **kwargs)``: ``asyncio.run`` on an oxloop loop;
- ``install()`` / ``EventLoopPolicy``: for code that still uses policies.
"""

from __future__ import annotations

from ._api import EventLoopPolicy, install, run
from ._insight import SlowCallbackReport
from ._loop import Loop, new_event_loop
from ._metrics import LoopMetrics

__all__ = [
    "EventLoopPolicy",
    "Loop",
    "LoopMetrics",
    "SlowCallbackReport",
    "install",
    "new_event_loop",
    "run",
]
__version__ = "0.1.0"
