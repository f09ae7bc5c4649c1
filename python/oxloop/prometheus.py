"""Prometheus export of oxloop loop metrics, through ``prometheus_client`` (optional extra).

    import oxloop.prometheus
    oxloop.prometheus.register(loop, name="main")        # into prometheus_client.REGISTRY
    prometheus_client.start_http_server(9100)

``register`` adds the loop to a collector, one per registry, that reads ``loop.metrics()`` at
each scrape (from the scraping thread: the core publishes its counters for other threads). Each
loop is a label value, ``loop="<name>"``; series (``oxloop_`` prefix):
- counters: ``iterations``, ``callbacks``, ``io_events``, ``timers_scheduled``,
  ``timers_fired``, ``timers_cancelled``, ``slow_iterations``, ``slow_callbacks`` (all
  ``_total``), ``busy_seconds_total`` and ``idle_seconds_total`` (rate(busy) / (rate(busy) +
  rate(idle)) is the utilization over any range);
- gauges: ``ready_at_poll``, ``timers_at_poll``, ``fds``, ``longest_stall_seconds``, ``tasks``;
- histogram ``oxloop_iteration_busy_seconds``: the core's log2 histogram of iteration busy
  time, bucket i (busy time b ns with ``b.bit_length() == i``) becoming ``le`` =
  (2**i - 1) ns in seconds, which is exact for integer nanoseconds; ``_sum`` is the busy time.

Invariants: ``prometheus_client`` is imported only when a collector is made, with an
ImportError naming the extra when missing; loops are held weakly and leave the output when
closed or collected; nothing runs on a loop's thread.
"""

from __future__ import annotations

import threading
import weakref
from asyncio import AbstractEventLoop
from collections.abc import Iterator
from typing import Any

from ._tasks import live_tasks

__all__ = ["LoopCollector", "register", "unregister"]

_COUNTERS = (
    ("iterations", "Loop iterations (polls) completed."),
    ("callbacks", "Callbacks (handles) run."),
    ("io_events", "I/O readiness events delivered by the poller."),
    ("timers_scheduled", "Timers scheduled (call_later / call_at)."),
    ("timers_fired", "Timers that became due and ran."),
    ("timers_cancelled", "Timers cancelled before they were due."),
    ("slow_iterations", "Iterations whose busy time reached loop.slow_callback_duration."),
    ("slow_callbacks", "Slow callbacks reported by the watchdog."),
)
_GAUGES = (
    ("ready_at_poll", "Callbacks in the ready queue at the last poll."),
    ("timers_at_poll", "Pending timers at the last poll."),
    ("fds", "File descriptors registered with the poller."),
)


def _client() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError as exc:
        raise ImportError(
            "oxloop.prometheus needs prometheus_client: pip install 'oxloop[prometheus]'"
        ) from exc
    return core


def _metrics_of(loop: AbstractEventLoop) -> Any:
    metrics = getattr(loop, "metrics", None)
    if metrics is None:
        raise TypeError(f"{type(loop).__name__} has no metrics(): only oxloop loops export")
    return metrics()


class LoopCollector:
    """A ``prometheus_client`` collector of the metrics of the loops added to it."""

    def __init__(self) -> None:
        self._core = _client()
        self._lock = threading.Lock()
        self._loops: dict[str, weakref.ref[AbstractEventLoop]] = {}

    def add(self, loop: AbstractEventLoop, name: str) -> None:
        _metrics_of(loop)  # refuse loops without metrics at once, not at the next scrape
        with self._lock:
            current = self._loops.get(name)
            if current is not None and current() not in (None, loop):
                raise ValueError(f"a loop named {name!r} is already registered")
            self._loops[name] = weakref.ref(loop)

    def remove(self, loop: AbstractEventLoop) -> None:
        with self._lock:
            for name, ref in list(self._loops.items()):
                if ref() is loop:
                    del self._loops[name]

    def _live(self) -> list[tuple[str, AbstractEventLoop]]:
        with self._lock:
            out = []
            for name, ref in list(self._loops.items()):
                loop = ref()
                if loop is None or loop.is_closed():
                    del self._loops[name]
                else:
                    out.append((name, loop))
            return out

    def describe(self) -> Iterator[Any]:
        # Names without samples: lets the registry check for duplicates without a scrape.
        return self._families([])

    def collect(self) -> Iterator[Any]:
        samples = []
        for name, loop in self._live():
            try:
                n_tasks: int | None = len(live_tasks(loop))
            except RuntimeError:  # the task set kept changing: asyncio gives up too
                n_tasks = None
            samples.append((name, _metrics_of(loop), n_tasks))
        return self._families(samples)

    def _families(self, samples: list[tuple[str, Any, int | None]]) -> Iterator[Any]:
        core = self._core
        for field, doc in _COUNTERS:
            fam = core.CounterMetricFamily(f"oxloop_{field}", doc, labels=["loop"])
            for name, m, _ in samples:
                fam.add_metric([name], getattr(m, field))
            yield fam
        for field, doc in (
            ("busy", "Time spent running callbacks and loop bookkeeping."),
            ("idle", "Time spent waiting in the poller."),
        ):
            fam = core.CounterMetricFamily(
                f"oxloop_{field}_seconds", doc, labels=["loop"], unit="seconds"
            )
            for name, m, _ in samples:
                fam.add_metric([name], getattr(m, f"{field}_ns") / 1e9)
            yield fam
        for field, doc in _GAUGES:
            fam = core.GaugeMetricFamily(f"oxloop_{field}", doc, labels=["loop"])
            for name, m, _ in samples:
                fam.add_metric([name], getattr(m, field))
            yield fam
        fam = core.GaugeMetricFamily(
            "oxloop_longest_stall_seconds",
            "Longest busy time of one iteration so far.",
            labels=["loop"],
            unit="seconds",
        )
        for name, m, _ in samples:
            fam.add_metric([name], m.longest_stall_ns / 1e9)
        yield fam
        fam = core.GaugeMetricFamily("oxloop_tasks", "Live asyncio tasks.", labels=["loop"])
        for name, _, n_tasks in samples:
            if n_tasks is not None:
                fam.add_metric([name], n_tasks)
        yield fam
        fam = core.HistogramMetricFamily(
            "oxloop_iteration_busy_seconds",
            "Busy time of each loop iteration (log2 buckets).",
            labels=["loop"],
            unit="seconds",
        )
        for name, m, _ in samples:
            buckets = []
            cumulative = 0
            for i, count in enumerate(m.busy_histogram):
                cumulative += count
                buckets.append((_le(i), cumulative))
            buckets.append(("+Inf", cumulative))
            fam.add_metric([name], buckets, sum_value=m.busy_ns / 1e9)
        yield fam


def _le(i: int) -> str:
    # Bucket i holds integer busy times b < 2**i ns, i.e. b <= 2**i - 1 ns. Formatted as
    # prometheus_client formats its own histograms' bounds.
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(((1 << i) - 1) / 1e9))


# registry -> its oxloop collector (one per registry: a registry refuses duplicate names).
_collectors: weakref.WeakKeyDictionary[Any, LoopCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def register(
    loop: AbstractEventLoop | None = None, *, name: str | None = None, registry: Any = None
) -> LoopCollector:
    """Export ``loop``'s metrics (default: the running loop) with label ``loop=name``
    (default: the loop's thread name, else ``"main"``) in ``registry`` (default:
    ``prometheus_client.REGISTRY``); returns the registry's oxloop collector."""
    core = _client()
    if registry is None:
        registry = core.REGISTRY
    if loop is None:
        from asyncio import events

        loop = events._get_running_loop()
        if loop is None:
            raise RuntimeError("no running event loop: pass the loop to export")
    if name is None:
        name = threading.current_thread().name if loop.is_running() else "main"
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = LoopCollector()
            collector.add(loop, name)
            registry.register(collector)
            _collectors[registry] = collector
            return collector
    collector.add(loop, name)
    return collector


def unregister(loop: AbstractEventLoop, *, registry: Any = None) -> None:
    """Stop exporting ``loop`` (its series leave the next scrape)."""
    if registry is None:
        registry = _client().REGISTRY
    with _collectors_lock:
        collector = _collectors.get(registry)
    if collector is not None:
        collector.remove(loop)
