"""Shared counts (``Synced``): what a flush reads back from storage, on every reachable state.

In CLOSED the fleet's counts replace the local ones and the trip rules decide on them; fed
its own counts back a circuit does not move at all. In HALF_OPEN only the fleet's probe
successes matter: they may close the circuit, never admit, reject, open or forget a
success. Counts of another generation, or in any other state, change nothing; malformed
ones are refused whatever the state and generation.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from breaker_machines._core import (
    Admitted,
    BreakerState,
    InvalidEvent,
    Persist,
    Policy,
    Reason,
    Rejected,
    State,
    Synced,
    Transitioned,
    WakeAt,
    Window,
    step,
)
from breaker_machines._core.transitions import _trip_reason
from core_strategies import MALFORMED_SYNCED_SPECS, SYNCED_SPECS, policies, realize, walk

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN

_POLICIES = st.one_of(policies(), policies(wide=True))


def _synced(
    policy: Policy, state: BreakerState, clock: float, data: st.DataObject, version: int
) -> Synced:
    """A well-formed Synced of generation ``version``, at a plausible time."""
    event = realize(data.draw(SYNCED_SPECS, label="synced"), state, clock, policy)
    assert isinstance(event, Synced)
    now = clock + data.draw(st.floats(min_value=0.0, max_value=100.0), label="later")
    return event._replace(version=version, now=now)


def _other_generation(state: BreakerState, data: st.DataObject) -> int:
    """Any generation but the current one: an older one, or one of a few ahead."""
    other = data.draw(st.integers(min_value=0, max_value=state.version + 4), label="other")
    return other if other < state.version else other + 1


@given(policy=_POLICIES, data=st.data())
def test_closed_opens_iff_a_trip_rule_fires_on_the_shared_counts(
    policy: Policy, data: st.DataObject
) -> None:
    for state, clock in walk(policy, data):
        if state.status is not CLOSED:
            continue
        event = _synced(policy, state, clock, data, state.version)
        installed = BreakerState(CLOSED, state.version, event.consecutive_failures, 0,
                                 event.failure_window, event.rate_window, state.opened_at,
                                 state.retry_at, state.trips, (), state.next_probe)  # fmt: skip
        reason = _trip_reason(policy, installed)
        result = step(policy, state, event)
        if reason is None:
            assert result.effects == ()
            assert result.state == installed
            if installed == state:
                assert result.state is state
            continue
        version = state.version + 1
        retry_at = event.now + policy.open_duration(state.trips + 1, event.draw)
        assert result.effects == (
            Transitioned(CLOSED, OPEN, reason, version),
            Persist(version),
            WakeAt(retry_at),
        )
        assert result.state == BreakerState(
            OPEN, version, opened_at=event.now, retry_at=retry_at, trips=state.trips + 1,
            next_probe=state.next_probe,
        )  # fmt: skip


@given(policy=_POLICIES, data=st.data(), draw=st.floats(min_value=0.0, max_value=1.0))
def test_closed_own_counts_fed_back_are_a_no_op(
    policy: Policy, data: st.DataObject, draw: float
) -> None:
    for state, clock in walk(policy, data):
        if state.status is not CLOSED:
            continue
        successes = data.draw(st.integers(min_value=0, max_value=10), label="successes")
        for failure_window, rate_window in (
            (state.failure_window, state.rate_window),
            (Window(*state.failure_window), Window(*state.rate_window)),  # equal, not the same
        ):
            event = Synced(state.version, state.consecutive_failures, successes,
                           failure_window, rate_window, clock, draw)  # fmt: skip
            result = step(policy, state, event)
            assert result.state is state
            assert result.effects == ()


@given(policy=_POLICIES, data=st.data())
def test_half_open_sync_never_admits_rejects_or_loses_successes(
    policy: Policy, data: st.DataObject
) -> None:
    for state, clock in walk(policy, data):
        if state.status is not HALF_OPEN:
            continue
        current = data.draw(st.booleans(), label="current")
        version = state.version if current else _other_generation(state, data)
        event = _synced(policy, state, clock, data, version)
        result = step(policy, state, event)
        assert not any(isinstance(e, (Admitted, Rejected)) for e in result.effects)
        if current and event.half_open_successes >= policy.success_threshold:
            assert result.effects == (
                Transitioned(HALF_OPEN, CLOSED, Reason.PROBES_SUCCEEDED, state.version + 1),
                Persist(state.version + 1),
            )
            assert result.state == BreakerState(
                CLOSED, state.version + 1, next_probe=state.next_probe
            )
            continue
        assert result.effects == ()
        new = result.state
        assert new.status is HALF_OPEN
        assert new.version == state.version
        assert new.half_open_successes >= state.half_open_successes
        # Only leases that ran out are released, and the count moves up to the fleet's (a
        # recorded success also clears a retry_at adopted from a remote HALF_OPEN record,
        # as a local one does).
        alive = tuple(p for p in state.probes if p.lease_until > event.now)
        if current and event.half_open_successes > state.half_open_successes:
            assert new == state._replace(
                half_open_successes=event.half_open_successes, probes=alive, retry_at=None
            )
        else:
            assert new == state._replace(probes=alive)
            if alive == state.probes:
                assert new is state


@given(policy=_POLICIES, data=st.data())
def test_sync_of_another_generation_changes_nothing(policy: Policy, data: st.DataObject) -> None:
    for state, clock in walk(policy, data):
        event = _synced(policy, state, clock, data, _other_generation(state, data))
        result = step(policy, state, event)
        assert result.effects == ()
        if state.status is HALF_OPEN:  # it still releases the leases that ran out
            alive = tuple(p for p in state.probes if p.lease_until > event.now)
            assert result.state == state._replace(probes=alive)
        else:
            assert result.state is state


@given(policy=_POLICIES, data=st.data())
def test_sync_decides_nothing_while_open_forced_or_disabled(
    policy: Policy, data: st.DataObject
) -> None:
    for state, clock in walk(policy, data):
        if state.status in (CLOSED, HALF_OPEN):
            continue
        event = _synced(policy, state, clock, data, state.version)
        result = step(policy, state, event)
        assert result.state is state
        assert result.effects == ()


@given(policy=_POLICIES, data=st.data())
def test_malformed_sync_is_always_invalid(policy: Policy, data: st.DataObject) -> None:
    for state, clock in walk(policy, data):
        event = realize(data.draw(MALFORMED_SYNCED_SPECS, label="malformed"), state, clock, policy)
        assert isinstance(event, Synced)
        event = event._replace(now=clock)
        try:
            result = step(policy, state, event)
        except InvalidEvent:
            continue
        raise AssertionError(f"{event!r} was accepted: {result!r}")
