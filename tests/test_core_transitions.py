"""step(): every trip rule, OPEN and HALF_OPEN, operator controls, remote adoption, shared
counts, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from breaker_machines._core import (
    EDGES,
    EMPTY_WINDOW,
    MANUAL,
    TABLE,
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
    InvalidEvent,
    LeaseExpired,
    Outcome,
    Persist,
    Policy,
    Probe,
    Reason,
    Rejected,
    RemoteObserved,
    Reset,
    State,
    Step,
    Synced,
    Tick,
    Transitioned,
    WakeAt,
    Window,
    add_failures,
    inert_success,
    step,
)

S, F, T = Outcome.SUCCESS, Outcome.FAILURE, Outcome.TIMEOUT
C, IG = Outcome.CANCELLED, Outcome.IGNORED


class Run:
    """A circuit driven by hand: ``run.now`` is the clock, each call returns the effects."""

    def __init__(self, state: BreakerState | None = None, **policy: Any) -> None:
        self.policy = Policy(**policy)
        self.state = state or BreakerState()
        self.now = 0.0

    def send(self, event: Event) -> tuple[Effect, ...]:
        result = step(self.policy, self.state, event)
        assert isinstance(result, Step)
        self.state = result.state
        return result.effects

    def request(self) -> tuple[Effect, ...]:
        return self.send(CallRequested(self.now))

    def call(
        self,
        outcome: Outcome,
        duration: float = 0.0,
        *,
        generation: int | None = None,
        probe: int | None = None,
        draw: float = 0.5,
    ) -> tuple[Effect, ...]:
        gen = self.state.version if generation is None else generation
        return self.send(CallFinished(outcome, self.now, duration, gen, probe, draw))

    def calls(self, *outcomes: Outcome, duration: float = 0.0) -> list[tuple[Effect, ...]]:
        return [self.call(outcome, duration) for outcome in outcomes]

    def probe(self) -> int:
        effects = self.request()
        admitted = [e for e in effects if isinstance(e, Admitted)]
        assert admitted, effects
        probe = admitted[0].probe
        assert probe is not None
        return probe


def opened(effects: tuple[Effect, ...], reason: Reason) -> bool:
    return any(isinstance(e, Transitioned) and e.reason is reason for e in effects)


# --------------------------------------------------------------------------- CLOSED


def test_closed_admits_with_the_current_generation() -> None:
    run = Run(BreakerState(version=4))
    assert run.request() == (Admitted(4, None),)
    assert run.state == BreakerState(version=4)


def test_consecutive_failures_trip_and_success_breaks_the_run() -> None:
    run = Run(consecutive_failures=3, reset_after=10.0)
    assert run.calls(F, T, S, F, F) == [(), (), (), (), ()]
    assert run.state.consecutive_failures == 2
    run.calls(C, IG)  # neutral: the run goes on
    assert run.state.consecutive_failures == 2
    run.now = 5.0
    effects = run.call(T, draw=0.0)
    assert effects == (
        Transitioned(State.CLOSED, State.OPEN, Reason.CONSECUTIVE_FAILURES, 1),
        Persist(1),
        WakeAt(15.0),
    )
    assert run.state == BreakerState(
        State.OPEN, 1, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW, 5.0, 15.0, 1, (), 0
    )


def test_failures_within_counts_only_recent_buckets() -> None:
    # 3 failures within 10 s, in 10 buckets of 1 s.
    run = Run(failures=3, within=10.0)
    for when in (0.0, 5.0):
        run.now = when
        assert run.call(F) == ()
    run.now = 10.5  # bucket 10: bucket 0 has left the window, bucket 5 has not
    assert run.call(F) == ()
    assert run.state.failure_window.failures == 2
    run.calls(S, S, S)  # successes do not dilute a count rule
    run.now = 11.0
    assert opened(run.call(T), Reason.FAILURES_IN_WINDOW)


def test_failure_buckets_of_negative_times_are_floored() -> None:
    # within=10 in 10 buckets of 1 s: a failure at -0.5 s is in bucket -1, which has left
    # the window when a failure at 9.5 s (bucket 9) arrives; one at 0.0 s has not.
    for first, trips in ((-0.5, False), (0.0, True)):
        run = Run(failures=2, within=10.0)
        run.now = first
        run.call(F)
        run.now = 9.5
        assert opened(run.call(F), Reason.FAILURES_IN_WINDOW) is trips


def test_failures_within_ignores_successes_entirely() -> None:
    run = Run(failures=2, within=10.0)
    run.calls(S, S, S)
    assert run.state == BreakerState()  # inert: not even the window moves


def test_late_failure_counts_in_its_own_bucket_and_old_ones_drop() -> None:
    run = Run(failures=3, within=10.0)
    run.now = 20.0
    run.call(F)
    run.now = 15.0  # a late report from 5 s ago: still in the window
    assert run.send(CallFinished(F, 15.0, 0.0, 0)) == ()
    assert run.state.failure_window.failures == 2
    run.now = 3.0  # far too late: dropped
    assert run.call(F) == ()
    assert run.state.failure_window.failures == 2
    run.now = 20.0
    assert opened(run.call(F), Reason.FAILURES_IN_WINDOW)


def test_failure_rate_count_window_waits_for_minimum_calls() -> None:
    run = Run(failure_rate=0.5, minimum_calls=4, window_calls=4)
    assert run.calls(F, F, F) == [(), (), ()]  # 100% failures, but only 3 calls
    assert opened(run.call(S), Reason.FAILURE_RATE)  # 3/4 >= 0.5: a success can trip it


def test_failure_rate_count_window_slides_by_whole_buckets() -> None:
    # The last 4 calls, in 2 buckets of 2.
    run = Run(failure_rate=0.75, minimum_calls=4, window_calls=4, buckets=2)
    run.calls(F, F, S, S)  # 2/4
    run.calls(S)  # bucket 2 starts; bucket 0 (F, F) leaves: 0/3
    window = run.state.rate_window
    assert (window.head, window.calls, window.failures) == (2, 3, 0)
    run.calls(F, F)  # bucket 3 starts: window = (S, F) + (F): 2/3, under minimum
    assert run.state.rate_window.calls == 3
    assert opened(run.call(F), Reason.FAILURE_RATE)  # (S, F) + (F, F): 3/4


def test_failure_rate_time_window() -> None:
    run = Run(failure_rate=0.5, minimum_calls=2, window=10.0, buckets=2)
    run.now = 0.0
    run.calls(F)
    run.now = 12.0  # bucket 2: bucket 0 has expired
    assert run.call(S) == ()
    assert (run.state.rate_window.calls, run.state.rate_window.failures) == (1, 0)
    run.now = 16.0  # bucket 3: bucket 2 (S) still in
    assert opened(run.call(T), Reason.FAILURE_RATE)  # 1/2


def test_slow_call_rate_counts_slow_successes_and_failures() -> None:
    run = Run(slow_call_rate=0.5, slow_call_duration=2.0, minimum_calls=4, window_calls=10)
    run.call(S, 1.9)
    run.call(F, 2.0)  # exactly at the limit is slow
    run.call(S, 0.1)
    assert (run.state.rate_window.calls, run.state.rate_window.slow) == (3, 1)
    assert opened(run.call(S, 5.0), Reason.SLOW_CALL_RATE)  # 2/4


def test_neutral_outcomes_enter_no_window() -> None:
    run = Run(failure_rate=0.5, minimum_calls=1, failures=1, within=5.0, consecutive_failures=1)
    assert run.calls(C, IG) == [(), ()]
    assert run.state == BreakerState()


def test_trip_rules_are_checked_in_order() -> None:
    everything = {
        "consecutive_failures": 1,
        "failures": 1,
        "within": 10.0,
        "failure_rate": 0.5,
        "minimum_calls": 1,
        "slow_call_rate": 0.5,
        "slow_call_duration": 1.0,
    }
    assert opened(Run(**everything).call(F, 5.0), Reason.CONSECUTIVE_FAILURES)
    without = {k: v for k, v in everything.items() if k != "consecutive_failures"}
    assert opened(Run(**without).call(F, 5.0), Reason.FAILURES_IN_WINDOW)
    rates = {k: v for k, v in without.items() if k not in ("failures", "within")}
    assert opened(Run(**rates).call(F, 5.0), Reason.FAILURE_RATE)
    assert opened(Run(**rates).call(S, 5.0), Reason.SLOW_CALL_RATE)  # 0 failures, 1 slow


def test_stale_outcomes_count_for_nothing_in_closed() -> None:
    run = Run(BreakerState(version=3), consecutive_failures=1, failure_rate=0.1, minimum_calls=1)
    assert run.call(F, generation=2) == ()
    assert run.call(S, generation=0) == ()
    assert run.state == BreakerState(version=3)


def test_a_success_resets_the_run_even_without_rate_rules() -> None:
    run = Run(consecutive_failures=5)
    run.calls(F, F)
    assert not inert_success(run.policy, run.state)
    run.call(S)
    assert run.state.consecutive_failures == 0
    assert inert_success(run.policy, run.state)


def test_inert_success_returns_the_very_same_state() -> None:
    run = Run(consecutive_failures=5)
    before = run.state
    result = step(run.policy, before, CallFinished(S, 1.0, 0.0, 0))
    assert result.state is before
    assert result.effects == ()


@pytest.mark.parametrize(
    ("status", "policy", "inert"),
    [
        (State.CLOSED, {}, True),
        (State.CLOSED, {"failure_rate": 0.5}, False),  # successes feed the rate window
        (State.DISABLED, {"failure_rate": 0.5}, True),
        (State.OPEN, {}, False),
        (State.HALF_OPEN, {}, False),
        (State.FORCED_OPEN, {}, False),
    ],
)
def test_inert_success_by_state(status: State, policy: dict[str, Any], inert: bool) -> None:
    assert inert_success(Policy(**policy), BreakerState(status=status, retry_at=1.0)) is inert


# --------------------------------------------------------------------------- OPEN


def open_run(**policy: Any) -> Run:
    policy.setdefault("consecutive_failures", 1)
    policy.setdefault("reset_after", 10.0)
    run = Run(**policy)
    run.now = 100.0
    assert opened(run.call(F), Reason.CONSECUTIVE_FAILURES)
    return run


def test_open_rejects_with_time_left_until_retry_at() -> None:
    run = open_run()
    run.now = 104.0
    assert run.request() == (Rejected(6.0),)
    assert run.send(Tick(109.999)) == ()
    assert run.state.status is State.OPEN


def test_open_ignores_outcomes_but_validates_them() -> None:
    run = open_run()
    before = run.state
    assert run.call(F, generation=0) == ()
    assert run.call(S) == ()
    assert run.state is before
    with pytest.raises(InvalidEvent, match="generation 5"):
        run.call(F, generation=5)


def test_open_half_opens_at_retry_at_and_admits_that_call_as_a_probe() -> None:
    run = open_run(probe_lease=3.0)
    run.now = 110.0
    assert run.request() == (
        Transitioned(State.OPEN, State.HALF_OPEN, Reason.RESET_AFTER_ELAPSED, 2),
        Persist(2),
        Admitted(2, 0),
    )
    assert run.state.probes == (Probe(0, 113.0),)
    assert run.state.opened_at == 100.0
    assert run.state.retry_at is None
    assert run.state.trips == 1


def test_tick_half_opens_when_due_without_admitting() -> None:
    run = open_run()
    assert run.send(Tick(110.0)) == (
        Transitioned(State.OPEN, State.HALF_OPEN, Reason.RESET_AFTER_ELAPSED, 2),
        Persist(2),
    )
    assert run.state.probes == ()


def test_backoff_and_jitter_set_retry_at_once_per_trip() -> None:
    run = open_run(reset_after=10.0, backoff=2.0, max_reset_after=25.0, jitter=0.5)
    assert run.state.retry_at == 110.0  # draw 0.5: no spread
    for trips, draw, expected in ((2, 0.0, 10.0), (3, 1.0, 37.5), (4, 0.5, 25.0)):
        run.now = run.state.retry_at or 0.0
        probe = run.probe()
        effects = run.call(F, probe=probe, draw=draw)
        assert opened(effects, Reason.PROBE_FAILED)
        assert run.state.trips == trips
        assert run.state.retry_at == run.now + expected
        assert effects[-1] == WakeAt(run.now + expected)


# --------------------------------------------------------------------------- HALF_OPEN


def half_open_run(**policy: Any) -> Run:
    run = open_run(**policy)
    run.now = 110.0
    run.send(Tick(110.0))
    assert run.state.status is State.HALF_OPEN
    return run


def test_half_open_limits_probes_in_flight() -> None:
    run = half_open_run(half_open_probes=2, probe_lease=5.0)
    assert run.request() == (Admitted(2, 0),)
    run.now = 111.0
    assert run.request() == (Admitted(2, 1),)
    run.now = 112.0
    assert run.request() == (Rejected(3.0),)  # the first lease ends at 115
    assert [p.id for p in run.state.probes] == [0, 1]


def test_a_probe_lease_runs_out_and_frees_its_permit() -> None:
    run = half_open_run(probe_lease=5.0)
    assert run.probe() == 0
    run.now = 115.0  # lease_until <= now: expired
    assert run.request() == (Admitted(2, 1),)
    # The expired probe reports late: it decides nothing, even a failure.
    assert run.call(F, probe=0) == ()
    assert run.state.status is State.HALF_OPEN
    assert [p.id for p in run.state.probes] == [1]


def test_tick_releases_expired_leases() -> None:
    run = half_open_run(probe_lease=5.0, half_open_probes=2)
    run.probe()
    run.now = 112.0
    run.probe()
    assert run.send(Tick(114.0)) == ()
    assert len(run.state.probes) == 2
    before = run.state
    assert run.send(Tick(115.0)) == ()
    assert [p.id for p in run.state.probes] == [1]
    assert run.send(Tick(115.0)) == ()
    assert run.state == before._replace(probes=(Probe(1, 117.0),))


def test_lease_expired_event_releases_that_probe_only() -> None:
    run = half_open_run(probe_lease=50.0, half_open_probes=3)
    for _ in range(3):
        run.probe()
    assert run.send(LeaseExpired(1, 111.0)) == ()
    assert [p.id for p in run.state.probes] == [0, 2]
    before = run.state
    assert run.send(LeaseExpired(1, 111.0)) == ()  # already gone
    assert run.send(LeaseExpired(99, 111.0)) == ()  # never issued
    assert run.state is before


def test_lease_expired_event_also_releases_leases_that_ran_out() -> None:
    run = half_open_run(probe_lease=5.0, half_open_probes=2)
    run.probe()  # lease until 115
    run.now = 113.0
    run.probe()  # lease until 118
    assert run.send(LeaseExpired(7, 116.0)) == ()
    assert [p.id for p in run.state.probes] == [1]


def test_lease_expired_outside_half_open_is_a_no_op() -> None:
    for run in (Run(), open_run()):
        before = run.state
        assert run.send(LeaseExpired(0, 1.0)) == ()
        assert run.state is before


def test_probe_successes_close_at_the_threshold() -> None:
    run = half_open_run(success_threshold=2, half_open_probes=2)
    first, second = run.probe(), run.probe()
    assert run.call(S, probe=first) == ()
    assert run.state.half_open_successes == 1
    assert [p.id for p in run.state.probes] == [second]
    assert run.call(S, probe=second) == (
        Transitioned(State.HALF_OPEN, State.CLOSED, Reason.PROBES_SUCCEEDED, 3),
        Persist(3),
    )
    assert run.state == BreakerState(State.CLOSED, 3, next_probe=2)  # trips reset, windows empty


def test_probe_failure_or_timeout_reopens() -> None:
    for outcome in (F, T):
        run = half_open_run()
        effects = run.call(outcome, probe=run.probe())
        assert effects[0] == Transitioned(State.HALF_OPEN, State.OPEN, Reason.PROBE_FAILED, 3)
        assert run.state.trips == 2


def test_slow_probe_success_reopens_only_with_a_slow_call_rule() -> None:
    run = half_open_run(slow_call_rate=1.0, slow_call_duration=1.0, minimum_calls=100)
    assert opened(run.call(S, 1.0, probe=run.probe()), Reason.PROBE_FAILED)
    run = half_open_run()
    assert opened(run.call(S, 1000.0, probe=run.probe()), Reason.PROBES_SUCCEEDED)


def test_cancelled_or_ignored_probe_frees_its_permit_and_decides_nothing() -> None:
    run = half_open_run()
    for outcome in (C, IG):
        probe = run.probe()
        assert run.request() == (Rejected(60.0),)  # the default lease
        assert run.call(outcome, probe=probe) == ()
        assert run.state.status is State.HALF_OPEN
        assert run.state.probes == ()
        assert run.state.half_open_successes == 0


def test_stale_outcome_cannot_decide_a_probe() -> None:
    run = half_open_run()
    probe = run.probe()
    for outcome in (F, S):
        assert run.call(outcome, generation=1, probe=probe) == ()
        assert run.call(outcome, generation=0) == ()
    assert [p.id for p in run.state.probes] == [probe]


def test_current_outcome_without_a_probe_is_invalid_in_half_open() -> None:
    run = half_open_run()
    with pytest.raises(InvalidEvent, match="probe permit"):
        run.call(S)


def test_probe_ids_are_never_reused() -> None:
    run = half_open_run()
    assert run.probe() == 0
    run.call(F, probe=0)  # reopen
    run.now = run.state.retry_at or 0.0
    assert run.probe() == 1
    run.call(S, probe=1)  # close
    assert run.state.next_probe == 2
    run.send(Reset(run.now))
    assert run.state.next_probe == 2


# --------------------------------------------------------------------------- manual, disabled


CONTROLS = (ForceOpen, ForceClose, Reset, Disable, Enable)


def in_state(status: State) -> Run:
    if status is State.OPEN:
        return open_run()
    if status is State.HALF_OPEN:
        run = half_open_run()
        run.probe()
        return run
    run = Run(consecutive_failures=5)
    if status is State.CLOSED:
        run.calls(F, F)
    elif status is State.FORCED_OPEN:
        run.send(ForceOpen(0.0))
    elif status is State.DISABLED:
        run.send(Disable(0.0))
    assert run.state.status is status
    return run


@pytest.mark.parametrize("status", list(State))
@pytest.mark.parametrize("control", CONTROLS)
def test_manual_controls_follow_the_grid(status: State, control: type[Any]) -> None:
    run = in_state(status)
    before = run.state
    run.now = 500.0
    effects = run.send(control(500.0))
    target = MANUAL[status][CONTROLS.index(control)]
    if target is None:
        assert effects == ()
        assert run.state is before
        return
    (moved, persist) = effects
    assert (moved.source, moved.target) == (status, target)
    assert (moved.source, moved.target, moved.reason) in EDGES
    assert moved.version == persist.version == before.version + 1
    assert run.state == BreakerState(
        target,
        before.version + 1,
        opened_at=500.0 if target is State.FORCED_OPEN else None,
        next_probe=before.next_probe,
    )


def test_forced_open_rejects_without_a_retry_time_and_ignores_time() -> None:
    run = in_state(State.FORCED_OPEN)
    assert run.request() == (Rejected(None),)
    assert run.send(Tick(10**6)) == ()
    assert run.call(F, generation=0) == ()
    assert run.state.status is State.FORCED_OPEN


def test_disabled_admits_everything_and_counts_nothing() -> None:
    run = in_state(State.DISABLED)
    assert run.request() == (Admitted(run.state.version, None),)
    before = run.state
    assert run.calls(F, F, F, F, F, F) == [()] * 6
    assert run.send(Tick(1e9)) == ()
    assert run.state is before
    assert run.send(Enable(1.0))[0].reason is Reason.ENABLED  # type: ignore[union-attr]
    assert run.state == BreakerState(State.CLOSED, before.version + 1)


def test_reset_from_closed_is_a_real_transition_that_clears_windows() -> None:
    run = Run(failures=3, within=10.0, failure_rate=0.9, minimum_calls=100)
    run.calls(F, F, S)
    effects = run.send(Reset(1.0))
    assert effects == (Transitioned(State.CLOSED, State.CLOSED, Reason.RESET, 1), Persist(1))
    assert run.state == BreakerState(version=1)
    assert run.calls(F, F) == [(), ()]  # old failures are gone: two new ones do not trip


# --------------------------------------------------------------------------- remote


def test_remote_newer_version_is_adopted_as_it_is() -> None:
    run = half_open_run()
    run.probe()
    event = RemoteObserved(State.OPEN, 9, 200.0, 230.0, 3, 201.0)
    assert run.send(event) == (
        Transitioned(State.HALF_OPEN, State.OPEN, Reason.REMOTE, 9),
        WakeAt(230.0),
    )
    assert run.state == BreakerState(
        State.OPEN, 9, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW, 200.0, 230.0, 3, (), 1
    )


def test_remote_adoption_other_than_open_needs_no_wake_up() -> None:
    run = Run(consecutive_failures=3)
    run.calls(F, F)
    effects = run.send(RemoteObserved(State.CLOSED, 1, None, None, 0, 5.0))
    assert effects == (Transitioned(State.CLOSED, State.CLOSED, Reason.REMOTE, 1),)
    assert run.state == BreakerState(version=1)


def test_a_remote_closed_state_keeps_the_times_it_carried() -> None:
    # A CLOSED record may carry opened_at/retry_at (another process wrote them); adopting it
    # asks for no wake-up, and counting failures on it moves only the run of failures,
    # exactly as the runtimes' shortcut add_failures() does.
    run = Run(consecutive_failures=3)
    effects = run.send(RemoteObserved(State.CLOSED, 1, 10.0, 40.0, 2, 5.0))
    assert effects == (Transitioned(State.CLOSED, State.CLOSED, Reason.REMOTE, 1),)
    adopted = run.state
    assert (adopted.opened_at, adopted.retry_at, adopted.trips) == (10.0, 40.0, 2)
    assert run.calls(F, F) == [(), ()]
    assert run.state == add_failures(adopted, 2)
    assert run.state == adopted._replace(consecutive_failures=2)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_remote_same_or_older_version_is_a_no_op(version: int) -> None:
    run = Run(BreakerState(version=2))
    before = run.state
    # Even a malformed record is ignored when it is not newer.
    assert run.send(RemoteObserved("bogus", version, None, None, -1, 1.0)) == ()  # type: ignore[arg-type]
    assert run.state is before


@pytest.mark.parametrize(
    "event",
    [
        RemoteObserved("open", 5, None, 1.0, 0, 1.0),  # type: ignore[arg-type]
        RemoteObserved(State.CLOSED, 5, None, None, -1, 1.0),
        RemoteObserved(State.OPEN, 5, 1.0, None, 1, 1.0),
    ],
)
def test_malformed_newer_remote_state_is_invalid(event: RemoteObserved) -> None:
    with pytest.raises(InvalidEvent):
        step(Policy(), BreakerState(), event)


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (CallRequested(math.nan), "not a finite time"),
        (Tick(math.inf), "not a finite time"),
        (Reset(-math.inf), "not a finite time"),
        (CallRequested("1"), "not a finite time"),  # type: ignore[arg-type]
        (CallFinished(S, 1.0, 0.0, 1), "generation 1"),
        (CallFinished(S, 1.0, 0.0, -1), "generation -1"),
        (CallFinished(S, 1.0, 0.0, 0, probe=0), "never issued"),
        (CallFinished(S, 1.0, 0.0, 0, probe=-1), "never issued"),
        (CallFinished(S, 1.0, -0.5, 0), "duration"),
        (CallFinished(S, 1.0, math.nan, 0), "duration"),
        (CallFinished(S, 1.0, math.inf, 0), "duration"),
        (CallFinished(S, 1.0, 0.0, 0, draw=1.5), "draw"),
        (CallFinished(S, 1.0, 0.0, 0, draw=math.nan), "draw"),
        (CallFinished("success", 1.0, 0.0, 0), "not an Outcome"),  # type: ignore[arg-type]
        (Admitted(0, None), r"^Admitted is not an event \(state <State.CLOSED: 'closed'>\)$"),
        (None, "^NoneType is not an event"),
    ],
)
def test_invalid_events_raise_invalid_event(event: Any, words: str) -> None:
    with pytest.raises(InvalidEvent, match=words):
        step(Policy(), BreakerState(), event)


def test_times_beyond_arithmetic_range_are_invalid_not_overflow_errors() -> None:
    policy = Policy(failures=3, within=1.0, failure_rate=0.5, window=1.0)
    for now in (1e308, 10**400):
        with pytest.raises(InvalidEvent, match="out of range"):
            step(policy, BreakerState(), CallFinished(F, now, 0.0, 0))
    with pytest.raises(InvalidEvent, match="out of range"):
        step(policy, BreakerState(State.OPEN, retry_at=5.0), CallRequested(10**400))


def test_int_times_are_refused_from_the_range_limit_on() -> None:
    limit = 2**1000
    for now in (limit, -limit, limit + 1):
        with pytest.raises(InvalidEvent, match="out of range"):
            step(Policy(), BreakerState(), CallRequested(now))
    for now in (limit - 1, -limit + 1):
        assert step(Policy(), BreakerState(), CallRequested(now)).effects == (Admitted(0, None),)


@pytest.mark.parametrize("event", [CallRequested(1.0), Tick(1.0)])
def test_open_state_without_retry_at_is_invalid(event: Event) -> None:
    with pytest.raises(InvalidEvent, match="retry_at"):
        step(Policy(), BreakerState(State.OPEN), event)


def test_the_table_covers_every_state_and_event() -> None:
    events = {CallRequested, CallFinished, Tick, LeaseExpired, RemoteObserved, Synced, *CONTROLS}
    assert set(TABLE) == {(s, e) for s in State for e in events}


# --------------------------------------------------------------------------- shared counts


def window(*buckets: tuple[int, int, int], head: int = 0) -> Window:
    """A well-formed window holding ``buckets`` (newest first), its totals added up."""
    return Window(
        head,
        buckets,
        sum(b[0] for b in buckets),
        sum(b[1] for b in buckets),
        sum(b[2] for b in buckets),
    )


def synced(
    run: Run,
    *,
    consecutive: int = 0,
    successes: int = 0,
    failures: Window = EMPTY_WINDOW,
    rates: Window = EMPTY_WINDOW,
    version: int | None = None,
    draw: float = 0.5,
) -> Synced:
    """The fleet's counts for ``run``'s circuit (its current generation unless told)."""
    gen = run.state.version if version is None else version
    return Synced(gen, consecutive, successes, failures, rates, run.now, draw)


# A CLOSED circuit that has tripped before and been adopted back from storage: trips and
# next_probe must survive (trips feeds the backoff), opened_at is the remote record's.
ADOPTED = BreakerState(State.CLOSED, 3, 1, 0, EMPTY_WINDOW, EMPTY_WINDOW, 50.0, None, 2, (), 4)
BACKOFF = {"reset_after": 10.0, "backoff": 2.0, "max_reset_after": 100.0, "jitter": 0.5}


@pytest.mark.parametrize(
    ("policy", "counts", "reason"),
    [
        ({"consecutive_failures": 3}, {"consecutive": 3}, Reason.CONSECUTIVE_FAILURES),
        (
            {"failures": 3, "within": 10.0},
            {"failures": window((2, 2, 0), (0, 0, 0), (1, 1, 0), head=9)},
            Reason.FAILURES_IN_WINDOW,
        ),
        (
            {"failure_rate": 0.5, "minimum_calls": 4, "window_calls": 4},
            {"rates": window((2, 1, 0), (2, 1, 0), head=7)},
            Reason.FAILURE_RATE,
        ),
        (
            {"slow_call_rate": 0.5, "slow_call_duration": 1.0, "minimum_calls": 2},
            {"rates": window((1, 0, 1), (1, 0, 0), head=3)},
            Reason.SLOW_CALL_RATE,
        ),
    ],
    ids=["consecutive", "within", "failure_rate", "slow_call_rate"],
)
def test_shared_counts_trip_closed_by_each_rule(
    policy: dict[str, Any], counts: dict[str, Any], reason: Reason
) -> None:
    run = Run(ADOPTED, **policy, **BACKOFF)
    run.now = 200.0
    # Third trip: 10 * 2**2 = 40 s, and draw 0.25 with jitter 0.5 takes a quarter off.
    assert run.policy.open_duration(3, 0.25) == 30.0
    effects = run.send(synced(run, draw=0.25, **counts))
    assert effects == (
        Transitioned(State.CLOSED, State.OPEN, reason, 4),
        Persist(4),
        WakeAt(230.0),
    )
    assert run.state == BreakerState(
        State.OPEN, 4, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW, 200.0, 230.0, 3, (), 4
    )


def test_shared_counts_trip_with_the_first_rule_that_fires() -> None:
    run = Run(consecutive_failures=2, failures=2, within=10.0, failure_rate=0.5, minimum_calls=1)
    both = window((2, 2, 0))
    assert opened(run.send(synced(run, consecutive=2, failures=both, rates=both)),
                  Reason.CONSECUTIVE_FAILURES)  # fmt: skip
    run = Run(failures=2, within=10.0, failure_rate=0.5, minimum_calls=1)
    assert opened(run.send(synced(run, failures=both, rates=both)), Reason.FAILURES_IN_WINDOW)


def test_shared_counts_that_trip_nothing_replace_the_local_ones() -> None:
    rules = {
        "consecutive_failures": 3,
        "failures": 3,
        "within": 10.0,
        "failure_rate": 0.5,
        "slow_call_rate": 0.5,
        "slow_call_duration": 1.0,
        "minimum_calls": 4,
        "window": 10.0,
    }
    run = Run(ADOPTED, **rules)
    run.now = 5.0
    failures = window((1, 1, 0), (0, 0, 0), (1, 1, 0), head=5)
    rates = window((3, 1, 1), head=5)  # 1/3 and under minimum_calls anyway
    assert run.send(synced(run, consecutive=2, successes=7, failures=failures, rates=rates)) == ()
    # Only the counts moved; half_open_successes means nothing in CLOSED.
    assert run.state == ADOPTED._replace(
        consecutive_failures=2, failure_window=failures, rate_window=rates
    )
    # The fleet's counts win even when they are lower than the local ones...
    assert run.send(synced(run)) == ()
    assert run.state == ADOPTED._replace(consecutive_failures=0)
    # ... and local counting goes on from the installed counts.
    run.send(synced(run, consecutive=2))
    effects = run.call(F)
    assert effects[0] == Transitioned(State.CLOSED, State.OPEN, Reason.CONSECUTIVE_FAILURES, 4)


def test_identical_shared_counts_return_the_very_same_state() -> None:
    run = Run(consecutive_failures=5, failures=5, within=10.0, failure_rate=0.9, minimum_calls=9)
    run.calls(F, S, F, F)
    before = run.state
    # Equal, not identical: rebuilt the way storage would read them back.
    failures = Window(*before.failure_window)
    rates = Window(*before.rate_window)
    assert failures is not before.failure_window
    event = synced(run, consecutive=2, successes=3, failures=failures, rates=rates)
    result = step(run.policy, before, event)
    assert result.state is before
    assert result.effects == ()


@pytest.mark.parametrize("version", [0, 2, 4, 10**6])
def test_shared_counts_of_another_generation_change_nothing_in_closed(version: int) -> None:
    run = Run(BreakerState(version=3), consecutive_failures=1)
    before = run.state
    assert run.send(synced(run, consecutive=5, version=version)) == ()
    assert run.state is before


def test_fleet_successes_reaching_the_threshold_close_half_open() -> None:
    for successes in (3, 4):
        run = half_open_run(success_threshold=3, half_open_probes=2)
        run.probe()
        effects = run.send(synced(run, successes=successes))
        assert effects == (
            Transitioned(State.HALF_OPEN, State.CLOSED, Reason.PROBES_SUCCEEDED, 3),
            Persist(3),
        )
        assert run.state == BreakerState(State.CLOSED, 3, next_probe=1)


def test_fewer_fleet_successes_are_recorded_and_keep_the_probes() -> None:
    run = half_open_run(success_threshold=3, half_open_probes=2)
    first, second = run.probe(), run.probe()
    before = run.state
    # Windows and failures in the record are validated but mean nothing half-open.
    bad_news = window((5, 5, 5))
    assert run.send(synced(run, consecutive=9, successes=2, failures=bad_news)) == ()
    assert run.state == before._replace(half_open_successes=2)
    assert [p.id for p in run.state.probes] == [first, second]
    # One more local success is the third.
    assert opened(run.call(S, probe=first), Reason.PROBES_SUCCEEDED)


@pytest.mark.parametrize("successes", [0, 1, 2])
def test_fleet_successes_not_above_the_local_count_change_nothing(successes: int) -> None:
    run = half_open_run(success_threshold=5, half_open_probes=3)
    for _ in range(2):
        run.call(S, probe=run.probe())
    run.probe()
    assert run.state.half_open_successes == 2
    before = run.state
    assert run.send(synced(run, successes=successes)) == ()
    assert run.state is before


def test_shared_counts_of_another_generation_decide_no_probe() -> None:
    run = half_open_run(success_threshold=1)
    run.probe()
    before = run.state
    for version in (0, 1, 3):
        assert run.send(synced(run, successes=5, version=version)) == ()
        assert run.state is before


def test_shared_counts_release_expired_probe_leases() -> None:
    # Whatever they decide, like every half-open event that carries a time.
    for version, successes, expected in ((2, 0, 0), (9, 4, 0), (2, 1, 1)):
        run = half_open_run(success_threshold=2, half_open_probes=2, probe_lease=5.0)
        run.probe()  # lease until 115
        run.now = 113.0
        run.probe()  # lease until 118
        run.now = 115.0
        assert run.send(synced(run, successes=successes, version=version)) == ()
        assert run.state.status is State.HALF_OPEN
        assert run.state.probes == (Probe(1, 118.0),)
        assert run.state.half_open_successes == expected


@pytest.mark.parametrize("status", [State.OPEN, State.FORCED_OPEN, State.DISABLED])
def test_shared_counts_decide_nothing_while_open_forced_or_disabled(status: State) -> None:
    run = in_state(status)
    before = run.state
    everything = window((9, 9, 9))
    for version in (before.version, before.version + 1, 0):
        event = synced(run, consecutive=99, successes=99, failures=everything, rates=everything,
                       version=version)  # fmt: skip
        assert run.send(event) == ()
        assert run.state is before
    # ... but they are still validated.
    with pytest.raises(InvalidEvent, match="malformed"):
        run.send(synced(run, consecutive=-1))
    with pytest.raises(InvalidEvent, match="draw"):
        run.send(synced(run, draw=2.0))


def test_well_formed_shared_counts_at_their_limits_are_accepted() -> None:
    run = Run(buckets=3)  # no rule at all: nothing can trip
    full = window((0, 0, 0), (7, 7, 7), (1, 0, 1), head=-12)  # exactly bucket_count buckets
    for draw in (0.0, 1.0, 1):
        assert run.send(synced(run, failures=full, rates=full, draw=draw)) == ()
    assert run.state == BreakerState(failure_window=full, rate_window=full)
    big = 10**30
    assert run.send(synced(run, consecutive=big, rates=window((big, big, 0), head=big))) == ()
    assert run.state.consecutive_failures == big


_W = window((1, 1, 0))
_BAD_WINDOWS: list[Any] = [
    None,
    (0, (), 0, 0, 0),  # a plain tuple, not a Window
    [0, [], 0, 0, 0],
    RemoteObserved(State.CLOSED, 0, None, None, 0, 0.0),
    # head not an int
    Window(0.0, (), 0, 0, 0),  # type: ignore[arg-type]
    Window(True, (), 0, 0, 0),
    Window("0", (), 0, 0, 0),  # type: ignore[arg-type]
    Window(None, (), 0, 0, 0),  # type: ignore[arg-type]
    # buckets not a tuple
    Window(0, [(1, 1, 0)], 1, 1, 0),  # type: ignore[arg-type]
    Window(0, None, 0, 0, 0),  # type: ignore[arg-type]
    # more buckets than policy.bucket_count (10 here)
    window(*[(1, 0, 0)] * 11),
    # a bucket that is not a 3-tuple of counts
    Window(0, ((1, 1),), 1, 1, 0),  # type: ignore[arg-type]
    Window(0, ((1, 1, 0, 0),), 1, 1, 0),  # type: ignore[arg-type]
    Window(0, ([1, 1, 0],), 1, 1, 0),  # type: ignore[arg-type]
    Window(0, (1,), 1, 0, 0),  # type: ignore[arg-type]
    Window(0, (None,), 0, 0, 0),  # type: ignore[arg-type]
    window((-1, 0, 0)),
    window((1, -1, 0)),
    window((True, 1, 0)),
    window((1, 0, False)),
    window((2.0, 1, 0)),  # type: ignore[arg-type]
    window((2, 1.0, 0)),  # type: ignore[arg-type]
    # failures or slow calls beyond the calls
    window((1, 2, 0)),
    window((1, 0, 2)),
    window((1, 1, 0), (0, 1, 0)),
    # totals that do not add up, or that are not ints
    Window(0, ((1, 1, 0),), 2, 1, 0),
    Window(0, ((1, 1, 0),), 1, 0, 0),
    Window(0, ((1, 1, 0),), 1, 1, 1),
    Window(0, (), 0, 0, -1),
    Window(0, ((2, 1, 0),), 2.0, 1, 0),  # type: ignore[arg-type]
    Window(0, ((1, 1, 1),), True, True, True),
    Window(0, ((1, 0, 0),), 1, 0, math.nan),  # type: ignore[arg-type]
]
_BAD_COUNTS: list[Any] = [-1, -(10**30), True, False, 1.0, 0.0, 2.5, math.nan, None, "1"]

MALFORMED_SYNCED: list[dict[str, Any]] = [
    *({"version": bad} for bad in _BAD_COUNTS),
    *({"consecutive_failures": bad} for bad in _BAD_COUNTS),
    *({"half_open_successes": bad} for bad in _BAD_COUNTS),
    *({"failure_window": bad} for bad in _BAD_WINDOWS),
    *({"rate_window": bad} for bad in _BAD_WINDOWS),
    *({"draw": bad} for bad in (-0.1, -1e-300, 1.0000001, 2, math.nan, math.inf, -math.inf)),
]


@pytest.mark.parametrize("status", list(State))
@pytest.mark.parametrize("fields", MALFORMED_SYNCED, ids=repr)
def test_malformed_shared_counts_are_invalid_in_every_state(
    status: State, fields: dict[str, Any]
) -> None:
    run = in_state(status)
    assert run.policy.bucket_count == 10
    before = run.state
    words = "draw" if "draw" in fields else "malformed"
    # Whatever the generation: storage is input, never trusted.
    for version in (before.version, before.version + 1):
        base = Synced(version, 0, 0, _W, _W, 500.0)
        with pytest.raises(InvalidEvent, match=words):
            run.send(base._replace(**fields))
        assert run.state is before


def test_a_bucket_beyond_the_policys_bucket_count_is_malformed() -> None:
    run = Run(buckets=2, failures=9, within=10.0)
    two, three = window((1, 1, 0), (1, 1, 0)), window((1, 1, 0), (1, 1, 0), (1, 1, 0))
    assert run.send(synced(run, failures=two)) == ()
    with pytest.raises(InvalidEvent, match="malformed"):
        run.send(synced(run, failures=three))
    with pytest.raises(InvalidEvent, match="malformed"):
        run.send(synced(run, rates=three))
    assert run.state.failure_window == two


@pytest.mark.parametrize("now", [math.nan, math.inf, "1", None, 10**400])
def test_shared_counts_need_a_finite_time(now: Any) -> None:
    with pytest.raises(InvalidEvent, match="now="):
        step(Policy(), BreakerState(), Synced(0, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW, now))


# ------------------------------------------------------------ held (coordinated recovery)


def test_held_keeps_open_past_retry_at_and_admits_no_probe() -> None:
    run = Run(consecutive_failures=1, reset_after=10.0)
    run.call(F)
    run.now = 10.0
    assert run.send(CallRequested(run.now, True)) == (Rejected(None),)
    assert run.send(Tick(run.now, True)) == ()
    assert run.state.status is State.OPEN
    assert run.send(Tick(run.now)) == (
        Transitioned(State.OPEN, State.HALF_OPEN, Reason.RESET_AFTER_ELAPSED, 2),
        Persist(2),
    )
    assert run.send(CallRequested(run.now, True)) == (Rejected(None),)  # half-open, held
    assert run.state.probes == ()


def test_a_held_probe_success_frees_its_permit_and_does_not_count() -> None:
    run = Run(consecutive_failures=1, reset_after=10.0, success_threshold=1)
    run.call(F)
    run.now = 10.0
    probe = run.probe()
    event = CallFinished(S, run.now, 0.0, run.state.version, probe, 0.5, True)
    assert run.send(event) == ()
    assert run.state.status is State.HALF_OPEN
    assert run.state.probes == ()
    assert run.state.half_open_successes == 0
    probe = run.probe()
    assert opened(run.call(S, probe=probe), Reason.PROBES_SUCCEEDED)  # not held: it closes


@pytest.mark.parametrize("held", [None, 0, 1, "yes"])
def test_held_must_be_a_bool_where_it_is_read(held: Any) -> None:
    run = Run(consecutive_failures=1, reset_after=10.0)
    run.call(F)
    run.now = 10.0
    with pytest.raises(InvalidEvent, match=r"^held=.* is not True or False$"):
        run.send(CallRequested(run.now, held))


@pytest.mark.parametrize("event", [CallRequested(5.0), Tick(5.0)], ids=["request", "tick"])
def test_an_open_state_without_retry_at_is_refused_by_name(event: Event) -> None:
    with pytest.raises(InvalidEvent, match=r"^an OPEN state must have retry_at$"):
        step(Policy(), BreakerState(status=State.OPEN, version=1), event)


def test_a_half_open_outcome_without_its_permit_is_refused_by_name() -> None:
    state = BreakerState(status=State.HALF_OPEN, version=1, probes=(Probe(0, 99.0),), next_probe=1)
    with pytest.raises(
        InvalidEvent,
        match=r"^a half-open outcome of the current generation needs its probe permit$",
    ):
        step(Policy(), state, CallFinished(S, 1.0, 0.0, 1, None))


def test_rate_buckets_floor_negative_times() -> None:
    # A time is any finite number: -0.5 and 0.5 are in different buckets of width 1.
    run = Run(failure_rate=0.9, minimum_calls=100, window=10.0, buckets=10)
    run.now = -0.5
    run.call(S)
    run.now = 0.5
    run.call(S)
    assert len(run.state.rate_window.buckets) == 2


def test_probe_permits_change_nothing_else_of_an_adopted_state() -> None:
    # Remote adoption takes a record as it is, retry_at included even in HALF_OPEN; issuing
    # and releasing probe permits then touches only the permits.
    run = Run(half_open_probes=2)
    run.send(RemoteObserved(State.HALF_OPEN, 3, 1.0, 5.0, 2, run.now))
    adopted = run.state
    probe = run.probe()
    assert run.state._replace(probes=(), next_probe=0) == adopted._replace(next_probe=0)
    run.call(C, probe=probe)
    assert run.state._replace(next_probe=0) == adopted._replace(next_probe=0)


@pytest.mark.parametrize(
    ("opened_at", "retry_at"),
    [
        (True, 5.0),
        ("1.0", 5.0),
        (math.nan, 5.0),
        (float(2**1000), 5.0),
        (-float(2**1000), 5.0),
        (2**1000, 5.0),
        (1.0, False),
        (1.0, "5"),
        (1.0, math.inf),
        (1.0, -(2**1000)),
    ],
)
def test_a_malformed_remote_time_is_refused(opened_at: Any, retry_at: Any) -> None:
    event = RemoteObserved(State.OPEN, 3, opened_at, retry_at, 1, 0.0)
    with pytest.raises(InvalidEvent, match=r"^remote state RemoteObserved\(.*\) is malformed$"):
        step(Policy(), BreakerState(), event)


def test_times_just_inside_the_range_are_adopted() -> None:
    largest = 2**1000 - 1
    event = RemoteObserved(State.OPEN, 3, -largest, largest, 1, 0.0)
    assert step(Policy(), BreakerState(), event).state.retry_at == largest


def test_a_remote_open_state_without_retry_at_is_refused_by_name() -> None:
    event = RemoteObserved(State.OPEN, 3, 1.0, None, 1, 0.0)
    with pytest.raises(InvalidEvent, match=r"^a remote OPEN state must have retry_at$"):
        step(Policy(), BreakerState(), event)
