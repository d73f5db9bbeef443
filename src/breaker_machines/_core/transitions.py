"""The transition function: ``step(policy, state, event) -> Step(state, effects)``.

Theory of operation
===================

A circuit is a :class:`~.records.BreakerState`. Everything that can happen to it is an
event; ``step()`` looks the pair ``(state.status, type(event))`` up in :data:`TABLE` and
runs the handler it finds. Handlers are small and pure: they read the policy, the state
and the event, and return the next state with the effects the runtime must perform
(admit or reject the caller, persist and publish a transition, wake up later).

Nothing here reads a clock, draws a random number or does I/O: the time (``now``) and the
jitter draw arrive inside the events. That is what makes the core reusable by every
runtime (anyio, threads, someone else's) and checkable by Hypothesis against a model.

The awkward cases live in one place each:

* :func:`_check_finished` decides what an outcome may still do: an outcome from an older
  generation (the circuit has transitioned since the call was admitted) is *stale*. It
  can never decide a half-open probe or count toward re-tripping a circuit that has since
  recovered; an outcome from a generation the circuit has not reached is impossible.
* :func:`_expire_leases` releases half-open probe permits whose lease ran out, so a probe
  that never reports (a crashed process, a lost task) cannot wedge the circuit. It runs
  lazily on every half-open event that carries a time, and on :class:`~.records.Tick`.
* :func:`_check_synced` validates the counts a shared storage reads back (a
  :class:`~.records.Synced` event) before they replace the local ones: storage is input,
  never trusted.
* :data:`MANUAL` is the grid of operator controls (force open, force close, reset,
  disable, enable): the same in every state except for the no-ops it lists.

Only the edges in :data:`EDGES` exist; :func:`_transition` refuses any other, and the
state diagram in the docs is generated from :data:`EDGES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from . import window as _window
from .errors import InvalidEvent
from .policy import Policy
from .records import (
    EMPTY_WINDOW,
    Admitted,
    BreakerState,
    CallFinished,
    CallRequested,
    Disable,
    Effect,
    Enable,
    Event,
    ForceClose,
    ForceOpen,
    LeaseExpired,
    Persist,
    Probe,
    Rejected,
    RemoteObserved,
    Reset,
    Step,
    Synced,
    Tick,
    Transitioned,
    WakeAt,
    Window,
)
from .status import Outcome, Reason, State

__all__ = ["EDGES", "MANUAL", "TABLE", "step"]

CLOSED: Final = State.CLOSED
OPEN: Final = State.OPEN
HALF_OPEN: Final = State.HALF_OPEN
FORCED_OPEN: Final = State.FORCED_OPEN
DISABLED: Final = State.DISABLED

SUCCESS: Final = Outcome.SUCCESS
FAILURE: Final = Outcome.FAILURE
TIMEOUT: Final = Outcome.TIMEOUT

_NO_EFFECTS: tuple[Effect, ...] = ()
_INFINITY: Final = float("inf")
_LARGEST_TIME: Final = 2**1000  # an int time must convert to a float without overflow

Handler = Callable[[Policy, BreakerState, Event], Step]

# --------------------------------------------------------------------------- the edges

_TRIP_REASONS = (
    Reason.CONSECUTIVE_FAILURES,
    Reason.FAILURES_IN_WINDOW,
    Reason.FAILURE_RATE,
    Reason.SLOW_CALL_RATE,
)

#: Every edge a circuit can take, as ``(source, target, reason)``. Adopting a newer state
#: from shared storage (``Reason.REMOTE``) may join any two states: the other process took
#: listed edges, this one only sees where they led.
EDGES: Final[frozenset[tuple[State, State, Reason]]] = frozenset(
    {(CLOSED, OPEN, reason) for reason in _TRIP_REASONS}
    | {
        (OPEN, HALF_OPEN, Reason.RESET_AFTER_ELAPSED),
        (HALF_OPEN, CLOSED, Reason.PROBES_SUCCEEDED),
        (HALF_OPEN, OPEN, Reason.PROBE_FAILED),
    }
    | {(s, FORCED_OPEN, Reason.FORCED_OPEN) for s in State if s is not FORCED_OPEN}
    | {(s, CLOSED, Reason.FORCED_CLOSE) for s in State if s is not CLOSED}
    | {(s, CLOSED, Reason.RESET) for s in State}
    | {(s, DISABLED, Reason.DISABLED) for s in State if s is not DISABLED}
    | {(DISABLED, CLOSED, Reason.ENABLED)}
    | {(s, t, Reason.REMOTE) for s in State for t in State}
)

# --------------------------------------------------------------------------- helpers


def _transition(
    state: BreakerState,
    target: State,
    reason: Reason,
    new: BreakerState,
    extra: tuple[Effect, ...] = (),
) -> Step:
    """Finish a transition: check the edge exists and emit what every transition emits."""
    if (state.status, target, reason) not in EDGES:
        raise InvalidEvent(f"no edge {state.status.name} -> {target.name} ({reason.value})")
    effects: tuple[Effect, ...] = (
        Transitioned(state.status, target, reason, new.version),
        Persist(new.version),
        *extra,
    )
    return Step(new, effects)


def _fresh(state: BreakerState, status: State) -> BreakerState:
    """A new generation in ``status`` with empty windows, counters and probes."""
    return BreakerState(status, state.version + 1, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW,
                        None, None, 0, (), state.next_probe)  # fmt: skip


def _close(state: BreakerState, reason: Reason) -> Step:
    return _transition(state, CLOSED, reason, _fresh(state, CLOSED))


def _open(policy: Policy, state: BreakerState, now: float, draw: float, reason: Reason) -> Step:
    trips = state.trips + 1
    retry_at = now + policy.open_duration(trips, draw)
    new = BreakerState(OPEN, state.version + 1, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW,
                       now, retry_at, trips, (), state.next_probe)  # fmt: skip
    return _transition(state, OPEN, reason, new, (WakeAt(retry_at),))


def _half_open(state: BreakerState) -> Step:
    new = BreakerState(HALF_OPEN, state.version + 1, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW,
                       state.opened_at, None, state.trips, (), state.next_probe)  # fmt: skip
    return _transition(state, HALF_OPEN, Reason.RESET_AFTER_ELAPSED, new)


def _with_probes(state: BreakerState, probes: tuple[Probe, ...], next_probe: int) -> BreakerState:
    return BreakerState(state.status, state.version, state.consecutive_failures,
                        state.half_open_successes, state.failure_window, state.rate_window,
                        state.opened_at, state.retry_at, state.trips, probes,
                        next_probe)  # fmt: skip


def _expire_leases(state: BreakerState, now: float) -> BreakerState:
    """Release every probe permit whose lease has run out by ``now``."""
    probes = state.probes
    if not probes:
        return state
    alive = tuple(p for p in probes if p.lease_until > now)
    if len(alive) == len(probes):
        return state
    return _with_probes(state, alive, state.next_probe)


def _check_finished(state: BreakerState, event: CallFinished) -> bool:
    """Validate an outcome; return True when it belongs to the current generation."""
    if event.generation > state.version or event.generation < 0:
        raise InvalidEvent(
            f"outcome from generation {event.generation}, circuit is at {state.version}"
        )
    if event.probe is not None and not 0 <= event.probe < state.next_probe:
        raise InvalidEvent(f"probe permit {event.probe} was never issued")
    if not 0.0 <= event.duration < _INFINITY:
        raise InvalidEvent(f"duration {event.duration!r} is not a finite, non-negative number")
    if not 0.0 <= event.draw <= 1.0:
        raise InvalidEvent(f"draw {event.draw!r} is not in [0, 1]")
    if not isinstance(event.outcome, Outcome):
        raise InvalidEvent(f"outcome {event.outcome!r} is not an Outcome")
    return event.generation == state.version


def _is_slow(policy: Policy, duration: float) -> int:
    limit = policy.slow_call_duration
    return 1 if limit is not None and duration >= limit else 0


def _trip_reason(policy: Policy, state: BreakerState) -> Reason | None:
    """The first trip rule ``state`` fires, in a fixed order, or None."""
    limit = policy.consecutive_failures
    if limit is not None and state.consecutive_failures >= limit:
        return Reason.CONSECUTIVE_FAILURES
    limit = policy.failures
    if limit is not None and state.failure_window.failures >= limit:
        return Reason.FAILURES_IN_WINDOW
    rates = state.rate_window
    if policy.counts_rates and rates.calls >= policy.minimum_calls:
        rate = policy.failure_rate
        if rate is not None and rates.failures >= rate * rates.calls:
            return Reason.FAILURE_RATE
        rate = policy.slow_call_rate
        if rate is not None and rates.slow >= rate * rates.calls:
            return Reason.SLOW_CALL_RATE
    return None


def _rate_index(policy: Policy, window: Window, now: float) -> int:
    """The bucket an outcome arriving now belongs to in the rate window."""
    if policy.rate_bucket_calls:
        if window.buckets and window.buckets[0][0] >= policy.rate_bucket_calls:
            return window.head + 1
        return window.head
    return int(now // policy.rate_width)


# --------------------------------------------------------------------------- handlers


def _nothing(policy: Policy, state: BreakerState, event: Event) -> Step:
    """The event changes nothing in this state."""
    return Step(state, _NO_EFFECTS)


def _ignore_outcome(policy: Policy, state: BreakerState, event: Event) -> Step:
    """OPEN, FORCED_OPEN, DISABLED: an outcome is validated and then counts for nothing."""
    assert isinstance(event, CallFinished)
    _check_finished(state, event)
    return Step(state, _NO_EFFECTS)


def _admit(policy: Policy, state: BreakerState, event: Event) -> Step:
    """CLOSED, DISABLED: admit, no probe permit needed."""
    return Step(state, (Admitted(state.version, None),))


def _count(policy: Policy, state: BreakerState, event: Event) -> Step:
    """CLOSED: count an outcome of the current generation; open if a rule fires."""
    assert isinstance(event, CallFinished)
    if not _check_finished(state, event):
        return Step(state, _NO_EFFECTS)  # stale: admitted before the last transition
    outcome = event.outcome
    if outcome is SUCCESS:
        failed = 0
    elif outcome is FAILURE or outcome is TIMEOUT:
        failed = 1
    else:
        return Step(state, _NO_EFFECTS)  # cancelled or ignored: neutral
    if not failed and not policy.counts_rates and state.consecutive_failures == 0:
        return Step(state, _NO_EFFECTS)  # an inert success changes nothing
    now = event.now
    failure_window = state.failure_window
    if failed and policy.failures is not None:
        index = int(now // policy.within_width)
        failure_window = _window.add(failure_window, policy.bucket_count, index, 1, 0)
    rate_window = state.rate_window
    if policy.counts_rates:
        index = _rate_index(policy, rate_window, now)
        slow = _is_slow(policy, event.duration)
        rate_window = _window.add(rate_window, policy.bucket_count, index, failed, slow)
    # Only the counters move: opened_at and retry_at stay as they were (None, unless a
    # remote CLOSED state carried them), so this equals shortcuts.add_failures().
    new = BreakerState(CLOSED, state.version, state.consecutive_failures + 1 if failed else 0,
                       0, failure_window, rate_window, state.opened_at, state.retry_at,
                       state.trips, (), state.next_probe)  # fmt: skip
    reason = _trip_reason(policy, new)
    if reason is not None:
        return _open(policy, state, now, event.draw, reason)
    return Step(new, _NO_EFFECTS)


def _is_held(event: CallRequested | CallFinished | Tick) -> bool:
    """The event's ``held`` flag (a dependency does not allow recovery now)."""
    held = event.held
    if held is False:
        return False
    if held is True:
        return True
    raise InvalidEvent(f"held={held!r} is not True or False")


_HELD: Final = Rejected(None)  # held: no retry time (it depends on another circuit)


def _reject_or_half_open(policy: Policy, state: BreakerState, event: Event) -> Step:
    """OPEN: reject until ``retry_at``; then half-open and admit this call as a probe.

    While a dependency holds the circuit (``held``), it stays OPEN past ``retry_at``.
    """
    assert isinstance(event, CallRequested)
    retry_at = state.retry_at
    if retry_at is None:
        raise InvalidEvent("an OPEN state must have retry_at")
    if event.now < retry_at:
        return Step(state, (Rejected(retry_at - event.now),))
    if _is_held(event):
        return Step(state, (_HELD,))
    opened = _half_open(state)
    admitted = _admit_probe(policy, opened.state, event)
    return Step(admitted.state, opened.effects + admitted.effects)


def _half_open_when_due(policy: Policy, state: BreakerState, event: Event) -> Step:
    """OPEN, on a tick: half-open once ``retry_at`` has passed."""
    assert isinstance(event, Tick)
    if state.retry_at is None:
        raise InvalidEvent("an OPEN state must have retry_at")
    if event.now < state.retry_at or _is_held(event):
        return Step(state, _NO_EFFECTS)
    return _half_open(state)


def _reject_forced(policy: Policy, state: BreakerState, event: Event) -> Step:
    """FORCED_OPEN: reject with no retry time: only an operator closes it."""
    return Step(state, (Rejected(None),))


def _admit_probe(policy: Policy, state: BreakerState, event: Event) -> Step:
    """HALF_OPEN: admit while fewer than ``half_open_probes`` probes are in flight.

    While a dependency holds the circuit (``held``), admit none.
    """
    assert isinstance(event, CallRequested)
    now = event.now
    state = _expire_leases(state, now)
    if _is_held(event):
        return Step(state, (_HELD,))
    probes = state.probes
    if len(probes) >= policy.half_open_probes:
        soonest = min(p.lease_until for p in probes)
        return Step(state, (Rejected(soonest - now),))
    probe = Probe(state.next_probe, now + policy.probe_lease)
    new = _with_probes(state, (*probes, probe), state.next_probe + 1)
    return Step(new, (Admitted(state.version, probe.id),))


def _settle_probe(policy: Policy, state: BreakerState, event: Event) -> Step:
    """HALF_OPEN: a probe reports; enough successes close, a failure re-opens.

    While a dependency holds the circuit (``held``), a success only frees its permit.
    """
    assert isinstance(event, CallFinished)
    held = _is_held(event)
    current = _check_finished(state, event)
    state = _expire_leases(state, event.now)
    if not current:
        return Step(state, _NO_EFFECTS)  # stale: can never decide a probe
    if event.probe is None:
        raise InvalidEvent("a half-open outcome of the current generation needs its probe permit")
    remaining = tuple(p for p in state.probes if p.id != event.probe)
    if len(remaining) == len(state.probes):
        return Step(state, _NO_EFFECTS)  # its lease already expired: it decides nothing
    outcome = event.outcome
    if (
        outcome is FAILURE
        or outcome is TIMEOUT
        or (outcome is SUCCESS and _is_slow(policy, event.duration))
    ):
        return _open(policy, state, event.now, event.draw, Reason.PROBE_FAILED)
    released = _with_probes(state, remaining, state.next_probe)
    if outcome is not SUCCESS or held:
        return Step(released, _NO_EFFECTS)  # cancelled, ignored or held: the permit is freed
    successes = state.half_open_successes + 1
    if successes >= policy.success_threshold:
        return _close(state, Reason.PROBES_SUCCEEDED)
    new = BreakerState(HALF_OPEN, state.version, 0, successes, EMPTY_WINDOW, EMPTY_WINDOW,
                       state.opened_at, None, state.trips, remaining,
                       state.next_probe)  # fmt: skip
    return Step(new, _NO_EFFECTS)


def _expire(policy: Policy, state: BreakerState, event: Event) -> Step:
    """HALF_OPEN, on a tick: release expired probe leases."""
    assert isinstance(event, Tick)
    return Step(_expire_leases(state, event.now), _NO_EFFECTS)


def _release_probe(policy: Policy, state: BreakerState, event: Event) -> Step:
    """HALF_OPEN: storage says a probe's lease expired: free its permit."""
    assert isinstance(event, LeaseExpired)
    state = _expire_leases(state, event.now)
    remaining = tuple(p for p in state.probes if p.id != event.probe)
    if len(remaining) == len(state.probes):
        return Step(state, _NO_EFFECTS)
    return Step(_with_probes(state, remaining, state.next_probe), _NO_EFFECTS)


#: Operator controls, the same in every state: the target for each control, or None where
#: the control is a no-op. Columns: ForceOpen, ForceClose, Reset, Disable, Enable.
MANUAL: Final[dict[State, tuple[State | None, State | None, State, State | None, State | None]]] = {
    #              ForceOpen    ForceClose  Reset   Disable   Enable
    CLOSED:       (FORCED_OPEN, None,       CLOSED, DISABLED, None),
    OPEN:         (FORCED_OPEN, CLOSED,     CLOSED, DISABLED, None),
    HALF_OPEN:    (FORCED_OPEN, CLOSED,     CLOSED, DISABLED, None),
    FORCED_OPEN:  (None,        CLOSED,     CLOSED, DISABLED, None),
    DISABLED:     (FORCED_OPEN, CLOSED,     CLOSED, None,     CLOSED),
}  # fmt: skip

_MANUAL_COLUMN: Final[dict[type, tuple[int, Reason]]] = {
    ForceOpen: (0, Reason.FORCED_OPEN),
    ForceClose: (1, Reason.FORCED_CLOSE),
    Reset: (2, Reason.RESET),
    Disable: (3, Reason.DISABLED),
    Enable: (4, Reason.ENABLED),
}


def _manual(policy: Policy, state: BreakerState, event: Event) -> Step:
    """Any state: an operator control, looked up in :data:`MANUAL`."""
    column, reason = _MANUAL_COLUMN[type(event)]
    target = MANUAL[state.status][column]
    if target is None:
        return Step(state, _NO_EFFECTS)
    new = _fresh(state, target)
    if target is FORCED_OPEN:
        assert isinstance(event, ForceOpen)
        new = new._replace(opened_at=event.now)
    return _transition(state, target, reason, new)


def _is_time(value: object) -> bool:
    """None, or a finite float (or an int in float range): what a stored time may be."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -_LARGEST_TIME < value < _LARGEST_TIME and value - value == 0.0


def _adopt(policy: Policy, state: BreakerState, event: Event) -> Step:
    """Any state: shared storage has a newer version; adopt it as it is."""
    assert isinstance(event, RemoteObserved)
    if event.version <= state.version:
        return Step(state, _NO_EFFECTS)
    if (
        not isinstance(event.status, State)
        or not isinstance(event.trips, int)
        or event.trips < 0
        or not (_is_time(event.opened_at) and _is_time(event.retry_at))
    ):
        raise InvalidEvent(f"remote state {event!r} is malformed")
    if event.status is OPEN and event.retry_at is None:
        raise InvalidEvent("a remote OPEN state must have retry_at")
    new = BreakerState(event.status, event.version, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW,
                       event.opened_at, event.retry_at, event.trips, (),
                       state.next_probe)  # fmt: skip
    effects: tuple[Effect, ...] = (
        Transitioned(state.status, event.status, Reason.REMOTE, event.version),
    )
    if event.status is OPEN and event.retry_at is not None:
        effects = (*effects, WakeAt(event.retry_at))
    return Step(new, effects)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and value.__class__ is not bool and value >= 0


def _is_window(policy: Policy, value: object) -> bool:
    """A well-formed window: at most the policy's buckets, totals that add up."""
    if not isinstance(value, Window) or value.head.__class__ is not int:
        return False
    buckets = value.buckets
    if not isinstance(buckets, tuple) or len(buckets) > policy.bucket_count:
        return False
    calls = failures = slow = 0
    for bucket in buckets:
        if not (isinstance(bucket, tuple) and len(bucket) == 3 and all(map(_is_count, bucket))):
            return False
        if bucket[1] > bucket[0] or bucket[2] > bucket[0]:
            return False
        calls += bucket[0]
        failures += bucket[1]
        slow += bucket[2]
    # The totals must be ints too: 3.0 and True compare equal to the sums they claim.
    totals = (value.calls, value.failures, value.slow)
    return all(map(_is_count, totals)) and totals == (calls, failures, slow)


def _check_synced(policy: Policy, state: BreakerState, event: Synced) -> bool:
    """Validate shared counts; return True when they belong to the current generation."""
    if not (
        _is_count(event.version)
        and _is_count(event.consecutive_failures)
        and _is_count(event.half_open_successes)
        and _is_window(policy, event.failure_window)
        and _is_window(policy, event.rate_window)
    ):
        raise InvalidEvent(f"shared counts {event!r} are malformed")
    if not 0.0 <= event.draw <= 1.0:
        raise InvalidEvent(f"draw {event.draw!r} is not in [0, 1]")
    return event.version == state.version


def _sync_counts(policy: Policy, state: BreakerState, event: Event) -> Step:
    """CLOSED: the fleet's counts replace the local ones; open if a rule fires on them."""
    assert isinstance(event, Synced)
    if not _check_synced(policy, state, event):
        return Step(state, _NO_EFFECTS)
    new = BreakerState(CLOSED, state.version, event.consecutive_failures, 0,
                       event.failure_window, event.rate_window, state.opened_at,
                       state.retry_at, state.trips, (), state.next_probe)  # fmt: skip
    reason = _trip_reason(policy, new)
    if reason is not None:
        return _open(policy, state, event.now, event.draw, reason)
    if new == state:
        return Step(state, _NO_EFFECTS)
    return Step(new, _NO_EFFECTS)


def _sync_successes(policy: Policy, state: BreakerState, event: Event) -> Step:
    """HALF_OPEN: the fleet's probe successes; enough of them close the circuit."""
    assert isinstance(event, Synced)
    current = _check_synced(policy, state, event)
    state = _expire_leases(state, event.now)
    if not current or event.half_open_successes <= state.half_open_successes:
        return Step(state, _NO_EFFECTS)  # not ours, or nothing the local count lacks
    if event.half_open_successes >= policy.success_threshold:
        return _close(state, Reason.PROBES_SUCCEEDED)
    new = BreakerState(HALF_OPEN, state.version, 0, event.half_open_successes, EMPTY_WINDOW,
                       EMPTY_WINDOW, state.opened_at, None, state.trips, state.probes,
                       state.next_probe)  # fmt: skip
    return Step(new, _NO_EFFECTS)


def _validate_synced(policy: Policy, state: BreakerState, event: Event) -> Step:
    """OPEN, FORCED_OPEN, DISABLED: shared counts are validated and decide nothing."""
    assert isinstance(event, Synced)
    _check_synced(policy, state, event)
    return Step(state, _NO_EFFECTS)


# --------------------------------------------------------------------------- the table

_PER_STATE: Final[dict[State, dict[type, Handler]]] = {
    CLOSED: {
        CallRequested: _admit,
        CallFinished: _count,
        Tick: _nothing,
        LeaseExpired: _nothing,
        Synced: _sync_counts,
    },
    OPEN: {
        CallRequested: _reject_or_half_open,
        CallFinished: _ignore_outcome,
        Tick: _half_open_when_due,
        LeaseExpired: _nothing,
        Synced: _validate_synced,
    },
    HALF_OPEN: {
        CallRequested: _admit_probe,
        CallFinished: _settle_probe,
        Tick: _expire,
        LeaseExpired: _release_probe,
        Synced: _sync_successes,
    },
    FORCED_OPEN: {
        CallRequested: _reject_forced,
        CallFinished: _ignore_outcome,
        Tick: _nothing,
        LeaseExpired: _nothing,
        Synced: _validate_synced,
    },
    DISABLED: {
        CallRequested: _admit,
        CallFinished: _ignore_outcome,
        Tick: _nothing,
        LeaseExpired: _nothing,
        Synced: _validate_synced,
    },
}

#: ``(status, event type) -> handler``: the whole state machine. Operator controls and
#: remote adoption behave the same in every state and are added to every row.
TABLE: Final[dict[tuple[State, type], Handler]] = {
    (status, event_type): handler
    for status, row in _PER_STATE.items()
    for event_type, handler in {
        **row,
        ForceOpen: _manual,
        ForceClose: _manual,
        Reset: _manual,
        Disable: _manual,
        Enable: _manual,
        RemoteObserved: _adopt,
    }.items()
}


#: :data:`TABLE` as one dict per state: the same handlers, one lookup less per event.
_DISPATCH: Final[dict[State, dict[type, Handler]]] = {
    status: {event_type: h for (s, event_type), h in TABLE.items() if s is status}
    for status in State
}


def step(policy: Policy, state: BreakerState, event: Event) -> Step:
    """Apply ``event`` to ``state`` under ``policy``; return the next state and its effects.

    Pure: it reads no clock, draws no random number and does no I/O. Raises
    :class:`~breaker_machines.InvalidEvent` (and nothing else) for an impossible input.
    """
    handler = _DISPATCH[state.status].get(type(event))
    if handler is None:
        raise InvalidEvent(f"{type(event).__name__} is not an event (state {state.status!r})")
    now = event.now
    if now.__class__ is not float:
        if isinstance(now, bool) or not isinstance(now, int):
            raise InvalidEvent(f"now={now!r} is not a finite time")
        if not -_LARGEST_TIME < now < _LARGEST_TIME:
            raise InvalidEvent(f"now={now!r} is out of range")
    elif now - now != 0.0:
        raise InvalidEvent(f"now={now!r} is not a finite time")
    try:
        return handler(policy, state, event)
    except OverflowError:
        # A finite time can still be too large for the arithmetic: 1e308 // 0.1 is inf,
        # which has no bucket index; an int time beyond float range cannot become one.
        raise InvalidEvent(f"now={now!r} is out of range") from None
