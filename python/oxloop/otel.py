"""OpenTelemetry export of oxloop loop metrics, through ``opentelemetry-api`` only (optional extra).

    import oxloop.otel
    oxloop.otel.instrument(loop)       # observable instruments on the global MeterProvider

Instrument names follow the OpenTelemetry runtime semantic conventions as Node.js's runtime
instrumentation names them (``nodejs.eventloop.*``), with ``python.asyncio`` for ``nodejs``:

- ``python.asyncio.eventloop.utilization`` (gauge, unit ``1``): busy / (busy + idle) time
  since the previous collection (Node: ``nodejs.eventloop.utilization``);
- ``python.asyncio.eventloop.time`` (counter, ``s``): total time, with attribute
  ``python.asyncio.eventloop.state`` = ``active`` (busy) or ``idle`` (polling) (Node:
  ``nodejs.eventloop.time`` with ``nodejs.eventloop.state``);
- ``python.asyncio.eventloop.delay.p50`` / ``.p90`` / ``.p99`` (gauges, ``s``): iteration busy
  time quantiles since the previous collection (upper bounds of the log2 histogram buckets,
  exact to a factor of two); ``.delay.mean`` (busy time / iterations) and ``.delay.max``
  (longest iteration) over the same interval (Node: ``nodejs.eventloop.delay.*``).

Node's ``delay`` is how late a timer fires; here it is the busy time of an iteration, which
bounds how late anything queued during it runs (a timer due during a 300 ms iteration fires up
to 300 ms late), so the analogy holds as an upper bound. Node's ``delay.min`` and
``delay.stddev`` have no counterpart: a log2 histogram gives neither faithfully. Every
observation carries ``python.asyncio.eventloop.name`` (the name given to ``instrument``), so one
process may export several loops.

Invariants: only ``opentelemetry-api`` is imported (lazily, with an ImportError naming the
extra); the SDK or any other implementation the application installed does the rest. Callbacks
run on the SDK's collecting thread and read ``loop.metrics()`` (safe from any thread); interval
gauges keep their previous snapshot per instrument and loop, so each reader collection sees the
interval since that instrument's previous one. Closed or collected loops stop reporting.
"""

from __future__ import annotations

import functools
import threading
import weakref
from asyncio import AbstractEventLoop, events
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["instrument", "uninstrument", "PREFIX"]

PREFIX = "python.asyncio.eventloop"
_NAME_ATTR = f"{PREFIX}.name"
_STATE_ATTR = f"{PREFIX}.state"


def _api() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "oxloop.otel needs opentelemetry-api: pip install 'oxloop[otel]'"
        ) from exc
    return metrics


def _percentile_s(metrics: Any, q: float) -> float:
    return float(metrics.busy_percentile(q)) / 1e9


class _Instruments:
    """The observable instruments of one MeterProvider and the loops they observe."""

    def __init__(self, api: Any, meter_provider: Any) -> None:
        from . import __version__

        self.api = api
        self.lock = threading.Lock()
        self.loops: dict[str, weakref.ref[AbstractEventLoop]] = {}
        self.previous: dict[tuple[str, str], Any] = {}
        provider = meter_provider if meter_provider is not None else api.get_meter_provider()
        meter = provider.get_meter("oxloop", __version__)
        meter.create_observable_gauge(
            f"{PREFIX}.utilization",
            callbacks=[self._interval_cb("utilization", lambda m: m.utilization)],
            unit="1",
            description="Event loop utilization: busy time over busy and idle time",
        )
        meter.create_observable_counter(
            f"{PREFIX}.time",
            callbacks=[self._time_cb],
            unit="s",
            description="Time the event loop spent busy (active) and polling (idle)",
        )
        for q in (50, 90, 99):
            meter.create_observable_gauge(
                f"{PREFIX}.delay.p{q}",
                callbacks=[
                    self._interval_cb(
                        f"p{q}",
                        functools.partial(_percentile_s, q=q / 100),
                        needs_iterations=True,
                    )
                ],
                unit="s",
                description=f"Iteration busy time, {q}th percentile",
            )
        meter.create_observable_gauge(
            f"{PREFIX}.delay.mean",
            callbacks=[
                self._interval_cb(
                    "mean", lambda m: m.busy_ns / m.iterations / 1e9, needs_iterations=True
                )
            ],
            unit="s",
            description="Iteration busy time, mean",
        )
        meter.create_observable_gauge(
            f"{PREFIX}.delay.max",
            callbacks=[
                self._interval_cb("max", lambda m: m.longest_stall_ns / 1e9, needs_iterations=True)
            ],
            unit="s",
            description="Iteration busy time, maximum",
        )

    def live(self) -> list[tuple[str, Any]]:
        """(name, metrics snapshot) of each open loop."""
        with self.lock:
            out = []
            for name, ref in list(self.loops.items()):
                loop = ref()
                if loop is None or loop.is_closed():
                    del self.loops[name]
                    for key in [k for k in self.previous if k[1] == name]:
                        del self.previous[key]
                else:
                    out.append((name, loop))
        return [(name, loop.metrics()) for name, loop in out]  # type: ignore[attr-defined]

    def _time_cb(self, options: Any) -> Iterable[Any]:
        obs = self.api.Observation
        out = []
        for name, m in self.live():
            out.append(obs(m.busy_ns / 1e9, {_NAME_ATTR: name, _STATE_ATTR: "active"}))
            out.append(obs(m.idle_ns / 1e9, {_NAME_ATTR: name, _STATE_ATTR: "idle"}))
        return out

    def _interval_cb(
        self, key: str, value: Callable[[Any], float], *, needs_iterations: bool = False
    ) -> Callable[[Any], Iterable[Any]]:
        def callback(options: Any) -> Iterable[Any]:
            out = []
            for name, snap in self.live():
                with self.lock:
                    prev = self.previous.get((key, name))
                    self.previous[(key, name)] = snap
                interval = snap - prev if prev is not None else snap
                if needs_iterations and not interval.iterations:
                    continue  # no iteration ended in the interval: nothing to say
                out.append(self.api.Observation(value(interval), {_NAME_ATTR: name}))
            return out

        return callback


_by_provider: dict[int, tuple[Any, _Instruments]] = {}
_by_provider_lock = threading.Lock()


def instrument(
    loop: AbstractEventLoop | None = None,
    *,
    name: str | None = None,
    meter_provider: Any = None,
) -> None:
    """Report ``loop``'s metrics (default: the running loop) through OpenTelemetry, as
    ``python.asyncio.eventloop.name=name`` (default: the loop's thread name, else "main"), on
    ``meter_provider`` (default: the global one). The instruments are created once per
    provider; instrumenting the same loop again under the same name is harmless."""
    api = _api()
    if loop is None:
        loop = events._get_running_loop()
        if loop is None:
            raise RuntimeError("no running event loop: pass the loop to instrument")
    if getattr(loop, "metrics", None) is None:
        raise TypeError(f"{type(loop).__name__} has no metrics(): only oxloop loops export")
    if name is None:
        name = threading.current_thread().name if loop.is_running() else "main"
    key = id(meter_provider)
    with _by_provider_lock:
        entry = _by_provider.get(key)
        if entry is None or entry[0] is not meter_provider:
            entry = (meter_provider, _Instruments(api, meter_provider))
            _by_provider[key] = entry
    instruments = entry[1]
    with instruments.lock:
        current = instruments.loops.get(name)
        if current is not None and current() not in (None, loop):
            raise ValueError(f"a loop named {name!r} is already instrumented")
        instruments.loops[name] = weakref.ref(loop)


def uninstrument(loop: AbstractEventLoop, *, meter_provider: Any = None) -> None:
    """Stop reporting ``loop`` on ``meter_provider`` (default: the global one)."""
    with _by_provider_lock:
        entry = _by_provider.get(id(meter_provider))
    if entry is None or entry[0] is not meter_provider:
        return
    instruments = entry[1]
    with instruments.lock:
        for name, ref in list(instruments.loops.items()):
            if ref() is loop:
                del instruments.loops[name]
