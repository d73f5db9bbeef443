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
    Synced,
    Tick,
    Window,
    step,
)

__all__ = [
    "EVENT_SPECS",
    "MALFORMED_SYNCED_SPECS",
    "SYNCED_SPECS",
    "policies",
    "realize",
    "walk",
]

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
_SIMPLE = (ForceOpen, ForceClose, Reset, Disable, Enable)
#: ``held`` (coordinated recovery): mostly a bool, sometimes not one at all.
_HELD = st.one_of(st.booleans(), st.booleans(), st.sampled_from([None, 0, 1, "yes"]))

# Shared counts (Synced). A window spec is "own" (the state's window, as it is), "empty", or
# "built": a head relative to the state's window and well-formed buckets, which realize()
# keeps to the policy's bucket count and adds up. Counts are mostly small, so that they
# land on both sides of the trip thresholds and of success_threshold.
_COUNTS = st.one_of(st.integers(min_value=0, max_value=8), st.integers(0, 10**30))
_BUCKET = st.integers(min_value=0, max_value=6).flatmap(
    lambda calls: st.tuples(
        st.just(calls), st.integers(min_value=0, max_value=calls), st.integers(0, calls)
    )
)
_WINDOW_SPECS = st.one_of(
    st.tuples(st.just("own")),
    st.tuples(st.just("empty")),
    st.tuples(
        st.just("built"),
        st.one_of(st.integers(min_value=-3, max_value=3), st.integers()),
        st.lists(_BUCKET, max_size=12),
    ),
)
_SYNCED_GENERATIONS = st.one_of(
    st.tuples(st.just("current")),
    st.tuples(st.just("older"), st.integers(min_value=0, max_value=99)),
    st.tuples(st.just("near"), st.integers(min_value=0, max_value=3)),
)

#: A well-formed Synced event: valid counts and windows, a generation that is the current
#: one or another one (never negative), a draw in [0, 1].
SYNCED_SPECS: st.SearchStrategy[tuple[Any, ...]] = st.tuples(
    st.just(Synced),
    _SYNCED_GENERATIONS,
    st.one_of(st.tuples(st.just("own")), st.tuples(st.just("count"), _COUNTS)),
    st.one_of(
        st.tuples(st.just("own"), st.integers(min_value=-1, max_value=3)),
        st.tuples(st.just("count"), _COUNTS),
    ),
    _WINDOW_SPECS,
    _WINDOW_SPECS,
    _TIME_SPECS,
    st.floats(min_value=0.0, max_value=1.0),
)

_NOT_COUNTS: list[Any] = [-1, -(10**30), True, False, 1.0, 2.5, math.nan, None, "1"]
_NOT_BUCKETS: list[Any] = [
    (1, 1),
    (1, 1, 0, 0),
    [1, 1, 0],
    None,
    1,
    (-1, 0, 0),
    (1, -1, 0),
    (True, 0, 0),
    (1, 0, False),
    (2.0, 1, 0),
    (1, 2, 0),
    (1, 0, 2),
]
# How to spoil one part of a well-formed Synced: (field, how, value).
_SPOILS = st.one_of(
    st.tuples(
        st.sampled_from(["version", "consecutive_failures", "half_open_successes"]),
        st.just("set"),
        st.sampled_from(_NOT_COUNTS),
    ),
    st.tuples(
        st.just("draw"),
        st.just("set"),
        st.one_of(
            st.sampled_from([-0.1, 1.0000001, 2, -math.inf, math.inf, math.nan]),
            st.floats(max_value=-5e-324),
            st.floats(min_value=1.0, exclude_min=True),
        ),
    ),
    st.tuples(
        st.sampled_from(["failure_window", "rate_window"]),
        st.sampled_from(["set"]),
        st.sampled_from([None, (0, (), 0, 0, 0), [0, [], 0, 0, 0], 0]),
    ),
    st.tuples(
        st.sampled_from(["failure_window", "rate_window"]),
        st.just("head"),
        st.sampled_from([0.0, 1.0, True, False, "0", None, math.nan]),
    ),
    st.tuples(
        st.sampled_from(["failure_window", "rate_window"]),
        st.sampled_from(["calls", "failures", "slow"]),
        st.sampled_from(
            [("off", -1), ("off", 1), ("as", float), ("as", bool), ("set", None), ("set", "0")]
        ),
    ),
    st.tuples(
        st.sampled_from(["failure_window", "rate_window"]),
        st.just("buckets"),
        st.sampled_from([None, [], "buckets"]),
    ),
    st.tuples(
        st.sampled_from(["failure_window", "rate_window"]),
        st.just("bucket"),
        st.sampled_from(_NOT_BUCKETS),
    ),
    st.tuples(
        st.sampled_from(["failure_window", "rate_window"]),
        st.just("too-many"),
        st.integers(min_value=1, max_value=3),
    ),
)

#: A Synced event with exactly one thing wrong (its generation is any): always invalid.
MALFORMED_SYNCED_SPECS: st.SearchStrategy[tuple[Any, ...]] = st.tuples(
    st.just("malformed"), SYNCED_SPECS, _SPOILS
)

#: A spec for any event: plausible most of the time, with wild values in every field.
EVENT_SPECS: st.SearchStrategy[tuple[Any, ...]] = st.one_of(
    st.tuples(st.sampled_from(_SIMPLE), _TIME_SPECS),
    st.tuples(st.sampled_from([CallRequested, Tick]), _TIME_SPECS, _HELD),
    st.tuples(
        st.just(CallFinished),
        st.one_of(st.sampled_from(Outcome), st.sampled_from(["success", None, 0])),
        _TIME_SPECS,
        _DURATIONS,
        _GENERATION_SPECS,
        _PROBE_SPECS,
        _DRAWS,
        _HELD,
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
    SYNCED_SPECS,
    MALFORMED_SYNCED_SPECS,
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


def _window(spec: tuple[Any, ...], own: Window, policy: Policy | None) -> Window:
    kind = spec[0]
    if kind == "own":
        return own
    if kind == "empty":
        return Window(own.head, (), 0, 0, 0)
    _, delta, buckets = spec
    if policy is not None:
        buckets = buckets[: policy.bucket_count]
    elif buckets:
        buckets = buckets[:1]  # the one bucket count every policy holds
    return Window(
        own.head + delta,
        tuple(buckets),
        sum(b[0] for b in buckets),
        sum(b[1] for b in buckets),
        sum(b[2] for b in buckets),
    )


def _synced(
    spec: tuple[Any, ...], state: BreakerState, clock: float, policy: Policy | None
) -> Synced:
    _, generation, consecutive, successes, failure_window, rate_window, when, draw = spec
    if generation[0] == "near":  # only forward: a generation is never negative
        version = state.version + generation[1]
    else:
        version = _generation(generation, state)
    if successes[0] == "own":
        half_open_successes = max(0, state.half_open_successes + successes[1])
    else:
        half_open_successes = successes[1]
    return Synced(
        version,
        state.consecutive_failures if consecutive[0] == "own" else consecutive[1],
        half_open_successes,
        _window(failure_window, state.failure_window, policy),
        _window(rate_window, state.rate_window, policy),
        _time(when, state, clock),
        draw,
    )


def _spoil(event: Synced, spoil: tuple[Any, str, Any], policy: Policy | None) -> Synced:
    field, how, value = spoil
    if how == "set":
        return event._replace(**{field: value})
    window: Window = getattr(event, field)
    if how == "buckets":
        spoilt = window._replace(buckets=value)
    elif how == "bucket":  # its last bucket (or its only one) is not a bucket of counts
        spoilt = window._replace(buckets=(*window.buckets[:-1], value))
    elif how == "too-many":  # value buckets too many, totals that add up
        limit = 1000 if policy is None else policy.bucket_count  # no policy allows 1001
        extra = limit + value - len(window.buckets)
        spoilt = window._replace(
            buckets=window.buckets + ((1, 0, 0),) * extra, calls=window.calls + extra
        )
    elif how == "head":
        spoilt = window._replace(head=value)
    else:  # a total that does not add up, or that is not an int
        total = getattr(window, how)
        change, amount = value
        if change == "off":
            wrong = total + amount
        elif change == "as":
            wrong = amount(total)
        else:
            wrong = amount
        spoilt = window._replace(**{how: wrong})
    fields: dict[str, Any] = {field: spoilt}
    return event._replace(**fields)


def realize(
    spec: tuple[Any, ...], state: BreakerState, clock: float, policy: Policy | None = None
) -> Event:
    """The event ``spec`` describes, for ``state`` at ``clock``.

    ``policy`` only shapes shared counts (:class:`Synced`): well-formed windows are kept to
    its bucket count and malformed ones go beyond it. Without it they keep to one bucket.
    """
    kind = spec[0]
    if kind is Synced:
        return _synced(spec, state, clock, policy)
    if kind == "malformed":
        return _spoil(_synced(spec[1], state, clock, policy), spec[2], policy)
    if kind is CallFinished:
        _, outcome, when, duration, generation, probe, draw, held = spec
        return CallFinished(
            outcome,
            _time(when, state, clock),
            duration,
            _generation(generation, state),
            _probe(probe, state),
            draw,
            held,
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
    if kind is CallRequested or kind is Tick:
        return kind(_time(spec[1], state, clock), spec[2])  # type: ignore[no-any-return]
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
        event = realize(data.draw(EVENT_SPECS, label="event"), state, clock, policy)
        try:
            state = step(policy, state, event).state
        except InvalidEvent:
            continue
        now = event.now
        if isinstance(now, float) and math.isfinite(now) and abs(now) < 1e12:
            clock = max(clock, now)
        yield state, clock
