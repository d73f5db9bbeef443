"""Only the edges in EDGES exist, and every one of them can actually be taken.

A breadth-first exploration from a fresh circuit, under one policy per trip rule, applies
every kind of event to every state it reaches and records each Transitioned effect. Shared
counts (Synced) that trip, close and change nothing are among the moves: they take the
same edges as local outcomes do, and no other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from breaker_machines._core import (
    EDGES,
    BreakerState,
    CallFinished,
    CallRequested,
    Disable,
    Enable,
    Event,
    ForceClose,
    ForceOpen,
    InvalidEvent,
    LeaseExpired,
    Outcome,
    Policy,
    Reason,
    RemoteObserved,
    Reset,
    State,
    Synced,
    Tick,
    Transitioned,
    Window,
    step,
)

POLICIES = {
    "consecutive": Policy(consecutive_failures=1, reset_after=1.0),
    "within": Policy(failures=1, within=10.0, reset_after=1.0),
    "failure_rate": Policy(failure_rate=0.5, minimum_calls=1, reset_after=1.0),
    "slow_call_rate": Policy(
        slow_call_rate=0.5, slow_call_duration=1.0, minimum_calls=1, reset_after=1.0
    ),
}

Edge = tuple[State, State, Reason]

# One failed, slow call: fires the window and rate rules of every policy above.
ONE_BAD_CALL = Window(0, ((1, 1, 1),), 1, 1, 1)


def _moves(state: BreakerState) -> Iterator[Event]:
    now = state.retry_at if state.retry_at is not None else 0.0
    yield CallRequested(now)
    yield Tick(now)
    probe = state.probes[0].id if state.probes else None
    if state.status is not State.HALF_OPEN or probe is not None:
        for outcome in Outcome:
            for duration in (0.0, 5.0):
                yield CallFinished(outcome, now, duration, state.version, probe)
    if probe is not None:
        yield LeaseExpired(probe, now)
    for control in (ForceOpen, ForceClose, Reset, Disable, Enable):
        yield control(now)
    for target in State:
        yield RemoteObserved(target, state.version + 1, now, now + 1.0, state.trips, now)
    # The fleet's counts: one more failure and success each (trips or closes), and the
    # state's own counts read back (changes nothing).
    yield Synced(state.version, state.consecutive_failures + 1, state.half_open_successes + 1,
                 ONE_BAD_CALL, ONE_BAD_CALL, now)  # fmt: skip
    yield Synced(state.version, state.consecutive_failures, state.half_open_successes,
                 state.failure_window, state.rate_window, now)  # fmt: skip


def explore(policy: Policy, depth: int = 6) -> set[Edge]:
    edges: set[Edge] = set()
    seen = {BreakerState()}
    frontier = [BreakerState()]
    for _ in range(depth):
        following: list[BreakerState] = []
        for state in frontier:
            for event in _moves(state):
                try:
                    result = step(policy, state, event)
                except InvalidEvent:  # the moves are all valid: this is a bug
                    pytest.fail(f"{event!r} in {state!r}")
                for effect in result.effects:
                    if isinstance(effect, Transitioned):
                        edges.add((effect.source, effect.target, effect.reason))
                # Versions only grow, so dedupe on everything else.
                key = result.state._replace(version=0)
                if key not in seen:
                    seen.add(key)
                    following.append(result.state)
        frontier = following
    return edges


@pytest.fixture(scope="module")
def reached() -> dict[str, set[Edge]]:
    return {name: explore(policy) for name, policy in POLICIES.items()}


def test_every_edge_taken_is_listed(reached: dict[str, set[Edge]]) -> None:
    for name, edges in reached.items():
        assert edges <= EDGES, (name, edges - EDGES)


def test_every_listed_edge_is_reachable(reached: dict[str, set[Edge]]) -> None:
    taken = set().union(*reached.values())
    assert taken == EDGES, sorted(EDGES - taken, key=str)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("consecutive", Reason.CONSECUTIVE_FAILURES),
        ("within", Reason.FAILURES_IN_WINDOW),
        ("failure_rate", Reason.FAILURE_RATE),
        ("slow_call_rate", Reason.SLOW_CALL_RATE),
    ],
)
def test_each_trip_rule_opens_with_its_own_reason(
    reached: dict[str, set[Edge]], name: str, reason: Reason
) -> None:
    trips = {r for (s, t, r) in reached[name] if (s, t) == (State.CLOSED, State.OPEN)}
    assert trips == {reason, Reason.REMOTE}


def test_edges_have_the_expected_shape() -> None:
    local = {edge for edge in EDGES if edge[2] is not Reason.REMOTE}
    # 4 trip rules, 3 half-open edges, force open/close from 4 states each, reset from 5,
    # disable from 4, enable from 1.
    assert len(local) == 4 + 3 + 4 + 4 + 5 + 4 + 1
    assert {(s, t) for s, t, r in EDGES if r is Reason.REMOTE} == {
        (s, t) for s in State for t in State
    }
    assert (State.OPEN, State.CLOSED, Reason.PROBES_SUCCEEDED) not in EDGES
    assert (State.CLOSED, State.HALF_OPEN, Reason.RESET_AFTER_ELAPSED) not in EDGES


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("consecutive", Reason.CONSECUTIVE_FAILURES),
        ("within", Reason.FAILURES_IN_WINDOW),
        ("failure_rate", Reason.FAILURE_RATE),
        ("slow_call_rate", Reason.SLOW_CALL_RATE),
    ],
)
def test_shared_counts_trip_by_the_policys_own_rule(name: str, reason: Reason) -> None:
    event = Synced(0, 1, 0, ONE_BAD_CALL, ONE_BAD_CALL, 0.0)
    effects = step(POLICIES[name], BreakerState(), event).effects
    moved = [(e.source, e.target, e.reason) for e in effects if isinstance(e, Transitioned)]
    assert moved == [(State.CLOSED, State.OPEN, reason)]
    assert moved[0] in EDGES


def test_a_transition_that_is_not_an_edge_is_refused() -> None:
    # The guard every transition passes: a handler asking for an edge the table does not
    # list is a bug in the core, reported as InvalidEvent naming the edge.
    from breaker_machines._core.transitions import _transition

    assert (State.CLOSED, State.HALF_OPEN, Reason.RESET) not in EDGES
    with pytest.raises(InvalidEvent, match=r"^no edge CLOSED -> HALF_OPEN \(reset\)$"):
        _transition(BreakerState(), State.HALF_OPEN, Reason.RESET, BreakerState(version=1))
