"""Hypothesis strategies for the pure core: valid policies and (wild) events.

Shared by the core's property suites; nothing here knows how ``step()`` works.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from breaker_machines._core import (
    BreakerState,
    CallFinished,
    CallRequested,
    ConfigError,
    Disable,
    Enable,
    Event,
    ForceClose,
    ForceOpen,
    InvalidEvent,
    LeaseExpired,
    Outcome,
    Policy,
    RemoteObserved,
    Reset,
    State,
    Tick,
    step,
)

__all__ = ["EVENT_SPECS", "policies", "realize", "walk"]

# --------------------------------------------------------------------------- policies


def _durations(wide: bool, low: float, high: float) -> st.SearchStrategy[float]:
    if wide:
        return st.one_of(
            st.floats(min_value=low, max_value=high),
            st.floats(min_value=0.0, max_value=1e300, exclude_min=True),
            st.integers(min_value=1, max_value=10**6),
        )
    return st.floats(min_value=low, max_value=high)


def _rates(wide: bool) -> st.SearchStrategy[float]:
    edges = st.sampled_from([1.0, 0.5, 1e-9, 5e-324])
    middle = st.floats(min_value=0.05, max_value=1.0)
    return st.one_of(middle, edges) if wide else st.one_of(middle, st.just(1.0))


_RULES = ("consecutive", "within", "failure_rate", "slow_call_rate")


@st.composite
def policies(draw: st.DrawFn, *, wide: bool = False) -> Policy:
    """Any valid :class:`Policy`; ``wide`` also draws extreme (but valid) values.

    Without ``wide`` the numbers stay in ranges where trips, recoveries and window
    rotations all happen within a few dozen events, and at least one trip rule is set.
    """
    kw: dict[str, Any] = {}
    small = st.integers(min_value=1, max_value=10**9 if wide else 6)
    rules = draw(st.sets(st.sampled_from(_RULES), min_size=0 if wide else 1))
    if "consecutive" in rules:
        kw["consecutive_failures"] = draw(small)
    if "within" in rules:
        kw["failures"] = draw(small)
        kw["within"] = draw(_durations(wide, 0.5, 30.0))
    if "failure_rate" in rules:
        kw["failure_rate"] = draw(_rates(wide))
    if "slow_call_rate" in rules:
        kw["slow_call_rate"] = draw(_rates(wide))
        kw["slow_call_duration"] = draw(_durations(wide, 0.05, 5.0))
    rates = "failure_rate" in kw or "slow_call_rate" in kw
    if rates:
        kw["minimum_calls"] = draw(st.integers(min_value=1, max_value=10**6 if wide else 10))
        kind = draw(st.sampled_from(["time", "count", "default"]))
        if kind == "time":
            kw["window"] = draw(_durations(wide, 0.5, 60.0))
            kw["buckets"] = draw(st.none() | st.integers(1, 1000 if wide else 12))
        elif kind == "count":
            buckets = draw(st.integers(1, 1000 if wide else 12))
            per = draw(st.integers(1, 50 if wide else 5))
            kw["window_calls"] = buckets * per
            kw["buckets"] = draw(st.sampled_from([None, buckets]))
        else:
            kw["buckets"] = draw(st.none() | st.sampled_from([1, 2, 4, 5, 10, 20, 25, 50, 100]))
    elif draw(st.booleans()):
        kw["buckets"] = draw(st.integers(1, 1000 if wide else 12))
    kw["reset_after"] = draw(_durations(wide, 0.1, 60.0))
    if draw(st.booleans()):
        kw["backoff"] = draw(st.floats(min_value=1.0, max_value=1e6 if wide else 4.0))
        factor = draw(st.floats(min_value=1.0, max_value=1e6 if wide else 20.0))
        kw["max_reset_after"] = kw["reset_after"] * factor
        assume(math.isfinite(kw["max_reset_after"]))
    if draw(st.booleans()):
        kw["jitter"] = draw(st.floats(min_value=0.0, max_value=0.999))
    kw["half_open_probes"] = draw(st.integers(1, 10**6 if wide else 4))
    kw["success_threshold"] = draw(st.integers(1, 10**6 if wide else 4))
    kw["probe_lease"] = draw(_durations(wide, 0.1, 30.0))
    try:
        return Policy(**kw)
    except ConfigError:
        # Only reachable with ``wide``: a window so short that a bucket of it underflows
        # to 0 seconds (for example ``within=5e-324``), which Policy rightly refuses.
        assume(False)
        raise  # pragma: no cover - assume(False) never returns


# --------------------------------------------------------------------------- events
#
# Event strategies must not depend on the state (Hypothesis replays choices by position),
# so they draw *specs*: "the current generation", "a deadline of the state", "the probe
# after the last one issued", "a wild float"... and :func:`realize` turns a spec into an
# event for a given state.

_WILD_TIMES: st.SearchStrategy[Any] = st.one_of(
    st.floats(),  # NaN, +-inf, -0.0, subnormals, 1e308...
    st.integers(),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e308, -1e308, True]),
    st.sampled_from([309, 400]).map(lambda e: 10**e),  # ints beyond float range
)

_TIME_SPECS = st.one_of(
    st.tuples(st.just("clock")),
    st.tuples(st.just("after"), st.floats(min_value=0.0, max_value=200.0)),
    st.tuples(st.just("before"), st.floats(min_value=0.0, max_value=50.0)),
    st.tuples(st.just("deadline"), st.integers(min_value=0, max_value=99)),
    st.tuples(st.just("wild"), _WILD_TIMES),
)
_GENERATION_SPECS = st.one_of(
    st.tuples(st.just("current")),
    st.tuples(st.just("older"), st.integers(min_value=0, max_value=99)),
    st.tuples(st.just("near"), st.integers(min_value=-3, max_value=3)),
    st.tuples(st.just("any"), st.integers()),
)
_PROBE_SPECS = st.one_of(
    st.none(),
    st.tuples(st.just("live"), st.integers(min_value=0, max_value=99)),
    st.tuples(st.just("near"), st.integers(min_value=-3, max_value=3)),
    st.tuples(st.just("any"), st.integers()),
)
_DURATIONS = st.one_of(st.floats(min_value=0.0, max_value=10.0), st.floats(), st.integers())
_DRAWS = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.floats())
_SIMPLE = (CallRequested, Tick, ForceOpen, ForceClose, Reset, Disable, Enable)

#: A spec for any event: plausible most of the time, with wild values in every field.
EVENT_SPECS: st.SearchStrategy[tuple[Any, ...]] = st.one_of(
    st.tuples(st.sampled_from(_SIMPLE), _TIME_SPECS),
    st.tuples(
        st.just(CallFinished),
        st.one_of(st.sampled_from(Outcome), st.sampled_from(["success", None, 0])),
        _TIME_SPECS,
        _DURATIONS,
        _GENERATION_SPECS,
        _PROBE_SPECS,
        _DRAWS,
    ),
    st.tuples(st.just(LeaseExpired), _PROBE_SPECS, _TIME_SPECS),
    st.tuples(
        st.just(RemoteObserved),
        st.sampled_from(State),
        st.integers(min_value=-2, max_value=5),
        st.none() | _TIME_SPECS,
        st.none() | _TIME_SPECS,
        st.one_of(st.integers(min_value=-2, max_value=50), st.just(10**6)),
        _TIME_SPECS,
    ),
)


def _time(spec: tuple[Any, ...], state: BreakerState, clock: float) -> Any:
    kind = spec[0]
    if kind == "clock":
        return clock
    if kind == "after":
        return clock + spec[1]
    if kind == "before":
        return clock - spec[1]
    if kind == "deadline":
        deadlines = [clock]
        if state.retry_at is not None:
            deadlines.append(state.retry_at)
        deadlines.extend(p.lease_until for p in state.probes)
        return deadlines[spec[1] % len(deadlines)]
    return spec[1]


def _generation(spec: tuple[Any, ...], state: BreakerState) -> int:
    kind = spec[0]
    if kind == "current":
        return state.version
    if kind == "older":
        return spec[1] % (state.version + 1)
    if kind == "near":
        return int(state.version + spec[1])
    return int(spec[1])


def _probe(spec: tuple[Any, ...] | None, state: BreakerState) -> int | None:
    if spec is None:
        return None
    kind = spec[0]
    if kind == "live":
        return state.probes[spec[1] % len(state.probes)].id if state.probes else None
    if kind == "near":
        return int(state.next_probe + spec[1])
    return int(spec[1])


def realize(spec: tuple[Any, ...], state: BreakerState, clock: float) -> Event:
    """The event ``spec`` describes, for ``state`` at ``clock``."""
    kind = spec[0]
    if kind is CallFinished:
        _, outcome, when, duration, generation, probe, draw = spec
        return CallFinished(
            outcome,
            _time(when, state, clock),
            duration,
            _generation(generation, state),
            _probe(probe, state),
            draw,
        )
    if kind is LeaseExpired:
        probe = _probe(spec[1], state)
        return LeaseExpired(-1 if probe is None else probe, _time(spec[2], state, clock))
    if kind is RemoteObserved:
        _, status, delta, opened_at, retry_at, trips, when = spec
        return RemoteObserved(
            status,
            state.version + delta,
            None if opened_at is None else _time(opened_at, state, clock),
            None if retry_at is None else _time(retry_at, state, clock),
            trips,
            _time(when, state, clock),
        )
    event: Event = kind(_time(spec[1], state, clock))
    return event


def walk(
    policy: Policy, data: st.DataObject, max_steps: int = 30
) -> Iterator[tuple[BreakerState, float]]:
    """Yield the reachable states a random event sequence visits, with the clock at each.

    Events ``step()`` refuses leave the state as it was; the clock follows the largest
    plausible time seen.
    """
    state = BreakerState()
    clock = 0.0
    yield state, clock
    for _ in range(data.draw(st.integers(min_value=0, max_value=max_steps), label="steps")):
        event = realize(data.draw(EVENT_SPECS, label="event"), state, clock)
        try:
            state = step(policy, state, event).state
        except InvalidEvent:
            continue
        now = event.now
        if isinstance(now, float) and math.isfinite(now) and abs(now) < 1e12:
            clock = max(clock, now)
        yield state, clock
