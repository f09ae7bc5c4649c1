"""oxloop's pytest plugin: run asyncio tests on oxloop, on real or virtual time.

Registered through the ``pytest11`` entry point of the oxloop wheel, so it loads wherever
oxloop is installed; it is inert unless used:

- ``@pytest.mark.oxloop(virtual_time=True, autojump_threshold=0, start=0, end=None,
  seed=None)`` puts one test (or a class or module, through ``pytestmark``) on an oxloop loop,
  on a ``VirtualClock`` with these settings unless ``virtual_time=False``;
- ``--oxloop`` puts every asyncio test on oxloop (real time), ``--oxloop-virtual-time`` on
  oxloop with a virtual clock, ``--oxloop-seed=N`` gives unseeded virtual clocks that seed;
- the ``oxloop_clock`` fixture is the running loop's clock: ``await oxloop_clock.advance(s)``,
  ``oxloop_clock.now``.

Who runs the test:
- pytest-asyncio with the ``pytest_asyncio_loop_factories`` hook (1.x): the hook below answers
  ``{"oxloop": factory}`` for an oxloop test and, for any other test, the loop asyncio's policy
  makes (what pytest-asyncio does without a hook, so other tests are untouched). It is
  ``trylast``: a project's own hook wins.
- otherwise (no pytest-asyncio, or a test it does not handle: strict mode without its marker)
  an ``async def`` test carrying the oxloop marker, or any ``async def`` test under the flags,
  is run here by ``oxloop.run`` on the oxloop loop (sync fixtures only).
- pytest-asyncio before 1.4 (no hook) makes every loop through its ``event_loop_policy``
  fixture: the plugin wraps that policy so that its ``new_event_loop()`` makes the oxloop loop
  while an oxloop test is being set up.

Invariants: a loop scope wider than a function (pytest-asyncio's ``loop_scope="module"``) gets
one loop and so one clock, whose time never goes back; equal settings share one factory object,
so pytest-asyncio's scoped runner fixtures are reused as they would be without the plugin.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from . import _api, _compat
from ._loop import new_event_loop
from .testing import VirtualClock, VirtualLoopFactory

_MARKER = "oxloop"
_DEFAULTS: dict[str, Any] = {
    "virtual_time": True,
    "autojump_threshold": 0,
    "start": 0,
    "end": None,
    "seed": None,
}

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("oxloop")
    group.addoption(
        "--oxloop",
        action="store_true",
        default=False,
        help="run every asyncio test on an oxloop event loop",
    )
    group.addoption(
        "--oxloop-virtual-time",
        action="store_true",
        default=False,
        help="run every asyncio test on an oxloop loop with a virtual clock (autojump)",
    )
    group.addoption(
        "--oxloop-seed",
        type=int,
        default=None,
        help="seed for virtual clocks that set none: shuffles the order of each poll's I/O "
        "events reproducibly",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "oxloop(virtual_time=True, autojump_threshold=0, start=0, end=None, seed=None): "
        "run this asyncio test on an oxloop loop, on a virtual clock unless virtual_time=False",
    )
    if config.pluginmanager.has_plugin("asyncio"):
        _register_factories_hook(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if config.getoption("oxloop_virtual_time"):
        seed = config.getoption("oxloop_seed")
        return [f"oxloop: virtual time for every asyncio test (seed={seed})"]
    lines = []
    if config.getoption("oxloop"):
        lines.append("oxloop: every asyncio test on oxloop")
    if config.getoption("oxloop_seed") is not None:
        lines.append(
            f"oxloop: virtual clocks without a seed use seed={config.getoption('oxloop_seed')}"
        )
    return lines


# -- choosing the loop of a test ------------------------------------------------------------


def _settings(item: pytest.Item) -> dict[str, Any] | None:
    """The oxloop settings of a test: None if it is not an oxloop test."""
    config = item.config
    marker = item.get_closest_marker(_MARKER)
    if marker is None and not (
        config.getoption("oxloop") or config.getoption("oxloop_virtual_time")
    ):
        return None
    if marker is not None and marker.args:
        pytest.fail(f"{item.nodeid}: mark.oxloop takes keyword arguments only", pytrace=False)
    kwargs = dict(marker.kwargs) if marker is not None else {}
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        pytest.fail(
            f"{item.nodeid}: mark.oxloop got unexpected arguments {sorted(unknown)}; "
            f"it takes {', '.join(_DEFAULTS)}",
            pytrace=False,
        )
    settings = {**_DEFAULTS, **kwargs}
    if marker is None:
        settings["virtual_time"] = bool(config.getoption("oxloop_virtual_time"))
    if settings["seed"] is None:
        settings["seed"] = config.getoption("oxloop_seed")
    return settings


@functools.cache
def _factory(
    virtual: bool, start: float, threshold: float | None, end: float | None, seed: int | None
) -> LoopFactory:
    # Cached: the same settings give the same factory object, which pytest-asyncio's scoped
    # runner fixtures compare to decide whether a wider-scoped loop can be reused.
    if not virtual:
        return new_event_loop
    return VirtualLoopFactory(start, threshold, end, seed)


def loop_factory_for(item: pytest.Item) -> LoopFactory | None:
    """The oxloop loop factory for a test, or None if the test is not an oxloop test."""
    s = _settings(item)
    if s is None:
        return None
    try:
        return _factory(
            bool(s["virtual_time"]), s["start"], s["autojump_threshold"], s["end"], s["seed"]
        )
    except (TypeError, ValueError) as e:  # a bad setting (VirtualClock's own checks)
        pytest.fail(f"{item.nodeid}: mark.oxloop: {e}", pytrace=False)


def _policy_loop() -> asyncio.AbstractEventLoop:
    # What pytest-asyncio's runner does when no hook gives factories: the current policy's
    # new loop (its runner fixture has already put the event_loop_policy fixture in place).
    # asyncio's non-warning accessor on 3.14+, where get_event_loop_policy() warns (the
    # warning would be ours, not the user's, and fails runs under filterwarnings=error).
    return _compat.get_policy().new_event_loop()


class _AsyncioFactories:
    """The ``pytest_asyncio_loop_factories`` hook (pytest-asyncio 1.x)."""

    @pytest.hookimpl(trylast=True)
    def pytest_asyncio_loop_factories(
        self, config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, LoopFactory]:
        factory = loop_factory_for(item)
        if factory is None:
            return {"asyncio": _policy_loop}
        return {"oxloop": factory}


def _register_factories_hook(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if hasattr(pm.hook, "pytest_asyncio_loop_factories"):
        pm.register(_AsyncioFactories(), "oxloop-asyncio-loop-factories")


def _handled_elsewhere(item: pytest.Function) -> bool:
    """Whether another plugin (pytest-asyncio, anyio, pytest-trio) runs this async test."""
    if any(item.get_closest_marker(m) is not None for m in ("anyio", "trio")):
        return True
    if "anyio_backend" in getattr(item, "fixturenames", ()):
        return True
    if item.config.pluginmanager.has_plugin("asyncio"):
        try:
            from pytest_asyncio import is_async_test
        except ImportError:  # before 0.22
            return item.get_closest_marker("asyncio") is not None
        return bool(is_async_test(item))
    return False


# -- pytest-asyncio before 1.4 (no loop-factory hook): wrap its event loop policy ---------------

_current_item: pytest.Item | None = None


class _ItemPolicy(_compat.abstract_policy_class()):  # type: ignore[misc]
    """The session's event loop policy, wrapped: pytest-asyncio before 1.4 makes every loop
    through ``event_loop_policy``'s ``new_event_loop()`` (its ``event_loop`` fixture, its
    scoped loops, its runners), so this makes the oxloop loop for an oxloop test and leaves
    every other call to the wrapped policy."""

    def __init__(self, inner: asyncio.AbstractEventLoopPolicy) -> None:
        self._inner = inner

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        factory = None if _current_item is None else loop_factory_for(_current_item)
        return self._inner.new_event_loop() if factory is None else factory()

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._inner.get_event_loop()

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._inner.set_event_loop(loop)

    # Child watchers exist on the policies of 3.10-3.13.
    def get_child_watcher(self) -> Any:
        return self._inner.get_child_watcher()  # type: ignore[attr-defined]

    def set_child_watcher(self, watcher: Any) -> None:
        self._inner.set_child_watcher(watcher)  # type: ignore[attr-defined]


def _wraps_policy(config: pytest.Config) -> bool:
    pm = config.pluginmanager
    return pm.has_plugin("asyncio") and not pm.has_plugin("oxloop-asyncio-loop-factories")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    result = yield
    if fixturedef.argname != "event_loop_policy" or not _wraps_policy(request.config):
        return result
    cached = getattr(fixturedef, "cached_result", None)
    if isinstance(result, _ItemPolicy) or not (isinstance(cached, tuple) and cached[0] is result):
        return result
    # pytest caches the value in `cached_result = (value, key, exc)` before this wrapper
    # resumes; later requests read the cache, so the wrapped policy goes there too.
    wrapped = _ItemPolicy(result)
    fixturedef.cached_result = (wrapped, *cached[1:])
    return wrapped


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    global _current_item
    _current_item = item
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    # Loops made while fixtures are torn down (pytest-asyncio 0.23 makes a fresh current
    # loop then) are no test's loop.
    global _current_item
    _current_item = None
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj) or _handled_elsewhere(pyfuncitem):
        return None
    factory = loop_factory_for(pyfuncitem)
    if factory is None:
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    _api.run(pyfuncitem.obj(**kwargs), loop_factory=factory)
    return True


# -- the clock fixture ------------------------------------------------------------------------


class ClockFixture:
    """The running loop's virtual clock, looked up at each use (so it follows the loop a
    runner makes after fixtures are set up)."""

    def _clock(self) -> VirtualClock:
        loop = asyncio.get_running_loop()
        clock = getattr(loop, "clock", None)
        if clock is None:
            raise RuntimeError(
                "oxloop_clock: the running loop has no virtual clock "
                "(mark the test @pytest.mark.oxloop or run with --oxloop-virtual-time)"
            )
        return clock

    @property
    def now(self) -> float:
        """The loop's time (call it while the test's loop runs)."""
        return self._clock().now

    async def advance(self, seconds: float) -> None:
        """Step time forward, firing every timer due on the way (``VirtualClock.advance``)."""
        await self._clock().advance(seconds)

    @property
    def autojump_threshold(self) -> float:
        return self._clock().autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float | None) -> None:
        self._clock().autojump_threshold = value


@pytest.fixture
def oxloop_clock() -> ClockFixture:
    """The virtual clock of the test's loop: ``await oxloop_clock.advance(5)``,
    ``oxloop_clock.now``."""
    return ClockFixture()
