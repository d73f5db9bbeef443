"""Totality: ``step()`` answers every input with a Step or raises InvalidEvent, nothing else.

States are the reachable ones: each example starts from ``BreakerState()`` and feeds the
core a sequence of events (mostly plausible ones, with NaN, infinite, negative and huge
times, durations, draws outside [0, 1], generations from the future and unknown probe ids
mixed in); every single event of the sequence is checked.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from breaker_machines._core import (
    Admitted,
    BreakerState,
    CallRequested,
    ConfigError,
    InvalidEvent,
    Persist,
    Policy,
    Probe,
    Rejected,
    State,
    Step,
    Tick,
    Transitioned,
    WakeAt,
    Window,
    inert_success,
    step,
)
from core_strategies import EVENT_SPECS, policies, realize

EFFECT_TYPES = (Admitted, Rejected, Transitioned, Persist, WakeAt)


def _check_result(result: object) -> Step:
    assert type(result) is Step
    assert isinstance(result, Step)
    assert type(result.state) is BreakerState
    assert type(result.state.status) is State
    assert type(result.state.failure_window) is Window
    assert type(result.state.rate_window) is Window
    assert all(type(p) is Probe for p in result.state.probes)
    assert type(result.effects) is tuple
    for effect in result.effects:
        assert type(effect) in EFFECT_TYPES, effect
    return result


@given(policy=policies(wide=True), data=st.data())
def test_step_is_total_on_reachable_states(policy: Policy, data: st.DataObject) -> None:
    state = BreakerState()
    clock = 0.0
    steps = data.draw(st.integers(min_value=1, max_value=40), label="steps")
    for _ in range(steps):
        event = realize(data.draw(EVENT_SPECS, label="event"), state, clock, policy)
        note(f"event: {event!r}")
        try:
            result = step(policy, state, event)
        except InvalidEvent:
            continue
        _check_result(result)
        # inert_success must be callable (and boolean) on every reachable state.
        assert isinstance(inert_success(policy, result.state), bool)
        state = result.state
        now = event.now
        if isinstance(now, float) and math.isfinite(now) and abs(now) < 1e12:
            clock = max(clock, now)
    note(f"final state: {state!r}")


# Inputs that are not events at all, or whose time is not a number.
_NOT_EVENTS: list[Any] = [
    Admitted(0, None),
    Rejected(1.0),
    (0.0,),
    None,
    Tick("soon"),  # type: ignore[arg-type]
    CallRequested(None),  # type: ignore[arg-type]
    CallRequested(1 + 2j),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("event", _NOT_EVENTS, ids=repr)
@settings(max_examples=20)  # the event is refused before the policy is read
@given(policy=policies(wide=True))
def test_step_rejects_non_events_with_invalid_event(policy: Policy, event: Any) -> None:
    with pytest.raises(InvalidEvent):
        step(policy, BreakerState(), event)


@given(
    policy=policies(wide=True),
    status=st.sampled_from(State),
    version=st.integers(min_value=0, max_value=5),
    event=st.one_of(
        st.builds(Tick, st.floats()),
        st.builds(CallRequested, st.floats()),
    ),
)
def test_step_is_total_on_malformed_states(
    policy: Policy, status: State, version: int, event: Tick | CallRequested
) -> None:
    """A state record whose fields contradict each other (OPEN without retry_at)."""
    state = BreakerState(status=status, version=version)
    try:
        result = step(policy, state, event)
    except InvalidEvent:
        return
    _check_result(result)


# --------------------------------------------------------------------------- policies

_NOT_COUNTS: list[Any] = [0, -1, -(10**30), True, False, 1.5, 2.0, "3", None, math.nan]
_NOT_DURATIONS: list[Any] = [0, 0.0, -0.0, -1.0, -1e-300, math.nan, math.inf, -math.inf, True]
_NOT_DURATIONS += ["1", None, 1j]
_NOT_RATES: list[Any] = [0, 0.0, -0.1, 1.0000001, 2, math.nan, math.inf, True, "0.5", None]

_RATE = {"failure_rate": 0.5}


def _cases() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """``(field, kwargs)`` pairs where ``Policy(**kwargs)`` must blame ``field``."""

    def bad(field: str, values: list[Any], **base: Any) -> st.SearchStrategy[Any]:
        return st.sampled_from(values).map(lambda v: (field, {**base, field: v}))

    return st.one_of(
        bad("consecutive_failures", [v for v in _NOT_COUNTS if v is not None]),
        bad("failures", [v for v in _NOT_COUNTS if v is not None], within=1.0),
        bad("within", [v for v in _NOT_DURATIONS if v is not None], failures=3),
        st.just(("within", {"failures": 3})),
        st.just(("failures", {"within": 1.0})),
        st.just(("within", {"failures": 3, "within": 5e-324})),  # buckets of 0 seconds
        bad("failure_rate", [v for v in _NOT_RATES if v is not None]),
        bad("slow_call_rate", [v for v in _NOT_RATES if v is not None], slow_call_duration=1.0),
        bad("slow_call_duration", [v for v in _NOT_DURATIONS if v is not None], slow_call_rate=1),
        st.just(("slow_call_duration", {"slow_call_rate": 0.5})),
        st.just(("slow_call_rate", {"slow_call_duration": 1.0})),
        bad("minimum_calls", _NOT_COUNTS, **_RATE),
        bad("window", [v for v in _NOT_DURATIONS if v is not None], **_RATE),
        bad("window", [1.0, 10]),  # no rate rule to feed
        st.just(("window", {**_RATE, "window": 5e-324})),  # buckets of 0 seconds
        bad("window_calls", [v for v in _NOT_COUNTS if v is not None], **_RATE),
        bad("window_calls", [10, 100]),  # no rate rule to feed
        st.just(("window_calls", {**_RATE, "window": 10.0, "window_calls": 100})),
        bad("buckets", [v for v in _NOT_COUNTS if v is not None]),
        bad("buckets", [1001, 10**6], **_RATE),
        bad("buckets", [3, 7, 11, 101], **_RATE, window_calls=100),  # must divide it
        bad("reset_after", _NOT_DURATIONS),
        bad("backoff", [0.5, 0.0, -2.0, math.nan, math.inf, True, "2", None]),
        st.just(("max_reset_after", {"backoff": 2.0})),
        bad("max_reset_after", [v for v in _NOT_DURATIONS if v is not None], backoff=2.0),
        bad("max_reset_after", [29.999, 1.0], reset_after=30.0),
        bad("jitter", [-0.1, 1.0, 1.5, math.nan, math.inf, True, "0.1", None]),
        bad("half_open_probes", _NOT_COUNTS),
        bad("success_threshold", _NOT_COUNTS),
        bad("probe_lease", _NOT_DURATIONS),
    )


@given(case=_cases())
def test_invalid_policy_names_the_field(case: tuple[str, dict[str, Any]]) -> None:
    field, kwargs = case
    with pytest.raises(ConfigError) as caught:
        Policy(**kwargs)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}=")
    assert caught.value.value is kwargs.get(field)


@given(policy=policies(wide=True), trips=st.integers(min_value=0), draw=st.floats(0.0, 1.0))
def test_open_duration_is_positive_and_bounded(policy: Policy, trips: int, draw: float) -> None:
    duration = policy.open_duration(trips, draw)
    ceiling = policy.max_reset_after if policy.max_reset_after is not None else policy.reset_after
    assert 0.0 < duration <= ceiling * (1.0 + policy.jitter)
    assert duration >= policy.reset_after * (1.0 - policy.jitter) * (1 - 1e-12)
