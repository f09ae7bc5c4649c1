"""Loop metrics: the immutable snapshot ``loop.metrics()`` returns, and intervals between two.

The Rust core counts per iteration (engine/src/counters.rs) and publishes its counters once
per iteration; ``LoopCore._metrics_raw()`` reads that published copy (from any thread, without a
lock) as a flat tuple in the order of ``_RAW_FIELDS``. This module only shapes it.

Invariants: a ``LoopMetrics`` never changes; counters only grow between two snapshots of one
loop, so ``later - earlier`` is an interval whose counters are the differences and whose gauges
(ready-queue depth, pending timers, fds) are the later snapshot's. ``utilization`` is busy time
over busy + idle time, the shape of Node's ``performance.eventLoopUtilization(prev)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["LoopMetrics", "HISTOGRAM_BUCKETS"]

# Iteration busy time histogram: bucket i counts iterations whose busy time b (ns) has
# b.bit_length() == i, i.e. 2**(i-1) <= b < 2**i (bucket 0: b == 0). 40 buckets reach ~9 min.
HISTOGRAM_BUCKETS = 40

# Order of the scalar fields in LoopCore._metrics_raw(); the histogram follows them.
_RAW_FIELDS = (
    "timestamp_ns",
    "iterations",
    "callbacks",
    "io_events",
    "timers_scheduled",
    "timers_fired",
    "timers_cancelled",
    "ready_at_poll",
    "timers_at_poll",
    "fds",
    "busy_ns",
    "idle_ns",
    "slow_iterations",
    "slow_callbacks",
    "longest_stall_ns",
)

_GAUGES = ("ready_at_poll", "timers_at_poll", "fds")


@dataclasses.dataclass(frozen=True)
class LoopMetrics:
    """A snapshot of one loop's counters (or, from ``m2 - m1``, an interval between two).

    Times are nanoseconds of the monotonic clock. ``busy_ns`` is time spent running callbacks
    and loop bookkeeping, ``idle_ns`` time spent waiting in the poller. An iteration is slow
    when its busy time reached ``loop.slow_callback_duration``; ``slow_callbacks`` counts the
    reports of the slow-callback watchdog (0 unless it runs).
    """

    timestamp_ns: int
    iterations: int
    callbacks: int
    io_events: int
    timers_scheduled: int
    timers_fired: int
    timers_cancelled: int
    ready_at_poll: int
    timers_at_poll: int
    fds: int
    busy_ns: int
    idle_ns: int
    slow_iterations: int
    slow_callbacks: int
    longest_stall_ns: int
    busy_histogram: tuple[int, ...]
    interval: bool = False

    @classmethod
    def _from_raw(cls, raw: tuple[int, ...]) -> LoopMetrics:
        n = len(_RAW_FIELDS)
        fields = dict(zip(_RAW_FIELDS, raw[:n], strict=True))
        return cls(**fields, busy_histogram=tuple(raw[n:]))

    @property
    def utilization(self) -> float:
        """Busy time / (busy + idle time), in [0, 1]; 0.0 before the first iteration."""
        total = self.busy_ns + self.idle_ns
        return self.busy_ns / total if total else 0.0

    def busy_percentile(self, q: float) -> int:
        """Upper bound (ns) of the busy time of the q-quantile iteration (0 < q <= 1), from
        the log2 histogram: exact to a factor of two. 0 when no iteration was counted."""
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], not {q!r}")
        total = sum(self.busy_histogram)
        if not total:
            return 0
        rank = q * total
        seen = 0
        for i, count in enumerate(self.busy_histogram):
            seen += count
            if seen >= rank:
                return (1 << i) - 1 if i else 0
        return (1 << (len(self.busy_histogram) - 1)) - 1  # pragma: no cover - rounding

    def __sub__(self, other: Any) -> LoopMetrics:
        if not isinstance(other, LoopMetrics):
            return NotImplemented
        if other.interval or self.interval:
            raise ValueError("subtract two snapshots, not intervals")
        values: dict[str, Any] = {}
        for name in _RAW_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if name in _GAUGES:
                values[name] = a
            elif name == "longest_stall_ns":
                # The longest stall inside the interval: known exactly when it grew, else
                # bounded by the highest histogram bucket the interval filled.
                values[name] = a if a > b else 0
            else:
                values[name] = a - b
        hist = tuple(x - y for x, y in zip(self.busy_histogram, other.busy_histogram, strict=True))
        if values["longest_stall_ns"] == 0:
            top = max((i for i, c in enumerate(hist) if c), default=0)
            values["longest_stall_ns"] = (1 << top) - 1 if top else 0
        return LoopMetrics(**values, busy_histogram=hist, interval=True)

    def as_dict(self) -> dict[str, Any]:
        """Every field plus ``utilization`` and p50/p90/p99 busy-time bounds."""
        d = dataclasses.asdict(self)
        d["utilization"] = self.utilization
        for q in (50, 90, 99):
            d[f"busy_p{q}_ns"] = self.busy_percentile(q / 100)
        return d
