"""OpenTelemetry metrics: ``breaker_machines.otel.instrument``, read back through the SDK's
``InMemoryMetricReader``: call counts, rejections, the state gauge and call durations, for
the anyio runtime (asyncio and trio), the threaded runtime and a registry; then closing.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from tests.helpers import Key, collect

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
    ThreadedBreaker,
)
from breaker_machines.otel import Instrumentation, instrument


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


def calls(points: dict[Key, Any], name: str) -> dict[str, int]:
    return {
        dict(attributes)["breaker.outcome"]: value
        for (metric, attributes), value in points.items()
        if metric == "breaker.calls" and dict(attributes)["breaker.name"] == name
    }


def rejected(points: dict[Key, Any], name: str) -> dict[str, int]:
    return {
        dict(attributes)["breaker.reason"]: value
        for (metric, attributes), value in points.items()
        if metric == "breaker.rejections" and dict(attributes)["breaker.name"] == name
    }


def state(points: dict[Key, Any], name: str) -> dict[str, int]:
    return {
        dict(attributes)["breaker.state"]: value
        for (metric, attributes), value in points.items()
        if metric == "breaker.state" and dict(attributes)["breaker.name"] == name
    }


def durations(points: dict[Key, Any], name: str) -> dict[str, tuple[int, float]]:
    return {
        dict(attributes)["breaker.outcome"]: value
        for (metric, attributes), value in points.items()
        if metric == "breaker.call.duration" and dict(attributes)["breaker.name"] == name
    }


def counts(
    success: int = 0, failure: int = 0, timeout: int = 0, ignored: int = 0, cancelled: int = 0
) -> dict[str, int]:
    return {
        "success": success,
        "failure": failure,
        "timeout": timeout,
        "ignored": ignored,
        "cancelled": cancelled,
    }


def states(current: str) -> dict[str, int]:
    names = ("closed", "open", "half_open", "forced_open", "disabled")
    return {name: int(name == current) for name in names}


def test_metric_names_units_and_kinds(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    breaker = ThreadedBreaker("svc")
    instrument(breaker, meter_provider=provider)
    with breaker.guard():
        pass
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        metric.name: (metric.unit, type(metric.data).__name__)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert metrics == {
        "breaker.calls": ("{call}", "Sum"),
        "breaker.rejections": ("{call}", "Sum"),
        "breaker.state": ("1", "Gauge"),
        "breaker.call.duration": ("s", "Histogram"),
    }
    (histogram,) = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
    ]
    assert histogram.explicit_bounds[:3] == (0.005, 0.01, 0.025)


@pytest.mark.anyio
async def test_anyio_breaker(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    breaker = Breaker("svc", consecutive_failures=2, reset_after=10, clock=clock)
    handle = instrument(breaker, meter_provider=provider)
    assert isinstance(handle, Instrumentation)

    points = collect(reader)
    assert calls(points, "svc") == counts()
    assert rejected(points, "svc") == {"open": 0, "bulkhead": 0}
    assert state(points, "svc") == states("closed")

    for seconds in (0.25, 0.5):
        async with breaker.guard():
            clock.advance(seconds)
    points = collect(reader)
    assert calls(points, "svc") == counts(success=2)
    assert durations(points, "svc") == {"success": (2, 0.75)}

    for _ in range(2):
        with pytest.raises(Boom):
            async with breaker.guard():
                clock.advance(1.0)
                raise Boom
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await breaker.call(fail)
    points = collect(reader)
    assert calls(points, "svc") == counts(success=2, failure=2)
    assert rejected(points, "svc") == {"open": 3, "bulkhead": 0}
    assert state(points, "svc") == states("open")
    assert durations(points, "svc") == {"success": (2, 0.75), "failure": (2, 2.0)}

    clock.advance(10)
    async with breaker.guard():
        clock.advance(0.125)
    points = collect(reader)
    assert state(points, "svc") == states("closed")
    assert durations(points, "svc")["success"] == (3, 0.875)

    breaker.force_open()
    assert state(collect(reader), "svc") == states("forced_open")


@pytest.mark.anyio
async def test_timeouts_cancellations_and_the_bulkhead(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    breaker = Breaker("svc", timeout=0.01, max_concurrent=1, consecutive_failures=100)
    instrument(breaker, meter_provider=provider)
    with pytest.raises(CircuitTimeoutError):
        async with breaker.guard():
            await anyio.sleep(5)
    with anyio.CancelScope() as scope:
        async with breaker.guard():
            scope.cancel()
            await anyio.sleep(5)
    async with breaker.guard():
        with pytest.raises(BulkheadFullError):
            async with breaker.guard():
                pytest.fail("admitted")
    points = collect(reader)
    assert calls(points, "svc") == counts(success=1, timeout=1, cancelled=1)
    assert rejected(points, "svc") == {"open": 0, "bulkhead": 1}
    timed = durations(points, "svc")
    assert set(timed) == {"success", "timeout", "cancelled"}
    assert timed["timeout"][0] == 1
    assert 0.005 <= timed["timeout"][1] < 5


def test_threaded_breaker(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    breaker = ThreadedBreaker("svc", consecutive_failures=1, max_concurrent=1, clock=clock)
    instrument(breaker, meter_provider=provider)
    with breaker.guard():
        clock.advance(0.5)
        with pytest.raises(BulkheadFullError), breaker.guard():
            pytest.fail("admitted")
    with pytest.raises(Boom), breaker.guard():
        clock.advance(2.0)
        raise Boom
    with pytest.raises(CircuitOpenError), breaker.guard():
        pytest.fail("admitted")
    points = collect(reader)
    assert calls(points, "svc") == counts(success=1, failure=1)
    assert rejected(points, "svc") == {"open": 1, "bulkhead": 1}
    assert state(points, "svc") == states("open")
    assert durations(points, "svc") == {"success": (1, 0.5), "failure": (1, 2.0)}


@pytest.mark.anyio
async def test_a_registry_and_the_breakers_it_makes_later(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    registry = BreakerRegistry("api.", clock=clock, consecutive_failures=1)
    early = registry.get("a")
    handle = instrument(registry, meter_provider=provider)
    late = registry.get("b")
    async with early.guard():
        clock.advance(1.0)
    with pytest.raises(Boom):
        async with late.guard():
            clock.advance(2.0)
            raise Boom
    points = collect(reader)
    assert calls(points, "api.a") == counts(success=1)
    assert calls(points, "api.b") == counts(failure=1)
    assert state(points, "api.b") == states("open")
    assert durations(points, "api.a") == {"success": (1, 1.0)}
    assert durations(points, "api.b") == {"failure": (1, 2.0)}

    handle.close()
    assert handle.closed
    assert early._observers == ()
    assert late._observers == ()
    assert registry._creation_observers == ()
    registry.get("c")
    points = collect(reader)
    assert not [key for key in points if key[0] != "breaker.call.duration"]


@pytest.mark.anyio
async def test_close_stops_reporting(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    breaker = Breaker("svc", clock=clock)
    with instrument(breaker, meter_provider=provider) as handle:
        assert not breaker._plain  # the duration observer takes it off the plain path
        async with breaker.guard():
            clock.advance(1.0)
    assert handle.closed
    assert breaker._plain
    assert breaker._observers == ()
    async with breaker.guard():
        clock.advance(1.0)
    points = collect(reader)
    # Observable instruments report nothing; the histogram keeps what it recorded.
    assert calls(points, "svc") == {}
    assert state(points, "svc") == {}
    assert durations(points, "svc") == {"success": (1, 1.0)}
    handle.close()  # idempotent
    with pytest.raises(ConfigError):
        handle.add(breaker)


def test_add_remove_and_sharing_one_meter(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    first = ThreadedBreaker("first", clock=clock)
    second = ThreadedBreaker("second", clock=clock)
    one = instrument(first, meter_provider=provider)
    two = instrument(first, second, meter_provider=provider)  # first is reported once
    assert len(first._observers) == 1
    with first.guard():
        clock.advance(1.0)
    with second.guard():
        clock.advance(1.0)
    points = collect(reader)
    assert calls(points, "first")["success"] == 1
    assert calls(points, "second")["success"] == 1
    assert durations(points, "first") == {"success": (1, 1.0)}

    two.remove(second)
    assert second._observers == ()
    assert "success" not in calls(collect(reader), "second")
    with pytest.raises(ConfigError):
        two.remove(second)
    two.close()
    assert len(first._observers) == 1  # still instrumented by the first handle
    assert calls(collect(reader), "first")["success"] == 1
    one.close()
    assert first._observers == ()
    one.close()


def test_bad_arguments(provider: MeterProvider) -> None:
    with pytest.raises(ConfigError) as caught:
        instrument("svc", meter_provider=provider)  # type: ignore[arg-type]
    assert caught.value.field == "targets"
    with pytest.raises(ConfigError) as caught:
        instrument(ThreadedBreaker("svc"), meter_provider="sdk")  # type: ignore[arg-type]
    assert caught.value.field == "meter_provider"


def test_the_global_meter_provider_by_default() -> None:
    breaker = ThreadedBreaker("svc")
    handle = instrument(breaker)  # a no-op (or proxy) provider unless the app set one
    with breaker.guard():
        pass
    handle.close()
    assert breaker._observers == ()
