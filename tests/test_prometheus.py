"""The Prometheus text exposition of ``breaker_machines.prometheus.render``: exact output,
label escaping, registries, and arguments."""

from __future__ import annotations

from typing import Any

import pytest

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    ThreadedBreaker,
)
from breaker_machines.prometheus import CONTENT_TYPE, render


class Boom(Exception):
    pass


def test_exact_output(clock: Any) -> None:
    ok = ThreadedBreaker("ok", clock=clock)
    tripped = ThreadedBreaker("tripped", consecutive_failures=1, max_concurrent=1, clock=clock)
    with ok.guard():
        pass
    with ok.guard():
        pass
    with tripped.guard(), pytest.raises(BulkheadFullError), tripped.guard():
        pass
    with pytest.raises(Boom), tripped.guard():
        raise Boom
    with pytest.raises(CircuitOpenError), tripped.guard():
        pass
    assert render(ok, tripped) == (
        "# HELP breaker_calls_total Calls guarded by the circuit breaker, by outcome.\n"
        "# TYPE breaker_calls_total counter\n"
        'breaker_calls_total{breaker="ok",outcome="success"} 2\n'
        'breaker_calls_total{breaker="ok",outcome="failure"} 0\n'
        'breaker_calls_total{breaker="ok",outcome="timeout"} 0\n'
        'breaker_calls_total{breaker="ok",outcome="ignored"} 0\n'
        'breaker_calls_total{breaker="ok",outcome="cancelled"} 0\n'
        'breaker_calls_total{breaker="tripped",outcome="success"} 1\n'
        'breaker_calls_total{breaker="tripped",outcome="failure"} 1\n'
        'breaker_calls_total{breaker="tripped",outcome="timeout"} 0\n'
        'breaker_calls_total{breaker="tripped",outcome="ignored"} 0\n'
        'breaker_calls_total{breaker="tripped",outcome="cancelled"} 0\n'
        "# HELP breaker_rejections_total Calls refused without running them, by reason.\n"
        "# TYPE breaker_rejections_total counter\n"
        'breaker_rejections_total{breaker="ok",reason="open"} 0\n'
        'breaker_rejections_total{breaker="ok",reason="bulkhead"} 0\n'
        'breaker_rejections_total{breaker="tripped",reason="open"} 1\n'
        'breaker_rejections_total{breaker="tripped",reason="bulkhead"} 1\n'
        "# HELP breaker_state The circuit's state: 1 for the current state, 0 for the others.\n"
        "# TYPE breaker_state gauge\n"
        'breaker_state{breaker="ok",state="closed"} 1\n'
        'breaker_state{breaker="ok",state="open"} 0\n'
        'breaker_state{breaker="ok",state="half_open"} 0\n'
        'breaker_state{breaker="ok",state="forced_open"} 0\n'
        'breaker_state{breaker="ok",state="disabled"} 0\n'
        'breaker_state{breaker="tripped",state="closed"} 0\n'
        'breaker_state{breaker="tripped",state="open"} 1\n'
        'breaker_state{breaker="tripped",state="half_open"} 0\n'
        'breaker_state{breaker="tripped",state="forced_open"} 0\n'
        'breaker_state{breaker="tripped",state="disabled"} 0\n'
    )
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_no_breakers() -> None:
    assert render() == (
        "# HELP breaker_calls_total Calls guarded by the circuit breaker, by outcome.\n"
        "# TYPE breaker_calls_total counter\n"
        "# HELP breaker_rejections_total Calls refused without running them, by reason.\n"
        "# TYPE breaker_rejections_total counter\n"
        "# HELP breaker_state The circuit's state: 1 for the current state, 0 for the others.\n"
        "# TYPE breaker_state gauge\n"
    )


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ('say "hi"', 'say \\"hi\\"'),
        ("C:\\path", "C:\\\\path"),
        ("two\nlines", "two\\nlines"),
        ('\\"\n', '\\\\\\"\\n'),
        ("café ☕", "café ☕"),
    ],
)
def test_label_values_are_escaped(name: str, label: str) -> None:
    breaker = Breaker(name)
    breaker.force_open()
    lines = render(breaker).splitlines()
    assert f'breaker_state{{breaker="{label}",state="forced_open"}} 1' in lines
    assert f'breaker_calls_total{{breaker="{label}",outcome="success"}} 0' in lines
    assert len(lines) == 6 + 5 + 2 + 5  # a line feed in a name never splits a line


def test_a_registry_and_duplicates(clock: Any) -> None:
    registry = BreakerRegistry("api.", clock=clock)
    first = registry.get("a")
    registry.get("b")
    text = render(registry, first, registry)
    assert text.count('breaker_state{breaker="api.a",state="closed"} 1') == 1
    assert text.count('breaker_state{breaker="api.b",state="closed"} 1') == 1
    assert text.index('breaker="api.a"') < text.index('breaker="api.b"')


def test_bad_targets() -> None:
    with pytest.raises(ConfigError) as caught:
        render("svc")  # type: ignore[arg-type]
    assert caught.value.field == "targets"
