"""oxloop.prometheus and oxloop.otel: loop metrics through prometheus_client and OpenTelemetry.

Prometheus output is read back by scraping a real ``CollectorRegistry`` (``generate_latest``)
and parsing the text with prometheus_client's own parser; OpenTelemetry output through the
SDK's ``InMemoryMetricReader``. The loop is stopped while it is read (its published counters
are then stable), so every exported value must equal what ``loop.metrics()`` says. Only oxloop
loops have metrics: on a stock loop both exporters refuse the loop.
"""

from __future__ import annotations

import asyncio
import sys

import oxloop
import pytest

prometheus_client = pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from oxloop import otel  # noqa: E402
from oxloop import prometheus as oxprom  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = pytest.mark.skipif(
    not hasattr(oxloop.Loop, "metrics"), reason="loop.metrics() is not built in"
)


async def some_work(n: int = 50) -> None:
    """Callbacks, timers (fired and cancelled) and a few iterations."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == n:
            done.set_result(None)

    for _ in range(n):
        loop.call_soon(tick)
    await done
    loop.call_later(100, tick).cancel()
    await asyncio.sleep(0.001)
    for _ in range(3):
        await asyncio.sleep(0)


def scrape(registry) -> dict[str, dict]:
    """{family name: {(sample name, labels as sorted tuple): value}}."""
    text = prometheus_client.generate_latest(registry).decode()
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
    return out


# -- Prometheus ---------------------------------------------------------------------------


def test_prometheus_scrape_matches_metrics(loop, loop_kind):
    registry = prometheus_client.CollectorRegistry()
    if loop_kind == "asyncio":
        with pytest.raises(TypeError, match="has no metrics"):
            oxprom.register(loop, name="main", registry=registry)
        assert scrape(registry) == {}
        return
    oxprom.register(loop, name="main", registry=registry)
    loop.run_until_complete(some_work())
    m = loop.metrics()
    data = scrape(registry)
    label = (("loop", "main"),)
    for field in (
        "iterations",
        "callbacks",
        "io_events",
        "timers_scheduled",
        "timers_fired",
        "timers_cancelled",
        "slow_iterations",
        "slow_callbacks",
    ):
        assert data[f"oxloop_{field}"] == {(f"oxloop_{field}_total", label): getattr(m, field)}
    assert m.callbacks >= 50 and m.timers_cancelled >= 1 and m.timers_fired >= 1
    assert data["oxloop_busy_seconds"][("oxloop_busy_seconds_total", label)] == m.busy_ns / 1e9
    assert data["oxloop_idle_seconds"][("oxloop_idle_seconds_total", label)] == m.idle_ns / 1e9
    for field in ("ready_at_poll", "timers_at_poll", "fds"):
        assert data[f"oxloop_{field}"] == {(f"oxloop_{field}", label): getattr(m, field)}
    assert data["oxloop_longest_stall_seconds"] == {
        ("oxloop_longest_stall_seconds", label): m.longest_stall_ns / 1e9
    }
    assert data["oxloop_tasks"] == {("oxloop_tasks", label): 0}

    hist = data["oxloop_iteration_busy_seconds"]
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in hist.items()
        if name.endswith("_bucket")
    )
    assert len(buckets) == len(m.busy_histogram) + 1  # and +Inf
    assert buckets[-1] == (float("inf"), sum(m.busy_histogram))
    cumulative = 0
    for i, count in enumerate(m.busy_histogram):
        cumulative += count
        assert buckets[i] == (((1 << i) - 1) / 1e9, cumulative)
    # The core's first poll has no busy span before it: the histogram counts one less.
    assert hist[("oxloop_iteration_busy_seconds_count", label)] == sum(m.busy_histogram)
    assert sum(m.busy_histogram) in (m.iterations, m.iterations - 1)
    assert hist[("oxloop_iteration_busy_seconds_sum", label)] == m.busy_ns / 1e9


def test_prometheus_scrape_from_another_thread_while_running(loop, loop_kind):
    if loop_kind == "asyncio":
        pytest.skip("stock loops have no metrics (refusal tested above)")
    registry = prometheus_client.CollectorRegistry()

    async def main():
        oxprom.register(registry=registry)  # the running loop, named after its thread
        task = asyncio.ensure_future(asyncio.sleep(100))
        await some_work()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, scrape, registry)
        finally:
            task.cancel()

    data = loop.run_until_complete(main())
    label = (("loop", "MainThread"),)
    assert data["oxloop_callbacks"][("oxloop_callbacks_total", label)] >= 50
    assert data["oxloop_tasks"][("oxloop_tasks", label)] == 2  # main and the sleep


def test_prometheus_loops_are_labelled_and_leave_when_closed(loop_factory, loop_kind):
    if loop_kind == "asyncio":
        pytest.skip("stock loops have no metrics (refusal tested above)")
    registry = prometheus_client.CollectorRegistry()
    a, b = loop_factory(), loop_factory()
    try:
        collector = oxprom.register(a, name="a", registry=registry)
        assert oxprom.register(b, name="b", registry=registry) is collector
        oxprom.register(b, name="b", registry=registry)  # again: harmless
        with pytest.raises(ValueError, match="'a' is already registered"):
            oxprom.register(b, name="a", registry=registry)
        a.run_until_complete(some_work(10))
        b.run_until_complete(some_work(20))
        callbacks = scrape(registry)["oxloop_callbacks"]
        assert callbacks == {
            ("oxloop_callbacks_total", (("loop", "a"),)): a.metrics().callbacks,
            ("oxloop_callbacks_total", (("loop", "b"),)): b.metrics().callbacks,
        }
        a.close()
        oxprom.unregister(b, registry=registry)
        assert scrape(registry)["oxloop_callbacks"] == {}
    finally:
        a.close()
        b.close()


def test_prometheus_missing_dependency_message(monkeypatch, loop):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    with pytest.raises(ImportError, match=r"pip install 'oxloop\[prometheus\]'"):
        oxprom.register(loop, registry=object())


# -- OpenTelemetry --------------------------------------------------------------------------

PREFIX = "python.asyncio.eventloop"


def collect(reader) -> dict[str, tuple[str, list[tuple[float, dict]]]]:
    """{instrument name: (unit, [(value, attributes)])} of oxloop's meter."""
    out: dict = {}
    data = reader.get_metrics_data()
    if data is None:  # nothing observed at all
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert (sm.scope.name, sm.scope.version) == ("oxloop", oxloop.__version__)
            for metric in sm.metrics:
                points = [(p.value, dict(p.attributes)) for p in metric.data.data_points]
                out[metric.name] = (metric.unit, points)
    return out


def test_otel_instruments_match_metrics(loop, loop_kind):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        if loop_kind == "asyncio":
            with pytest.raises(TypeError, match="has no metrics"):
                otel.instrument(loop, name="main", meter_provider=provider)
            return
        otel.instrument(loop, name="main", meter_provider=provider)
        loop.run_until_complete(some_work())
        m1 = loop.metrics()
        first = collect(reader)
        loop.run_until_complete(some_work(200))
        m2 = loop.metrics()
        second = collect(reader)
    finally:
        provider.shutdown()

    name = {f"{PREFIX}.name": "main"}
    assert set(first) == {
        f"{PREFIX}.utilization",
        f"{PREFIX}.time",
        f"{PREFIX}.delay.p50",
        f"{PREFIX}.delay.p90",
        f"{PREFIX}.delay.p99",
        f"{PREFIX}.delay.mean",
        f"{PREFIX}.delay.max",
    }
    # The counter is cumulative; the gauges cover the interval since the previous collection.
    for data, m, interval in ((first, m1, m1), (second, m2, m2 - m1)):
        assert data[f"{PREFIX}.time"] == (
            "s",
            [
                (m.busy_ns / 1e9, {**name, f"{PREFIX}.state": "active"}),
                (m.idle_ns / 1e9, {**name, f"{PREFIX}.state": "idle"}),
            ],
        )
        assert data[f"{PREFIX}.utilization"] == ("1", [(interval.utilization, name)])
        for q in (50, 90, 99):
            expected = interval.busy_percentile(q / 100) / 1e9
            assert data[f"{PREFIX}.delay.p{q}"] == ("s", [(expected, name)])
        mean = interval.busy_ns / interval.iterations / 1e9
        assert data[f"{PREFIX}.delay.mean"] == ("s", [(mean, name)])
        assert data[f"{PREFIX}.delay.max"] == ("s", [(interval.longest_stall_ns / 1e9, name)])
    assert 0.0 < second[f"{PREFIX}.utilization"][1][0][0] <= 1.0


def test_otel_closed_loop_stops_reporting(loop_factory, loop_kind):
    if loop_kind == "asyncio":
        pytest.skip("stock loops have no metrics (refusal tested above)")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    a, b = loop_factory(), loop_factory()
    try:
        otel.instrument(a, name="a", meter_provider=provider)
        otel.instrument(b, name="b", meter_provider=provider)
        with pytest.raises(ValueError, match="'b' is already instrumented"):
            otel.instrument(a, name="b", meter_provider=provider)
        a.run_until_complete(some_work(5))
        b.run_until_complete(some_work(5))
        names = {p[1][f"{PREFIX}.name"] for p in collect(reader)[f"{PREFIX}.time"][1]}
        assert names == {"a", "b"}
        a.close()
        otel.uninstrument(b, meter_provider=provider)
        assert f"{PREFIX}.time" not in collect(reader)
    finally:
        a.close()
        b.close()
        provider.shutdown()


def test_otel_missing_dependency_message(monkeypatch, loop):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'oxloop\[otel\]'"):
        otel.instrument(loop)
