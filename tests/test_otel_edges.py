"""OpenTelemetry instrumentation: registries added twice or removed, a breaker reported both
directly and through its registry, and a registry making a breaker while the handle
closes. Read back through the SDK's ``InMemoryMetricReader``; time is the fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.helpers import collect

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from breaker_machines import Breaker, BreakerRegistry, ConfigError
from breaker_machines.otel import Instrumentation, instrument


def successes(reader: InMemoryMetricReader) -> dict[str, int]:
    """breaker.calls with outcome success, by breaker name."""
    found: dict[str, int] = {}
    for (metric, attributes), value in collect(reader).items():
        labels = dict(attributes)
        if metric == "breaker.calls" and labels["breaker.outcome"] == "success":
            assert isinstance(value, int)  # a counter's point, not a histogram's
            found[str(labels["breaker.name"])] = value
    return found


@pytest.mark.anyio
async def test_a_registry_added_twice_is_reported_once(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    registry = BreakerRegistry("api.", clock=clock)
    early = registry.get("a")
    handle = instrument(registry, meter_provider=provider)
    handle.add(registry)  # already there: nothing more
    handle.add(early)  # reported through the registry already: one observer
    assert len(registry._creation_observers) == 1
    assert len(early._observers) == 1
    late = registry.get("b")
    assert len(late._observers) == 1
    async with early.guard():
        clock.advance(0.25)
    async with late.guard():
        clock.advance(0.25)
    assert successes(reader) == {"api.a": 1, "api.b": 1}
    handle.close()
    assert early._observers == ()
    assert late._observers == ()


def test_removing_a_registry(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: Any
) -> None:
    registry = BreakerRegistry("api.", clock=clock)
    other = BreakerRegistry("other.", clock=clock)
    made = registry.get("a")
    handle = instrument(registry, meter_provider=provider)
    with pytest.raises(ConfigError) as caught:
        handle.remove(other)
    assert caught.value.field == "targets"
    assert "is not instrumented here" in str(caught.value)
    assert len(made._observers) == 1  # a refused remove() changes nothing

    handle.remove(registry)
    assert registry._creation_observers == ()
    assert made._observers == ()
    assert registry.get("b")._observers == ()  # made after: not observed
    assert successes(reader) == {}
    with pytest.raises(ConfigError):
        handle.remove(registry)  # once removed, no longer instrumented
    handle.add(registry)  # and may be added again
    assert len(made._observers) == 1
    assert len(registry._creation_observers) == 1
    handle.close()


def test_a_breaker_made_while_the_handle_closes_is_not_observed(
    provider: MeterProvider, clock: Any
) -> None:
    registry = BreakerRegistry("api.", clock=clock)
    handles: list[Instrumentation] = []

    def close_first(breaker: Breaker) -> None:
        handles[0].close()  # runs before the instrumentation's own creation observer

    registry.add_creation_observer(close_first)
    handles.append(instrument(registry, meter_provider=provider))
    made = registry.get("a")  # the registry calls both observers it held when it began
    assert handles[0].closed
    assert made._observers == ()
    assert registry._creation_observers == (close_first,)
