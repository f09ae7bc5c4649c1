"""oxloop: a drop-in replacement for asyncio's event loop, written in Rust.

Public API (mirrors uvloop where users know it already):
- ``new_event_loop()`` / ``Loop``: the loop;
- ``run(main, *, debug=None, **kwargs)``: ``asyncio.run`` on an oxloop loop;
- ``install()`` / ``EventLoopPolicy``: for code that still uses policies;
- ``dump_tasks()`` / ``task_tree()``: the tree of a loop's live tasks and what they wait on;
- ``LoopMetrics`` (``loop.metrics()``) and ``SlowCallbackReport``
  (``loop.enable_slow_callback_reports()``): always-on loop insight;
- ``oxloop.testing``: ``VirtualClock``, virtual time for tests (docs/testing.md).

PYTEST_DONT_REWRITE: pytest marks every top-level module of a distribution with a ``pytest11``
entry point (oxloop's plugin) for assertion rewriting, and warns about one that was imported
before it started (``python -m oxloop -m pytest``, sitecustomize, ``pytest.main()`` in a
wrapper) unless its docstring says this; the warning fails projects whose pytest config says
``filterwarnings = error``. This module has no assert to rewrite; the plugin module itself
(oxloop.pytest_plugin) is still rewritten when pytest imports it.
"""

from __future__ import annotations

import importlib

# Before anything native: refuse an interpreter oxloop was not verified on (ImportError).
from ._compat import POLICIES_DEPRECATED, POLICIES_REMOVED, check_interpreter

check_interpreter()

from ._api import install, run  # noqa: E402
from ._loop import Loop, new_event_loop  # noqa: E402

TYPE_CHECKING = False  # typing is not loaded by asyncio on 3.14+ (see _loop.py)

# What running a loop does not need is imported on first use (PEP 562 __getattr__ below), so
# `import oxloop` costs no more than `import uvloop` (benches/import_time.py): scripts, CLIs
# and cold starts pay for the loop only. Type checkers see the names as plain imports.
if TYPE_CHECKING:
    from . import monitor as monitor
    from . import testing
    from ._insight import SlowCallbackReport
    from ._metrics import LoopMetrics
    from ._tasks import dump_tasks, task_tree

# name -> (module, attribute); attribute None: the module itself (a submodule).
_LAZY: dict[str, tuple[str, str | None]] = {
    "LoopMetrics": ("._metrics", "LoopMetrics"),
    "SlowCallbackReport": ("._insight", "SlowCallbackReport"),
    "dump_tasks": ("._tasks", "dump_tasks"),
    "task_tree": ("._tasks", "task_tree"),
    "monitor": (".monitor", None),
    "testing": (".testing", None),
}

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

if not POLICIES_DEPRECATED:
    from ._api import EventLoopPolicy  # noqa: E402
else:
    # 3.14-3.15: reached through __getattr__ (it warns), and left out of `import *`.
    __all__.remove("EventLoopPolicy")
    if POLICIES_REMOVED:
        # Python 3.16 removes event loop policies; so does oxloop, as uvloop does.
        __all__.remove("install")
        del install


def __getattr__(name: str) -> object:
    lazy = _LAZY.get(name)
    if lazy is not None:
        module = importlib.import_module(lazy[0], __name__)
        # Importing a submodule binds it here; a name from one is bound now, so that the
        # next access is a plain attribute lookup.
        value = module if lazy[1] is None else getattr(module, lazy[1])
        globals()[name] = value
        return value
    # 3.14-3.15: oxloop.EventLoopPolicy warns on every access, as asyncio.DefaultEventLoopPolicy
    # does there (Lib/asyncio/__init__.py); it is not in __all__, so `import *` stays quiet.
    if name == "EventLoopPolicy" and POLICIES_DEPRECATED:
        if POLICIES_REMOVED:
            raise AttributeError(
                "module 'oxloop' has no attribute 'EventLoopPolicy' (event loop policies were "
                "removed in Python 3.16; use oxloop.run() or "
                "asyncio.Runner(loop_factory=oxloop.new_event_loop))"
            )
        import warnings

        warnings.warn(
            "'oxloop.EventLoopPolicy' is deprecated and slated for removal in Python 3.16; use "
            "oxloop.run() or asyncio.Runner(loop_factory=oxloop.new_event_loop)",
            DeprecationWarning,
            stacklevel=2,
        )
        from ._api import EventLoopPolicy

        return EventLoopPolicy
    if name == "install" and POLICIES_REMOVED:
        raise AttributeError(
            "module 'oxloop' has no attribute 'install' (event loop policies were removed in "
            "Python 3.16; use oxloop.run())"
        )
    raise AttributeError(f"module 'oxloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
