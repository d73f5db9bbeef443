"""A public Hypothesis state machine that checks a storage backend through a real Breaker.

Third-party backends (and this project's own) check themselves with::

    from breaker_machines.testing import breaker_machine

    TestMyStorage = breaker_machine(lambda: MyStorage(...), backend="trio").TestCase

The machine drives a real :class:`~breaker_machines.Breaker` from Hypothesis's (sync) rules
through an anyio blocking portal, so the same machine runs under asyncio and trio. Calls
are real tasks: some finish at once, others stay in flight until a later rule finishes or
cancels them. A fake clock moves only when a rule says so. After every rule the machine
checks the invariants users rely on:

* an OPEN circuit never admits before its retry time, a FORCED_OPEN one never;
* half-open probes in flight never exceed ``half_open_probes``, and no more calls reach
  the dependency while half-open than that;
* every admitted call is accounted for exactly once (success, failure, ignored or
  cancelled), every rejection is counted, and a cancelled call counts as no failure;
* the version never goes back, and a circuit that re-closed starts from empty windows.

Requires Hypothesis (``pip install hypothesis``).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread

from ._core.errors import ConfigError
from ._core.status import State
from .breaker import Breaker, running
from .errors import CircuitOpenError
from .storage.memory import MemoryStorage
from .storage.shared import SharedStorage

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        invariant,
        precondition,
        rule,
    )
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "breaker_machines.testing needs Hypothesis: pip install hypothesis"
    ) from _missing

__all__ = ["MachineClock", "breaker_machine"]

StorageFactory = Callable[[], MemoryStorage | SharedStorage]
"""Makes a fresh storage for each breaker of each run of the machine."""


class MachineClock:
    """The fake clock the machine moves by hand."""

    def __init__(self) -> None:
        self.now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


class _Planned(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


class _MachineFailure(Exception):
    """What the machine's dependency raises for a planned failure (recorded)."""


class _MachineIgnored(Exception):
    """What the machine's dependency raises for a planned neutral error (ignored)."""


@dataclass
class _Call:
    """An admitted call held in flight by the machine."""

    breaker: Breaker
    admitted_in: State
    before: Any = None
    generation: int = 0
    admitted_at: float = 0.0
    release: anyio.Event | None = None
    scope: anyio.CancelScope | None = None
    plan: _Planned = _Planned.SUCCESS
    done: Any = None
    outcome: list[str] = field(default_factory=list[str])


def breaker_machine(
    storage_factory: StorageFactory = MemoryStorage,
    *,
    backend: str = "asyncio",
    peers: int = 1,
    **breaker_options: Any,
) -> type[RuleBasedStateMachine]:
    """Build the state machine class for ``storage_factory`` under ``backend``.

    ``breaker_options`` override the breaker's defaults (``consecutive_failures=3``,
    ``reset_after=10``, ``half_open_probes=2``, ``success_threshold=2``). Use the result's
    ``TestCase`` attribute as a unittest/pytest test class.

    With a shared storage (a :class:`~breaker_machines.storage.SharedStorage`), each run
    opens the storages, runs every breaker's runner and uses a fresh breaker name, so one
    key prefix can serve every run. ``peers`` > 1 builds that many breakers with the same
    name, each on a storage of its own from ``storage_factory`` (think: processes); a
    ``sync`` rule flushes them all and checks that they agree. The fake clock moves the
    storages' clocks too (:meth:`~breaker_machines.storage.SharedStorage.advance_clock`).
    """
    if isinstance(peers, bool) or not isinstance(peers, int) or peers < 1:
        raise ConfigError("peers", peers, "must be an integer >= 1")
    if backend not in ("asyncio", "trio"):
        raise ConfigError("backend", backend, "must be 'asyncio' or 'trio'")
    if not callable(storage_factory):
        raise ConfigError("storage_factory", storage_factory, "must make a storage when called")
    accepted = inspect.signature(Breaker).parameters
    for option, value in breaker_options.items():
        if option in ("name", "clock", "storage", "record", "ignore"):
            raise ConfigError(option, value, "is set by the machine itself")
        if option not in accepted:
            raise ConfigError(option, value, "is not an option of Breaker (check its spelling)")
    options: dict[str, Any] = {
        "consecutive_failures": 3,
        "reset_after": 10.0,
        "half_open_probes": 2,
        "success_threshold": 2,
        "probe_lease": 30.0,
    }
    options.update(breaker_options)
    # Check the options now, not in the first run of the machine.
    Breaker(
        "machine",
        clock=MachineClock(),
        record=_MachineFailure,
        ignore=_MachineIgnored,
        **options,
    )

    class BreakerMachine(RuleBasedStateMachine):
        """Drives one real Breaker; see the module docstring for what it checks."""

        def __init__(self) -> None:
            super().__init__()
            self._exit = contextlib.ExitStack()
            try:
                self._open()
            except BaseException:
                self._exit.close()
                raise

        def _open(self) -> None:
            portal = self._exit.enter_context(anyio.from_thread.start_blocking_portal(backend))
            self.portal = portal
            self.clock = MachineClock()
            self.storages = [storage_factory() for _ in range(peers)]
            self.shared = [s for s in self.storages if isinstance(s, SharedStorage)]
            if peers > 1 and len(self.shared) != peers:
                raise ConfigError("peers", peers, "peers need a shared storage to agree through")
            for storage in self.shared:
                self._exit.enter_context(portal.wrap_async_context_manager(storage))
            name = f"machine-{uuid.uuid4().hex}" if self.shared else "machine"
            self.breakers = [
                Breaker(
                    name,
                    clock=self.clock,
                    storage=storage,
                    record=_MachineFailure,
                    ignore=_MachineIgnored,
                    **options,
                )
                for storage in self.storages
            ]
            self.breaker = self.breakers[0]
            if self.shared:
                self._exit.enter_context(portal.wrap_async_context_manager(running(*self.breakers)))
            self.in_flight: list[_Call] = []
            self.finished = {
                id(b): {"success": 0, "failure": 0, "ignored": 0, "cancelled": 0}
                for b in self.breakers
            }
            self.rejected = {id(b): 0 for b in self.breakers}
            self.last_version = {id(b): 0 for b in self.breakers}

        # ------------------------------------------------------------------ calls

        async def _run(self, call: _Call, *, task_status: anyio.abc.TaskStatus[bool]) -> None:
            breaker = call.breaker
            with anyio.CancelScope() as scope:
                call.scope = scope
                try:
                    call.before = breaker.snapshot  # what the admission decision starts from
                    async with breaker.guard():
                        admitted = breaker.snapshot
                        call.admitted_in = admitted.status
                        call.generation = admitted.version
                        call.admitted_at = self.clock.now
                        call.release = anyio.Event()
                        task_status.started(True)
                        await call.release.wait()
                        if call.plan is _Planned.FAILURE:
                            raise _MachineFailure
                        if call.plan is _Planned.IGNORED:
                            raise _MachineIgnored
                except CircuitOpenError:
                    task_status.started(False)
                    return
                except (_MachineFailure, _MachineIgnored):
                    pass
            call.outcome.append("cancelled" if scope.cancelled_caught else call.plan.value)

        def _start(self, peer: int = 0) -> _Call | None:
            breaker = self.breakers[peer % len(self.breakers)]
            call = _Call(breaker=breaker, admitted_in=breaker.snapshot.status)
            call.done, admitted = self.portal.start_task(self._run, call)
            if not admitted:
                self.rejected[id(breaker)] += 1
                call.done.result(timeout=30)
                return None
            self.in_flight.append(call)  # first, so teardown cancels it whatever fails next
            before = call.before
            assert before.status is not State.FORCED_OPEN, "a forced-open circuit admitted"
            if before.status is State.OPEN:
                assert before.retry_at is not None
                assert self.clock.now >= before.retry_at, "OPEN admitted before retry_at"
            return call

        def _settle(self, call: _Call) -> None:
            call.done.result(timeout=30)
            (outcome,) = call.outcome
            self.finished[id(call.breaker)][outcome] += 1
            self.in_flight.remove(call)

        @rule(peer=st.integers(0, peers - 1))
        def start_call(self, peer: int) -> None:
            """Start a call and keep it in flight."""
            self._start(peer)

        @rule(plan=st.sampled_from(_Planned), peer=st.integers(0, peers - 1))
        def quick_call(self, plan: _Planned, peer: int) -> None:
            """A call that finishes at once."""
            call = self._start(peer)
            if call is not None:
                call.plan = plan
                assert call.release is not None
                self.portal.call(call.release.set)
                self._settle(call)

        # Calls in flight are picked by index, not drawn from a bundle: with a shared
        # storage, which calls were admitted depends on timing the machine does not
        # control, and the draws must not (or Hypothesis cannot replay a failure).

        def _pick(self, index: int) -> _Call | None:
            return self.in_flight[index % len(self.in_flight)] if self.in_flight else None

        @rule(index=st.integers(0, 15), plan=st.sampled_from(_Planned))
        def finish_call(self, index: int, plan: _Planned) -> None:
            """Let an in-flight call finish with a planned outcome."""
            call = self._pick(index)
            if call is None:
                return
            call.plan = plan
            assert call.release is not None
            self.portal.call(call.release.set)
            self._settle(call)

        @rule(index=st.integers(0, 15))
        def cancel_call(self, index: int) -> None:
            """Cancel an in-flight call from outside: neutral."""
            call = self._pick(index)
            if call is None:
                return
            assert call.scope is not None
            self.portal.call(call.scope.cancel)
            self._settle(call)

        # ------------------------------------------------------------------ time, controls

        @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, 9.99, 10.0, 31.0, 100.0]))
        def advance(self, seconds: float) -> None:
            """Move the fake clock (and the storages' clocks with it)."""
            self.clock.now += seconds
            for storage in self.shared:
                storage.advance_clock(seconds)

        @rule(
            control=st.sampled_from(["force_open", "force_close", "reset", "disable", "enable"]),
            peer=st.integers(0, peers - 1),
        )
        def operate(self, control: str, peer: int) -> None:
            """An operator control."""
            self.portal.call(_sync_in_loop, getattr(self.breakers[peer], control))

        @precondition(lambda self: bool(self.shared))
        @rule()
        def sync(self) -> None:
            """Flush every breaker until none changes; then they all agree."""
            for _ in range(6):
                before = [_stored(b) for b in self.breakers]
                for breaker in self.breakers:
                    self.portal.call(breaker.sync)
                if [_stored(b) for b in self.breakers] == before:
                    break
            states = {(b.snapshot.status, b.snapshot.trips, _stored(b)) for b in self.breakers}
            assert len(states) == 1, f"breakers disagree after a flush: {states}"

        # ------------------------------------------------------------------ invariants

        @invariant()
        def probes_within_limit(self) -> None:
            for breaker in self.breakers:
                snapshot = breaker.snapshot
                assert len(snapshot.probes) <= breaker.policy.half_open_probes
                if snapshot.status is State.HALF_OPEN:
                    holding = [
                        c
                        for c in self.in_flight
                        if c.breaker is breaker and c.admitted_in is State.HALF_OPEN
                    ]
                    assert len(snapshot.probes) <= len(holding)

        @invariant()
        def fleet_probes_within_limit(self) -> None:
            """Across peers, probes of one half-open generation never exceed the limit
            (counting only calls whose permit lease has not run out)."""
            if len(self.breakers) < 2:
                return
            policy = self.breaker.policy
            per_generation: dict[int, int] = {}
            for call in self.in_flight:
                if call.admitted_in is not State.HALF_OPEN:
                    continue
                if self.clock.now >= call.admitted_at + policy.probe_lease - 1.0:
                    continue
                per_generation[call.generation] = per_generation.get(call.generation, 0) + 1
            for generation, count in per_generation.items():
                assert count <= policy.half_open_probes, (
                    f"{count} probes of generation {generation} in flight across peers"
                )

        @invariant()
        def every_call_accounted_for(self) -> None:
            for breaker in self.breakers:
                stats = breaker.stats()
                finished = self.finished[id(breaker)]
                assert stats.successes == finished["success"]
                assert stats.failures == finished["failure"]
                assert stats.ignored == finished["ignored"]
                assert stats.cancelled == finished["cancelled"]
                assert stats.rejections == self.rejected[id(breaker)]
                assert stats.timeouts == 0

        @invariant()
        def version_never_goes_back(self) -> None:
            for breaker in self.breakers:
                snapshot = breaker.snapshot
                last = self.last_version[id(breaker)]
                assert snapshot.version >= last
                if snapshot.version > last and snapshot.status is State.CLOSED:
                    window = snapshot.failure_window
                    assert window.failures <= snapshot.consecutive_failures or window.failures == 0
                self.last_version[id(breaker)] = snapshot.version

        @invariant()
        def open_has_a_retry_time(self) -> None:
            for breaker in self.breakers:
                snapshot = breaker.snapshot
                if snapshot.status is State.OPEN:
                    assert snapshot.retry_at is not None

        def teardown(self) -> None:
            try:
                for call in list(self.in_flight):
                    assert call.scope is not None
                    self.portal.call(call.scope.cancel)
                    self._settle(call)
            finally:
                self._exit.close()

    BreakerMachine.__name__ = f"BreakerMachine_{backend}"
    BreakerMachine.__qualname__ = BreakerMachine.__name__
    return BreakerMachine


def _stored(breaker: Breaker) -> int:
    """The fleet's version of the circuit as ``breaker`` last exchanged it with storage."""
    replica = breaker._replica
    return replica.stored if replica is not None else breaker.snapshot.version


async def _sync_in_loop(fn: Callable[[], None]) -> None:
    """Run a breaker control inside the event loop thread (the breaker is not thread-safe)."""
    fn()
