"""oxloop: a drop-in replacement for asyncio's event loop, written in Rust.

Public API (mirrors uvloop where users know it already):
- ``new_event_loop()`` / ``Loop``: the loop;
- ``run(main, *, debug=None, **kwargs)``: ``asyncio.run`` on an oxloop loop;
- ``install()`` / ``EventLoopPolicy``: for code that still uses policies;
- ``oxloop.testing``: ``VirtualClock``, virtual time for tests (docs/testing.md).
"""

from __future__ import annotations

from . import testing
from ._api import EventLoopPolicy, install, run
from ._loop import Loop, new_event_loop

__all__ = ["EventLoopPolicy", "Loop", "install", "new_event_loop", "run", "testing"]
__version__ = "0.1.0"
