"""Breaker metrics in the Prometheus text exposition format (0.0.4), with no dependency.

``render(breaker, registry, ...)`` returns the text a ``/metrics`` endpoint serves (with
:data:`CONTENT_TYPE`)::

    # HELP breaker_calls_total Calls guarded by the circuit breaker, by outcome.
    # TYPE breaker_calls_total counter
    breaker_calls_total{breaker="payments",outcome="success"} 42
    ...
    # HELP breaker_rejections_total Calls refused without running them, by reason.
    # TYPE breaker_rejections_total counter
    breaker_rejections_total{breaker="payments",reason="open"} 3
    breaker_rejections_total{breaker="payments",reason="bulkhead"} 0
    # HELP breaker_state The circuit's state: 1 for the current state, 0 for the others.
    # TYPE breaker_state gauge
    breaker_state{breaker="payments",state="closed"} 1
    ...

The figures are the totals of ``breaker.stats()``; reading them never changes a breaker and
is safe from any thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ._base import BreakerBase
from ._core.errors import ConfigError
from ._core.status import State
from .registry import BreakerRegistry

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of what :func:`render` returns."""


def _label(value: str) -> str:
    """A label value, escaped: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _breakers(targets: tuple[object, ...]) -> Iterator[BreakerBase]:
    seen: set[int] = set()
    for target in targets:
        if isinstance(target, BreakerRegistry):
            found: list[BreakerBase] = list(target.breakers())
        elif isinstance(target, BreakerBase):
            found = [target]
        else:
            raise ConfigError(
                "targets", target, "must be a Breaker, a ThreadedBreaker or a BreakerRegistry"
            )
        for breaker in found:
            if id(breaker) not in seen:
                seen.add(id(breaker))
                yield breaker


def render(*targets: BreakerBase | BreakerRegistry) -> str:
    """The metrics of ``targets`` (breakers, and every breaker a registry holds).

    Each breaker is listed once, in the order given; the text ends with a line feed.
    """
    breakers = list(_breakers(targets))
    calls: list[str] = []
    rejections: list[str] = []
    states: list[str] = []
    for breaker in breakers:
        name = _label(breaker.name)
        for outcome, count in breaker._outcome_counts():
            calls.append(
                f'breaker_calls_total{{breaker="{name}",outcome="{outcome.value}"}} {count}'
            )
        rejections.append(
            f'breaker_rejections_total{{breaker="{name}",reason="open"}} {breaker._rejections}'
        )
        rejections.append(
            f'breaker_rejections_total{{breaker="{name}",reason="bulkhead"}} '
            f"{breaker._bulkhead_rejections}"
        )
        current = breaker.state
        for state in State:
            value = 1 if state is current else 0
            states.append(f'breaker_state{{breaker="{name}",state="{state.value}"}} {value}')
    lines = [
        "# HELP breaker_calls_total Calls guarded by the circuit breaker, by outcome.",
        "# TYPE breaker_calls_total counter",
        *calls,
        "# HELP breaker_rejections_total Calls refused without running them, by reason.",
        "# TYPE breaker_rejections_total counter",
        *rejections,
        "# HELP breaker_state The circuit's state: 1 for the current state, 0 for the others.",
        "# TYPE breaker_state gauge",
        *states,
    ]
    return "\n".join(lines) + "\n"
