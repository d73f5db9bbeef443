"""Type tests: call observers, the OpenTelemetry and Prometheus helpers.

Checked by ``mypy --strict`` and ``pyright`` (strict) in the ``typecheck`` session. Lines
marked with an ignore comment must be errors (an ignore comment that suppresses nothing is
reported by both checkers).
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from typing_extensions import assert_type

from breaker_machines import Breaker, BreakerRegistry, CallObserver, Outcome, ThreadedBreaker
from breaker_machines.otel import Instrumentation, instrument
from breaker_machines.prometheus import render

breaker = Breaker("typing")
threaded = ThreadedBreaker("typing-threads")
registry = BreakerRegistry("typing:")


def seen(outcome: Outcome, duration: float) -> None:
    print(outcome.value, duration)


def wrong(outcome: str) -> None:
    print(outcome)


observer: CallObserver = seen
breaker.add_call_observer(seen)
threaded.add_call_observer(seen)
breaker.remove_call_observer(seen)
breaker.add_call_observer(wrong)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

handle = instrument(breaker, threaded, registry, meter_provider=MeterProvider())
assert_type(handle, Instrumentation)
with handle:
    pass
assert_type(render(breaker, registry), str)
render("not a breaker")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
