"""The core agrees with a deliberately naive model, event by event.

:class:`NaiveBreaker` is written from the specification, not from the core: it keeps plain
lists of timestamped outcomes and recomputes every window total and trip rule from
scratch on each question. It shares nothing with ``transitions.py`` or ``window.py``; from
the policy it uses only the declared fields, the derived bucket geometry (``bucket_count``,
``within_width``, ``rate_width``, ``rate_bucket_calls``) and ``open_duration()``, which
are the policy's own contract.

:class:`CoreVersusModel` drives both side by side with a fake clock, callers holding
permits, late and stale outcomes, lease expiries, operator controls and remote adoption;
it compares the full state and the exact effects after every rule and checks the
invariants the design promises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import event as hypothesis_event
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from breaker_machines._core import (
    EDGES,
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
    Outcome,
    Persist,
    Policy,
    Reason,
    Rejected,
    RemoteObserved,
    Reset,
    State,
    Step,
    Tick,
    Transitioned,
    WakeAt,
    Window,
    inert_success,
    step,
)
from core_strategies import policies, walk

CLOSED = State.CLOSED
OPEN = State.OPEN
HALF_OPEN = State.HALF_OPEN
FORCED_OPEN = State.FORCED_OPEN
DISABLED = State.DISABLED

#: The operator controls, written out from the specification (not imported from the core):
#: control -> (reason, {source state: target state}); a missing source is a no-op.
MANUAL_SPEC: dict[type, tuple[Reason, dict[State, State]]] = {
    ForceOpen: (Reason.FORCED_OPEN, {s: FORCED_OPEN for s in State if s is not FORCED_OPEN}),
    ForceClose: (Reason.FORCED_CLOSE, {s: CLOSED for s in State if s is not CLOSED}),
    Reset: (Reason.RESET, dict.fromkeys(State, CLOSED)),
    Disable: (Reason.DISABLED, {s: DISABLED for s in State if s is not DISABLED}),
    Enable: (Reason.ENABLED, {DISABLED: CLOSED}),
}


def _totals(entries: list[tuple[int, int, int]], n: int) -> tuple[int, int, int]:
    """(calls, failures, slow) over the entries whose bucket is one of the newest ``n``."""
    if not entries:
        return 0, 0, 0
    head = max(index for index, _, _ in entries)
    kept = [(f, s) for index, f, s in entries if index > head - n]
    return len(kept), sum(f for f, _ in kept), sum(s for _, s in kept)


class NaiveBreaker:
    """The specification, executed as plainly as possible."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.status = CLOSED
        self.version = 0
        self.trips = 0
        self.opened_at: float | None = None
        self.retry_at: float | None = None
        self.run = 0  # failures in a row
        self.probe_successes = 0
        # Every counted outcome since the last transition: (bucket index, failed, slow).
        self.failure_log: list[tuple[int, int, int]] = []
        self.rate_log: list[tuple[int, int, int]] = []
        self.probes: list[tuple[int, float]] = []  # (id, lease_until), in admission order
        self.next_probe = 0

    # ------------------------------------------------------------------ derived views

    def failure_totals(self) -> tuple[int, int, int]:
        return _totals(self.failure_log, self.policy.bucket_count)

    def rate_totals(self) -> tuple[int, int, int]:
        return _totals(self.rate_log, self.policy.bucket_count)

    def _rates_configured(self) -> bool:
        return self.policy.failure_rate is not None or self.policy.slow_call_rate is not None

    def _trip_reason(self) -> Reason | None:
        p = self.policy
        if p.consecutive_failures is not None and self.run >= p.consecutive_failures:
            return Reason.CONSECUTIVE_FAILURES
        if p.failures is not None and self.failure_totals()[1] >= p.failures:
            return Reason.FAILURES_IN_WINDOW
        calls, failures, slow = self.rate_totals()
        if self._rates_configured() and calls >= p.minimum_calls:
            if p.failure_rate is not None and failures >= p.failure_rate * calls:
                return Reason.FAILURE_RATE
            if p.slow_call_rate is not None and slow >= p.slow_call_rate * calls:
                return Reason.SLOW_CALL_RATE
        return None

    # ------------------------------------------------------------------ transitions

    def _move(self, target: State, reason: Reason) -> list[Effect]:
        source = self.status
        self.status = target
        self.version += 1
        self.run = 0
        self.probe_successes = 0
        self.failure_log = []
        self.rate_log = []
        self.probes = []
        return [Transitioned(source, target, reason, self.version), Persist(self.version)]

    def _open(self, now: float, draw: float, reason: Reason) -> list[Effect]:
        trips = self.trips + 1
        effects = self._move(OPEN, reason)
        self.trips = trips
        self.opened_at = now
        self.retry_at = now + self.policy.open_duration(trips, draw)
        return [*effects, WakeAt(self.retry_at)]

    def _half_open(self) -> list[Effect]:
        effects = self._move(HALF_OPEN, Reason.RESET_AFTER_ELAPSED)
        self.retry_at = None  # opened_at and trips carry over
        return effects

    def _recover(self) -> list[Effect]:
        effects = self._move(CLOSED, Reason.PROBES_SUCCEEDED)
        self.trips = 0
        self.opened_at = None
        self.retry_at = None
        return effects

    def _expire(self, now: float) -> None:
        if self.status is HALF_OPEN:
            self.probes = [(pid, until) for pid, until in self.probes if until > now]

    # ------------------------------------------------------------------ events

    def request(self, now: float, held: bool = False) -> list[Effect]:
        # held: a dependency does not allow recovery; OPEN stays OPEN past retry_at and
        # HALF_OPEN admits no probe, both rejecting with no retry time.
        if self.status in (CLOSED, DISABLED):
            return [Admitted(self.version, None)]
        if self.status is FORCED_OPEN:
            return [Rejected(None)]
        effects: list[Effect] = []
        if self.status is OPEN:
            assert self.retry_at is not None
            if now < self.retry_at:
                return [Rejected(self.retry_at - now)]
            if held:
                return [Rejected(None)]
            effects = self._half_open()
        self._expire(now)
        if held:
            return [Rejected(None)]
        if len(self.probes) < self.policy.half_open_probes:
            pid = self.next_probe
            self.next_probe += 1
            self.probes.append((pid, now + self.policy.probe_lease))
            return [*effects, Admitted(self.version, pid)]
        return [*effects, Rejected(min(until for _, until in self.probes) - now)]

    def finish(self, event: CallFinished) -> list[Effect]:
        p = self.policy
        failed = event.outcome in (Outcome.FAILURE, Outcome.TIMEOUT)
        counted = failed or event.outcome is Outcome.SUCCESS
        slow = p.slow_call_duration is not None and event.duration >= p.slow_call_duration
        current = event.generation == self.version
        if self.status is CLOSED:
            if not current or not counted:
                return []
            self.run = self.run + 1 if failed else 0
            if failed and p.failures is not None:
                self.failure_log.append((int(event.now // p.within_width), 1, 0))
            if self._rates_configured():
                if p.window is not None:
                    index = int(event.now // p.rate_width)
                else:
                    index = len(self.rate_log) // p.rate_bucket_calls
                self.rate_log.append((index, int(failed), int(slow)))
            reason = self._trip_reason()
            return [] if reason is None else self._open(event.now, event.draw, reason)
        if self.status is HALF_OPEN:
            self._expire(event.now)
            if not current or event.probe not in [pid for pid, _ in self.probes]:
                return []
            if failed or (event.outcome is Outcome.SUCCESS and slow):
                return self._open(event.now, event.draw, Reason.PROBE_FAILED)
            self.probes = [(pid, until) for pid, until in self.probes if pid != event.probe]
            # held: a success frees its permit and counts toward nothing.
            if event.outcome is Outcome.SUCCESS and not event.held:
                self.probe_successes += 1
                if self.probe_successes >= p.success_threshold:
                    return self._recover()
        return []

    def tick(self, now: float, held: bool = False) -> list[Effect]:
        if self.status is OPEN:
            assert self.retry_at is not None
            return self._half_open() if now >= self.retry_at and not held else []
        self._expire(now)
        return []

    def lease_expired(self, probe: int, now: float) -> list[Effect]:
        self._expire(now)
        if self.status is HALF_OPEN:
            self.probes = [(pid, until) for pid, until in self.probes if pid != probe]
        return []

    def manual(self, event: Event) -> list[Effect]:
        reason, targets = MANUAL_SPEC[type(event)]
        target = targets.get(self.status)
        if target is None:
            return []
        effects = self._move(target, reason)
        self.trips = 0
        self.opened_at = event.now if target is FORCED_OPEN else None
        self.retry_at = None
        return effects

    def adopt(self, event: RemoteObserved) -> list[Effect]:
        if event.version <= self.version:
            return []
        source = self.status
        self._move(event.status, Reason.REMOTE)
        self.version = event.version
        self.opened_at = event.opened_at
        self.retry_at = event.retry_at
        self.trips = event.trips
        effects: list[Effect] = [Transitioned(source, event.status, Reason.REMOTE, event.version)]
        if event.status is OPEN:
            assert event.retry_at is not None
            effects.append(WakeAt(event.retry_at))
        return effects

    def apply(self, event: Event) -> list[Effect]:
        if isinstance(event, CallRequested):
            return self.request(event.now, event.held)
        if isinstance(event, CallFinished):
            return self.finish(event)
        if isinstance(event, Tick):
            return self.tick(event.now, event.held)
        if isinstance(event, LeaseExpired):
            return self.lease_expired(event.probe, event.now)
        if isinstance(event, RemoteObserved):
            return self.adopt(event)
        return self.manual(event)

    def view(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "consecutive_failures": self.run,
            "half_open_successes": self.probe_successes,
            "failure_window": self.failure_totals(),
            "rate_window": self.rate_totals(),
            "opened_at": self.opened_at,
            "retry_at": self.retry_at,
            "trips": self.trips,
            "probes": [(pid, until) for pid, until in self.probes],
            "next_probe": self.next_probe,
        }


def _core_view(state: BreakerState) -> dict[str, Any]:
    def totals(w: Window) -> tuple[int, int, int]:
        return w.calls, w.failures, w.slow

    return {
        "status": state.status,
        "version": state.version,
        "consecutive_failures": state.consecutive_failures,
        "half_open_successes": state.half_open_successes,
        "failure_window": totals(state.failure_window),
        "rate_window": totals(state.rate_window),
        "opened_at": state.opened_at,
        "retry_at": state.retry_at,
        "trips": state.trips,
        "probes": [(p.id, p.lease_until) for p in state.probes],
        "next_probe": state.next_probe,
    }


# --------------------------------------------------------------------------- invariants


def _check_window(window: Window, n: int) -> None:
    assert len(window.buckets) <= n
    assert all(count >= 0 for bucket in window.buckets for count in bucket)
    sums = tuple(sum(b[i] for b in window.buckets) for i in range(3))
    assert sums == (window.calls, window.failures, window.slow)
    assert window.failures <= window.calls
    assert window.slow <= window.calls


def check_step(policy: Policy, before: BreakerState, event: Event, result: Step) -> None:
    """Everything that must hold of one step, whatever the model says."""
    after, effects = result
    assert type(effects) is tuple
    transitions = [e for e in effects if isinstance(e, Transitioned)]
    assert len(transitions) <= 1
    # Counts never go negative; windows are internally consistent and bounded.
    assert after.consecutive_failures >= 0
    assert after.half_open_successes >= 0
    assert after.trips >= 0
    assert after.next_probe >= before.next_probe
    _check_window(after.failure_window, policy.bucket_count)
    _check_window(after.rate_window, policy.bucket_count)
    # Probes in flight never exceed the limit, and only half-open has any.
    assert len(after.probes) <= policy.half_open_probes
    if after.status is not HALF_OPEN:
        assert after.probes == ()
    # OPEN never admits before retry_at; its rejections say how long to wait.
    admitted = [e for e in effects if isinstance(e, Admitted)]
    if before.status is OPEN:
        assert before.retry_at is not None
        if admitted:
            assert event.now >= before.retry_at
        for e in effects:
            if isinstance(e, Rejected):
                if e.retry_after is None:  # held past retry_at by a dependency
                    assert isinstance(event, CallRequested)
                    assert event.held
                    assert event.now >= before.retry_at
                else:
                    assert e.retry_after > 0
    # Version: +1 on every transition, never otherwise; remote adoption jumps forward.
    if not transitions:
        assert after.version == before.version
        assert after.status is before.status
        return
    (moved,) = transitions
    assert (moved.source, moved.target, moved.reason) in EDGES
    assert moved.source is before.status
    assert moved.target is after.status
    assert moved.version == after.version
    assert effects[0] == moved
    if moved.reason is Reason.REMOTE:
        assert isinstance(event, RemoteObserved)
        assert after.version == event.version > before.version
        assert not any(isinstance(e, Persist) for e in effects)
    else:
        assert after.version == before.version + 1
        assert effects[1] == Persist(after.version)
    wakes = [e for e in effects if isinstance(e, WakeAt)]
    if after.status is OPEN:
        assert wakes == [WakeAt(after.retry_at)]  # type: ignore[arg-type]
    else:
        assert wakes == []
    # Every transition starts a fresh generation: empty windows and counters.
    assert after.failure_window == EMPTY_WINDOW
    assert after.rate_window == EMPTY_WINDOW
    assert after.consecutive_failures == 0
    if after.status is CLOSED and moved.reason is not Reason.REMOTE:
        assert after.trips == 0


def check_permits(before: BreakerState, event: Event, result: Step) -> None:
    """A probe permit only appears when admitted, and only leaves when it is released:
    by its own outcome (or cancellation), by its lease running out, or by a transition
    (a new generation, in which no permit of the old one can decide anything)."""
    after, effects = result
    old = {p.id: p.lease_until for p in before.probes}
    new = {p.id for p in after.probes}
    issued = {e.probe for e in effects if isinstance(e, Admitted) and e.probe is not None}
    assert new - set(old) == issued
    assert all(pid >= before.next_probe for pid in issued)
    if any(isinstance(e, Transitioned) for e in effects):
        return
    for pid in set(old) - new:
        released = isinstance(event, (CallFinished, LeaseExpired)) and event.probe == pid
        expired = old[pid] <= event.now
        assert released or expired, (pid, event)


# --------------------------------------------------------------------------- the machine


@dataclass
class Call:
    """A caller holding a permit."""

    generation: int
    probe: int | None
    admitted_at: float


OUTCOMES = st.sampled_from(list(Outcome))
#: Traffic leans on successes and failures; neutral outcomes still come up.
TRAFFIC_OUTCOMES = st.sampled_from(
    [
        Outcome.SUCCESS,
        Outcome.FAILURE,
        Outcome.SUCCESS,
        Outcome.TIMEOUT,
        Outcome.SUCCESS,
        Outcome.FAILURE,
        Outcome.CANCELLED,
        Outcome.IGNORED,
    ]
)
DURATIONS = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=10.0),
)
STEPS = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=10.0),
    st.floats(min_value=0.0, max_value=300.0),
)


class CoreVersusModel(RuleBasedStateMachine):
    """Drive ``step()`` and :class:`NaiveBreaker` together; they must never disagree."""

    policy: Policy
    model: NaiveBreaker

    def __init__(self) -> None:
        super().__init__()
        self.state = BreakerState()
        self.clock = 1000.0
        self.calls: list[Call] = []
        self.held = False  # whether a dependency holds the circuit (coordinated recovery)

    @initialize(policy=policies())
    def configure(self, policy: Policy) -> None:
        note(repr(policy))
        self.policy = policy
        self.model = NaiveBreaker(policy)

    # ------------------------------------------------------------------ plumbing

    def apply(self, event: Event) -> tuple[Effect, ...]:
        before = self.state
        result = step(self.policy, before, event)
        expected = self.model.apply(event)
        assert list(result.effects) == expected, (event, result.effects, expected)
        check_step(self.policy, before, event, result)
        check_permits(before, event, result)
        self.state = result.state
        assert _core_view(self.state) == self.model.view(), event
        for effect in result.effects:
            if isinstance(effect, Transitioned):
                hypothesis_event(f"{effect.source.name}->{effect.target.name} {effect.reason.name}")
        return result.effects

    # ------------------------------------------------------------------ time

    @rule(dt=STEPS)
    def advance(self, dt: float) -> None:
        self.clock += dt

    @precondition(lambda self: self.state.retry_at is not None or bool(self.state.probes))
    @rule(early=st.sampled_from([0.0, 0.0, 1e-6]))
    def advance_to_deadline(self, early: float) -> None:
        """Land exactly on (or just before) retry_at or the soonest probe lease."""
        deadlines = [p.lease_until for p in self.state.probes]
        if self.state.retry_at is not None:
            deadlines.append(self.state.retry_at)
        self.clock = max(self.clock, min(deadlines) - early)

    @rule(held=st.booleans())
    def dependency(self, held: bool) -> None:
        """A breaker this one depends on stops or starts allowing recovery."""
        self.held = held

    # ------------------------------------------------------------------ callers

    @rule(gaps=st.lists(STEPS, min_size=1, max_size=4))
    def request(self, gaps: list[float]) -> None:
        """Callers arrive ``gap`` seconds apart and keep their permits for now."""
        for gap in gaps:
            for effect in self.apply(CallRequested(self.clock, self.held)):
                if isinstance(effect, Admitted):
                    self.calls.append(Call(effect.generation, effect.probe, self.clock))
            self.clock += gap

    @precondition(lambda self: bool(self.calls))
    @rule(
        pick=st.integers(min_value=0),
        outcome=OUTCOMES,
        duration=DURATIONS,
        at_limit=st.booleans(),
        lag=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=20.0)),
        draw=st.floats(min_value=0.0, max_value=1.0),
    )
    def finish(
        self,
        *,
        pick: int,
        outcome: Outcome,
        duration: float,
        at_limit: bool,
        lag: float,
        draw: float,
    ) -> None:
        """One caller reports; ``lag`` delivers it late (a batched or delayed report)."""
        call = self.calls.pop(pick % len(self.calls))
        if at_limit and self.policy.slow_call_duration is not None:
            duration = self.policy.slow_call_duration
        now = max(call.admitted_at, self.clock - lag)
        self.apply(
            CallFinished(outcome, now, duration, call.generation, call.probe, draw, self.held)
        )

    @precondition(lambda self: len(self.calls) >= 2)
    @rule(
        keys=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=10),
        outcomes=st.lists(TRAFFIC_OUTCOMES, min_size=1, max_size=10),
        durations=st.lists(DURATIONS, min_size=1, max_size=10),
    )
    def finish_out_of_order(
        self, keys: list[int], outcomes: list[Outcome], durations: list[float]
    ) -> None:
        """Every held call reports, in an arbitrary order, at ``admitted_at + duration``: a
        report can carry an earlier time than the one before it (a late outcome)."""
        calls, self.calls = self.calls, []
        order = sorted(range(len(calls)), key=lambda i: (keys[i % len(keys)], i))
        for j, i in enumerate(order):
            call = calls[i]
            duration = durations[j % len(durations)]
            now = call.admitted_at + duration
            self.clock = max(self.clock, now)
            outcome = outcomes[j % len(outcomes)]
            self.apply(
                CallFinished(outcome, now, duration, call.generation, call.probe, held=self.held)
            )

    @precondition(lambda self: self.state.version > 0)
    @rule(
        generation=st.integers(min_value=0),
        probe=st.one_of(st.none(), st.integers(min_value=0)),
        outcome=OUTCOMES,
        duration=DURATIONS,
    )
    def finish_stale(
        self, generation: int, probe: int | None, outcome: Outcome, duration: float
    ) -> None:
        """An outcome from an older generation, possibly carrying a probe id."""
        generation %= self.state.version
        if probe is not None:
            probe = probe % self.state.next_probe if self.state.next_probe else None
        self.apply(CallFinished(outcome, self.clock, duration, generation, probe))

    @rule()
    def tick(self) -> None:
        self.apply(Tick(self.clock, self.held))

    @rule(probe=st.integers(min_value=0, max_value=50))
    def lease_expired(self, probe: int) -> None:
        """Storage reports a lease ran out: a live probe, an old one or one never issued."""
        live = [p.id for p in self.state.probes]
        self.apply(
            LeaseExpired(live[probe % len(live)] if live and probe < 40 else probe, self.clock)
        )

    @rule(
        burst=st.lists(
            st.tuples(TRAFFIC_OUTCOMES, DURATIONS, st.floats(min_value=0.0, max_value=2.0)),
            min_size=1,
            max_size=25,
        ),
        draw=st.floats(min_value=0.0, max_value=1.0),
    )
    def traffic(self, burst: list[tuple[Outcome, float, float]], draw: float) -> None:
        """A run of calls, each admitted (or not), then reporting ``gap`` seconds later."""
        for outcome, duration, gap in burst:
            effects = self.apply(CallRequested(self.clock, self.held))
            self.clock += gap
            for effect in effects:
                if isinstance(effect, Admitted):
                    event = CallFinished(
                        outcome,
                        self.clock,
                        duration,
                        effect.generation,
                        effect.probe,
                        draw,
                        self.held,
                    )
                    self.apply(event)

    # ------------------------------------------------------------------ operators

    @rule(
        disturbance=st.one_of(
            st.sampled_from([ForceOpen, ForceClose, Reset, Disable, Enable]).map(lambda c: (c,)),
            st.tuples(
                st.just(RemoteObserved),
                st.sampled_from(State),
                st.integers(min_value=-2, max_value=3),
                st.one_of(st.none(), st.floats(min_value=0.0, max_value=100.0)),
                st.floats(min_value=-10.0, max_value=100.0),
                st.integers(min_value=0, max_value=8),
            ),
        )
    )
    def disturb(self, disturbance: tuple[Any, ...]) -> None:
        """An operator control, or another process's write (a newer one when delta > 0)."""
        if disturbance[0] is not RemoteObserved:
            self.apply(disturbance[0](self.clock))
            return
        _, status, delta, opened_ago, retry_in, trips = disturbance
        # Written by a process that took listed edges: only OPEN has retry_at, and only a
        # state that was opened (OPEN, HALF_OPEN, FORCED_OPEN) has opened_at.
        opened = status in (OPEN, HALF_OPEN, FORCED_OPEN)
        opened_at = self.clock - opened_ago if opened and opened_ago is not None else None
        retry_at = self.clock + retry_in if status is OPEN else None
        version = self.state.version + delta
        self.apply(RemoteObserved(status, version, opened_at, retry_at, trips, self.clock))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def inert_success_changes_nothing(self) -> None:
        if not hasattr(self, "policy"):
            return
        success = CallFinished(Outcome.SUCCESS, self.clock, 0.0, self.state.version)
        if inert_success(self.policy, self.state):
            result = step(self.policy, self.state, success)
            assert result.state == self.state
            assert result.effects == ()
        elif self.state.status is CLOSED:
            # And in CLOSED it is exact: a success that is not inert changes the state.
            assert step(self.policy, self.state, success).state != self.state

    @invariant()
    def permits_held_are_known(self) -> None:
        issued = {c.probe for c in self.calls if c.probe is not None}
        assert {p.id for p in self.state.probes} <= issued


TestCoreVersusModel = CoreVersusModel.TestCase


# --------------------------------------------------------------------------- inert_success


@given(policy=policies(wide=True), data=st.data())
def test_inert_success_is_a_promise_step_keeps(policy: Policy, data: st.DataObject) -> None:
    """On reachable states, whenever ``inert_success`` holds, a fast success of the current
    generation returns the very same state (or an equal one) and no effects."""
    for state, clock in walk(policy, data):
        if inert_success(policy, state):
            success = CallFinished(Outcome.SUCCESS, clock, 0.0, state.version)
            result = step(policy, state, success)
            assert result.state is state or result.state == state
            assert result.effects == ()
