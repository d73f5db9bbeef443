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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.abc
import anyio.from_thread

from ._core.status import State
from .breaker import Breaker
from .errors import CircuitOpenError
from .storage.memory import MemoryStorage

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        Bundle,
        RuleBasedStateMachine,
        consumes,
        invariant,
        multiple,
        precondition,
        rule,
    )
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "breaker_machines.testing needs Hypothesis: pip install hypothesis"
    ) from error

__all__ = ["MachineClock", "breaker_machine"]

StorageFactory = Callable[[], MemoryStorage]
"""Makes a fresh storage for each run of the machine."""


class MachineClock:
    """The fake clock the machine moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

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

    admitted_in: State
    release: anyio.Event | None = None
    scope: anyio.CancelScope | None = None
    plan: _Planned = _Planned.SUCCESS
    done: Any = None
    outcome: list[str] = field(default_factory=list[str])


def breaker_machine(
    storage_factory: StorageFactory = MemoryStorage,
    *,
    backend: str = "asyncio",
    **breaker_options: Any,
) -> type[RuleBasedStateMachine]:
    """Build the state machine class for ``storage_factory`` under ``backend``.

    ``breaker_options`` override the breaker's defaults (``consecutive_failures=3``,
    ``reset_after=10``, ``half_open_probes=2``, ``success_threshold=2``). Use the result's
    ``TestCase`` attribute as a unittest/pytest test class.
    """
    options: dict[str, Any] = {
        "consecutive_failures": 3,
        "reset_after": 10.0,
        "half_open_probes": 2,
        "success_threshold": 2,
        "probe_lease": 30.0,
    }
    options.update(breaker_options)

    class BreakerMachine(RuleBasedStateMachine):
        """Drives one real Breaker; see the module docstring for what it checks."""

        calls = Bundle("calls")

        def __init__(self) -> None:
            super().__init__()
            self._exit = contextlib.ExitStack()
            self.portal = self._exit.enter_context(anyio.from_thread.start_blocking_portal(backend))
            self.clock = MachineClock()
            self.breaker = Breaker(
                "machine",
                clock=self.clock,
                storage=storage_factory(),
                record=_MachineFailure,
                ignore=_MachineIgnored,
                **options,
            )
            self.in_flight: list[_Call] = []
            self.finished = {"success": 0, "failure": 0, "ignored": 0, "cancelled": 0}
            self.rejected = 0
            self.last_version = 0

        # ------------------------------------------------------------------ calls

        async def _run(self, call: _Call, *, task_status: anyio.abc.TaskStatus[bool]) -> None:
            with anyio.CancelScope() as scope:
                call.scope = scope
                try:
                    async with self.breaker.guard():
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

        def _start(self) -> _Call | None:
            before = self.breaker.snapshot
            call = _Call(admitted_in=before.status)
            call.done, admitted = self.portal.start_task(self._run, call)
            after = self.breaker.snapshot
            if not admitted:
                self.rejected += 1
                call.done.result(timeout=30)
                return None
            self.in_flight.append(call)  # first, so teardown cancels it whatever fails next
            assert before.status is not State.FORCED_OPEN, "a forced-open circuit admitted"
            if before.status is State.OPEN:
                assert before.retry_at is not None
                assert self.clock.now >= before.retry_at, "OPEN admitted before retry_at"
            call.admitted_in = after.status
            return call

        def _settle(self, call: _Call) -> None:
            call.done.result(timeout=30)
            (outcome,) = call.outcome
            self.finished[outcome] += 1
            self.in_flight.remove(call)

        @rule(target=calls)
        def start_call(self) -> Any:
            """Start a call and keep it in flight."""
            call = self._start()
            return (
                call if call is not None else cast(Any, multiple())
            )  # a rejected call adds nothing

        @rule(plan=st.sampled_from(_Planned))
        def quick_call(self, plan: _Planned) -> None:
            """A call that finishes at once."""
            call = self._start()
            if call is not None:
                call.plan = plan
                assert call.release is not None
                self.portal.call(call.release.set)
                self._settle(call)

        @rule(call=consumes(calls), plan=st.sampled_from(_Planned))
        def finish_call(self, call: Any, plan: _Planned) -> None:
            """Let an in-flight call finish with a planned outcome."""
            if not isinstance(call, _Call) or call not in self.in_flight:
                return
            call.plan = plan
            assert call.release is not None
            self.portal.call(call.release.set)
            self._settle(call)

        @rule(call=consumes(calls))
        def cancel_call(self, call: Any) -> None:
            """Cancel an in-flight call from outside: neutral."""
            if not isinstance(call, _Call) or call not in self.in_flight:
                return
            assert call.scope is not None
            self.portal.call(call.scope.cancel)
            self._settle(call)

        # ------------------------------------------------------------------ time, controls

        @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, 9.99, 10.0, 31.0, 100.0]))
        def advance(self, seconds: float) -> None:
            """Move the fake clock."""
            self.clock.now += seconds

        @rule(control=st.sampled_from(["force_open", "force_close", "reset", "disable", "enable"]))
        def operate(self, control: str) -> None:
            """An operator control."""
            self.portal.call(_sync_in_loop, getattr(self.breaker, control))

        # ------------------------------------------------------------------ invariants

        @invariant()
        def probes_within_limit(self) -> None:
            snapshot = self.breaker.snapshot
            assert len(snapshot.probes) <= self.breaker.policy.half_open_probes
            if snapshot.status is State.HALF_OPEN:
                holding = [c for c in self.in_flight if c.admitted_in is State.HALF_OPEN]
                assert len(snapshot.probes) <= len(holding)

        @invariant()
        def every_call_accounted_for(self) -> None:
            stats = self.breaker.stats()
            assert stats.successes == self.finished["success"]
            assert stats.failures == self.finished["failure"]
            assert stats.ignored == self.finished["ignored"]
            assert stats.cancelled == self.finished["cancelled"]
            assert stats.rejections == self.rejected
            assert stats.timeouts == 0

        @invariant()
        def version_never_goes_back(self) -> None:
            snapshot = self.breaker.snapshot
            assert snapshot.version >= self.last_version
            if snapshot.version > self.last_version and snapshot.status is State.CLOSED:
                window = snapshot.failure_window
                assert window.failures <= snapshot.consecutive_failures or window.failures == 0
            self.last_version = snapshot.version

        @precondition(lambda self: self.breaker.snapshot.status is State.OPEN)
        @invariant()
        def open_has_a_retry_time(self) -> None:
            assert self.breaker.snapshot.retry_at is not None

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


async def _sync_in_loop(fn: Callable[[], None]) -> None:
    """Run a breaker control inside the event loop thread (the breaker is not thread-safe)."""
    fn()
