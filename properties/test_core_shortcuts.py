"""The core's hot-path shortcuts agree with ``step()`` exactly.

The runtimes call these instead of building an event when they only need the answer, so
each one is held here to the case of ``step()`` it stands for, over random policies and
reachable states.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from breaker_machines._core import (
    BreakerState,
    CallFinished,
    CallRequested,
    Outcome,
    Policy,
    Rejected,
    State,
    step,
)
from breaker_machines._core.shortcuts import (
    add_failures,
    failures_until_trip,
    inert_success,
    rejection_delay,
)
from core_strategies import policies, walk


def _states(policy: Policy, data: st.DataObject) -> list[tuple[BreakerState, float]]:
    return list(walk(policy, data))


@given(policies(), st.data(), st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_rejection_delay_is_exactly_a_pure_rejection(
    policy: Policy, data: st.DataObject, offset: float
) -> None:
    for state, clock in _states(policy, data):
        now = clock + data.draw(st.sampled_from([0.0, offset, -offset]), label="shift")
        delay = rejection_delay(state, now)
        result = step(policy, state, CallRequested(now))
        if delay is None:
            # "Ask step()": for OPEN and FORCED_OPEN that must mean step() does more than
            # reject (it half-opens); other states are never answered by the shortcut.
            if state.status in (State.OPEN, State.FORCED_OPEN):
                assert result.state != state
        else:
            assert result.state == state
            (effect,) = result.effects
            assert isinstance(effect, Rejected)
            expected = math.inf if effect.retry_after is None else effect.retry_after
            assert delay == expected


@given(policies(), st.data())
def test_inert_success_changes_nothing(policy: Policy, data: st.DataObject) -> None:
    for state, clock in _states(policy, data):
        if not inert_success(policy, state):
            continue
        fast = 0.0 if policy.slow_call_duration is None else policy.slow_call_duration / 2
        result = step(policy, state, CallFinished(Outcome.SUCCESS, clock, fast, state.version))
        assert result.state == state
        assert result.effects == ()


@given(policies(), st.data(), st.integers(min_value=1, max_value=50))
def test_added_failures_equal_stepped_failures(
    policy: Policy, data: st.DataObject, wanted: int
) -> None:
    for state, clock in _states(policy, data):
        room = failures_until_trip(policy, state)
        if room <= 1:
            continue
        count = min(wanted, room - 1)
        stepped = state
        for _ in range(count):
            result = step(
                policy, stepped, CallFinished(Outcome.FAILURE, clock, 0.0, stepped.version)
            )
            assert result.effects == ()
            stepped = result.state
        assert add_failures(state, count) == stepped
        # ... and the failure after room - 1 of them is the one that trips.
        tripping = step(policy, stepped, CallFinished(Outcome.FAILURE, clock, 0.0, state.version))
        assert (tripping.state.status is State.OPEN) == (count == room - 1)


def test_failures_until_trip_is_zero_whenever_a_window_is_involved() -> None:
    state = BreakerState()
    assert failures_until_trip(Policy(consecutive_failures=3), state) == 3
    assert failures_until_trip(Policy(consecutive_failures=3, failures=5, within=10), state) == 0
    assert failures_until_trip(Policy(consecutive_failures=3, failure_rate=0.5), state) == 0
    assert failures_until_trip(Policy(failures=5, within=10), state) == 0
    opened = BreakerState(status=State.OPEN, version=1, retry_at=10.0)
    assert failures_until_trip(Policy(consecutive_failures=3), opened) == 0
