"""Guarded-call overhead: breaker_machines against pybreaker, circuitbreaker, aiobreaker, purgatory.

Run ``python benchmarks/overhead.py`` (``--quick`` for a smoke run, ``--json PATH`` to keep
the numbers). Every library is measured in the same process, inside one asyncio event loop,
in interleaved rounds; breaker_machines is measured once more under trio, for information.

What is measured
----------------
The *overhead* of a guarded call is ``t(guarded call) - t(bare call)``: nanoseconds per call,
each measured as ``time.perf_counter_ns()`` around a loop of N calls, divided by N. The loops
are written out by hand so that a guarded loop differs from its bare loop only by the guard.

1. **success**: ``async def work(): return 1``. Bare: ``await work()``. The circuit is CLOSED.
2. **counted failure**: ``async def fail(): raise Boom()`` (a fresh exception each call). The
   breaker's threshold is so high that it never trips; every failure is counted. The caller
   catches ``Boom``. Bare: ``await fail()`` with the same ``try/except Boom``.
3. **open rejection**: the breaker is already OPEN (tripped by a real failure, with an
   hour-long reset) and the caller catches the library's rejection error. The baseline is the
   *bare failing call, caught* (``try: await fail() except Boom``): what the caller would pay
   without a breaker while the dependency is down, minus the dependency's own latency. A
   rejection that costs less than raising and catching an exception out of a coroutine shows as
   a negative overhead. The same baseline is used for every library, so the ratio is fair.
4. **decorator**: scenario 1 through each library's decorator (``@breaker`` and friends).

Which form of each library is timed
-----------------------------------
* **breaker_machines**: ``with breaker.guard(): await work()`` is the headline figure for 1-3;
  ``await breaker.call(work)`` is shown too; scenario 4 is ``@breaker``. The same loops run
  under trio (its own bare baseline, measured in the trio run) for information.
* **pybreaker** (sync-only in practice: its ``call_async`` needs tornado): ``breaker.call(
  work_sync)`` on a *sync* work function against a bare *sync* call, inside the same event
  loop; scenario 4 is ``@breaker`` on the sync function.
* **circuitbreaker**: its decorator on the async function (the only async form that checks
  the open state; ``call_async`` does not) for 1-4.
* **aiobreaker**: ``await breaker.call_async(work)`` for 1-3, ``@breaker`` for 4.
* **purgatory**: ``async with await factory.get_breaker(name): await work()`` (its documented
  per-call form) for 1-3, ``@factory(name)`` for 4. It raises one shared ``OpenedState``
  instance on every rejection, whose traceback grows by a few frames per rejection (about
  1 KB each); the script clears it after each timed loop, outside the timing.

Before timing, every case is checked to be in the state the scenario claims (CLOSED, or OPEN
with the rejection really raised and the work not run; failures really counted), and checked
again after timing. A case that fails its check is reported as INVALID and not timed, and the
script exits with status 1.

How
---
Cases are calibrated once (N per case so a loop lasts about 20 ms, clamped to 50k..200k
calls; 2k..10k with ``--quick``), warmed up, then timed in R rounds (11; 3 with ``--quick``),
in a different shuffled order each round, with ``gc.collect()`` before each loop (the
collector stays enabled: cycles a library creates are part of its cost). A case's figure is
the minimum over rounds of ns/call (``--stat median`` for the median), and its overhead is
that minus its baseline's figure from the same run. The minimum is the default because noise
only ever adds time: on a shared machine some rounds run uniformly slower (another process on
the other core), which moves medians by tens of percent while minima stay within a few. The
other statistic's ratio is printed in brackets and kept in the JSON.

Goals (breaker_machines' headline form / the fastest peer's overhead in the same scenario):
success <= 0.5x, counted failure <= 0.5x, open rejection <= 0.6x, decorator <= 1.0x. A ratio
within 10% of its goal is flagged as borderline: it can land on either side from run to run.
"""

from __future__ import annotations

import os
import sys

import _environment  # benchmarks/_environment.py (run as a script: its folder is on the path)
import _harness  # benchmarks/_harness.py: checking, calibrating and timing cases
from _harness import BORDERLINE, Check, Loop, Settings, expect, figure, overhead

# aiobreaker and pybreaker import redis-py if they can: keep this directory off the import
# path, or ``import redis`` would import benchmarks/redis.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiobreaker  # noqa: E402
import circuitbreaker  # noqa: E402
import pybreaker  # noqa: E402
from purgatory import AsyncCircuitBreakerFactory  # noqa: E402
from purgatory.domain.model import OpenedState  # noqa: E402

from breaker_machines import Breaker, CircuitOpenError, State  # noqa: E402

perf_counter_ns = time.perf_counter_ns

HUGE = 2**31 - 1  # a failure threshold no run reaches (the largest count a Policy takes)
RESET = 3600  # seconds an open circuit stays open

SCENARIOS = {
    "success": "success",
    "failure": "counted failure",
    "open": "open rejection",
    "decorator": "decorator (success)",
}
GOALS = {"success": 0.5, "failure": 0.5, "open": 0.6, "decorator": 1.0}
PEERS = ("pybreaker", "circuitbreaker", "aiobreaker", "purgatory")
LIBRARIES = ("breaker_machines", *PEERS)


class Boom(Exception):
    """What a failing call raises (a fresh instance every time)."""


async def work() -> int:
    return 1


async def fail() -> int:
    raise Boom


def work_sync() -> int:
    return 1


def fail_sync() -> int:
    raise Boom


@dataclass
class Case:
    key: str
    scenario: str  # "baseline" or a key of SCENARIOS
    library: str
    form: str
    loop: Loop
    baseline: str | None = None
    check: Check | None = None
    headline: bool = False
    after: Callable[[], None] | None = None
    samples: list[float] = field(default_factory=list)
    calls: int = 0
    invalid: str | None = None


# ---------------------------------------------------------------------------- baselines


def baselines(prefix: str, *, sync: bool) -> list[Case]:
    async def async_ok(n: int) -> int:
        w = work
        t0 = perf_counter_ns()
        for _ in range(n):
            await w()
        return perf_counter_ns() - t0

    async def async_fail(n: int) -> int:
        f = fail
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105 (contextlib.suppress would be timed too)
                await f()
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def sync_ok(n: int) -> int:
        w = work_sync
        t0 = perf_counter_ns()
        for _ in range(n):
            w()
        return perf_counter_ns() - t0

    async def sync_fail(n: int) -> int:
        f = fail_sync
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                f()
            except Boom:
                pass
        return perf_counter_ns() - t0

    cases = [
        Case(f"{prefix}bare/async-ok", "baseline", "bare", "await work()", async_ok),
        Case(f"{prefix}bare/async-fail", "baseline", "bare", "await fail(), caught", async_fail),
    ]
    if sync:
        cases += [
            Case(f"{prefix}bare/sync-ok", "baseline", "bare", "work_sync()", sync_ok),
            Case(f"{prefix}bare/sync-fail", "baseline", "bare", "fail_sync(), caught", sync_fail),
        ]
    return cases


# ---------------------------------------------------------------------------- breaker_machines


def breaker_machines_cases(prefix: str = "") -> list[Case]:
    """Guard, call() and decorator in all scenarios; ``prefix`` keeps trio's keys apart."""
    ok = Breaker(f"{prefix}bm-ok")
    counted = Breaker(f"{prefix}bm-fail", consecutive_failures=HUGE)
    tripped = Breaker(f"{prefix}bm-open", consecutive_failures=1, reset_after=RESET)
    decorated_b = Breaker(f"{prefix}bm-deco")
    decorated = decorated_b(work)
    tripped_once = False

    async def trip() -> None:
        nonlocal tripped_once
        if not tripped_once:
            tripped_once = True
            with contextlib.suppress(Boom):
                await tripped.call(fail)

    def state_is(b: Breaker, state: State) -> None:
        expect(b.state is state, f"{b.name} is {b.state.value}, expected {state.value}")

    async def check_ok_guard() -> None:
        state_is(ok, State.CLOSED)
        before = ok.stats().successes
        with ok.guard():
            result = await work()
        expect(result == 1 and ok.stats().successes == before + 1, "success not counted")
        state_is(ok, State.CLOSED)

    async def check_ok_call() -> None:
        state_is(ok, State.CLOSED)
        before = ok.stats().successes
        result = await ok.call(work)
        expect(result == 1 and ok.stats().successes == before + 1, "success not counted")

    async def check_fail(form: str) -> None:
        state_is(counted, State.CLOSED)
        before = counted.stats().failures
        try:
            if form == "guard":
                with counted.guard():
                    await fail()
            else:
                await counted.call(fail)
        except Boom:
            pass
        else:
            raise AssertionError("the failure did not propagate")
        expect(counted.stats().failures == before + 1, "failure not counted")
        state_is(counted, State.CLOSED)

    async def check_open(form: str) -> None:
        await trip()
        state_is(tripped, State.OPEN)
        ran = False

        async def probe() -> int:
            nonlocal ran
            ran = True
            raise Boom

        try:
            if form == "guard":
                with tripped.guard():
                    await probe()
            else:
                await tripped.call(probe)
        except CircuitOpenError:
            pass
        except Boom:
            pass
        expect(not ran, f"breaker.{form}() admitted a call while the circuit was OPEN")
        state_is(tripped, State.OPEN)

    async def check_deco() -> None:
        state_is(decorated_b, State.CLOSED)
        expect(await decorated() == 1, "decorated call did not return the result")

    async def guard_ok(n: int) -> int:
        w, g = work, ok.guard
        t0 = perf_counter_ns()
        for _ in range(n):
            with g():
                await w()
        return perf_counter_ns() - t0

    async def call_ok(n: int) -> int:
        w, c = work, ok.call
        t0 = perf_counter_ns()
        for _ in range(n):
            await c(w)
        return perf_counter_ns() - t0

    async def guard_fail(n: int) -> int:
        f, g = fail, counted.guard
        t0 = perf_counter_ns()
        for _ in range(n):
            try:
                with g():
                    await f()
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def call_fail(n: int) -> int:
        f, c = fail, counted.call
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                await c(f)
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def guard_open(n: int) -> int:
        f, g = fail, tripped.guard
        t0 = perf_counter_ns()
        for _ in range(n):
            try:
                with g():
                    await f()
            except CircuitOpenError:
                pass
        return perf_counter_ns() - t0

    async def call_open(n: int) -> int:
        f, c = fail, tripped.call
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                await c(f)
            except CircuitOpenError:
                pass
        return perf_counter_ns() - t0

    async def deco_ok(n: int) -> int:
        w = decorated
        t0 = perf_counter_ns()
        for _ in range(n):
            await w()
        return perf_counter_ns() - t0

    lib = "breaker_machines"
    ok_base, fail_base = f"{prefix}bare/async-ok", f"{prefix}bare/async-fail"
    p = prefix
    return [
        Case(
            f"{p}success/bm/guard",
            "success",
            lib,
            "with breaker.guard()",
            guard_ok,
            ok_base,
            check_ok_guard,
            headline=True,
        ),
        Case(
            f"{p}success/bm/call",
            "success",
            lib,
            "await breaker.call(work)",
            call_ok,
            ok_base,
            check_ok_call,
        ),
        Case(
            f"{p}failure/bm/guard",
            "failure",
            lib,
            "with breaker.guard()",
            guard_fail,
            fail_base,
            lambda: check_fail("guard"),
            headline=True,
        ),
        Case(
            f"{p}failure/bm/call",
            "failure",
            lib,
            "await breaker.call(fail)",
            call_fail,
            fail_base,
            lambda: check_fail("call"),
        ),
        Case(
            f"{p}open/bm/guard",
            "open",
            lib,
            "with breaker.guard()",
            guard_open,
            fail_base,
            lambda: check_open("guard"),
            headline=True,
        ),
        Case(
            f"{p}open/bm/call",
            "open",
            lib,
            "await breaker.call(fail)",
            call_open,
            fail_base,
            lambda: check_open("call"),
        ),
        Case(
            f"{p}decorator/bm",
            "decorator",
            lib,
            "@breaker",
            deco_ok,
            ok_base,
            check_deco,
            headline=True,
        ),
    ]


# ---------------------------------------------------------------------------- pybreaker


def pybreaker_cases() -> list[Case]:
    ok = pybreaker.CircuitBreaker(name="pyb-ok")
    counted = pybreaker.CircuitBreaker(fail_max=HUGE, name="pyb-fail")
    tripped = pybreaker.CircuitBreaker(reset_timeout=RESET, name="pyb-open")
    tripped.open()
    decorated_b = pybreaker.CircuitBreaker(name="pyb-deco")
    decorated = decorated_b(work_sync)

    def state_is(b: pybreaker.CircuitBreaker, state: str) -> None:
        expect(b.current_state == state, f"{b.name} is {b.current_state}, expected {state}")

    async def check_ok() -> None:
        state_is(ok, pybreaker.STATE_CLOSED)
        expect(ok.call(work_sync) == 1, "call did not return the result")

    async def check_fail() -> None:
        state_is(counted, pybreaker.STATE_CLOSED)
        before = counted.fail_counter
        with contextlib.suppress(Boom):
            counted.call(fail_sync)
        expect(counted.fail_counter == before + 1, "failure not counted")
        state_is(counted, pybreaker.STATE_CLOSED)

    async def check_open() -> None:
        state_is(tripped, pybreaker.STATE_OPEN)
        try:
            tripped.call(fail_sync)
        except pybreaker.CircuitBreakerError:
            pass
        else:
            raise AssertionError("the open circuit admitted the call")
        state_is(tripped, pybreaker.STATE_OPEN)

    async def check_deco() -> None:
        state_is(decorated_b, pybreaker.STATE_CLOSED)
        expect(decorated() == 1, "decorated call did not return the result")

    async def call_ok(n: int) -> int:
        w, c = work_sync, ok.call
        t0 = perf_counter_ns()
        for _ in range(n):
            c(w)
        return perf_counter_ns() - t0

    async def call_fail(n: int) -> int:
        f, c = fail_sync, counted.call
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                c(f)
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def call_open(n: int) -> int:
        f, c = fail_sync, tripped.call
        error = pybreaker.CircuitBreakerError
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                c(f)
            except error:
                pass
        return perf_counter_ns() - t0

    async def deco_ok(n: int) -> int:
        w = decorated
        t0 = perf_counter_ns()
        for _ in range(n):
            w()
        return perf_counter_ns() - t0

    lib = "pybreaker"
    return [
        Case(
            "success/pybreaker",
            "success",
            lib,
            "breaker.call(work_sync) [sync]",
            call_ok,
            "bare/sync-ok",
            check_ok,
            headline=True,
        ),
        Case(
            "failure/pybreaker",
            "failure",
            lib,
            "breaker.call(fail_sync) [sync]",
            call_fail,
            "bare/sync-fail",
            check_fail,
            headline=True,
        ),
        Case(
            "open/pybreaker",
            "open",
            lib,
            "breaker.call(fail_sync) [sync]",
            call_open,
            "bare/sync-fail",
            check_open,
            headline=True,
        ),
        Case(
            "decorator/pybreaker",
            "decorator",
            lib,
            "@breaker on work_sync [sync]",
            deco_ok,
            "bare/sync-ok",
            check_deco,
            headline=True,
        ),
    ]


# ---------------------------------------------------------------------------- circuitbreaker


def circuitbreaker_cases() -> list[Case]:
    cb = circuitbreaker.CircuitBreaker
    ok_b = cb(name="cb-ok")
    counted_b = cb(failure_threshold=HUGE, name="cb-fail")
    tripped_b = cb(failure_threshold=1, recovery_timeout=RESET, name="cb-open")
    deco_b = cb(name="cb-deco")
    ok, counted, tripped, decorated = ok_b(work), counted_b(fail), tripped_b(fail), deco_b(work)
    tripped_once = False

    def state_is(b: circuitbreaker.CircuitBreaker, state: str) -> None:
        expect(b.state == state, f"{b.name} is {b.state}, expected {state}")

    async def check_ok() -> None:
        state_is(ok_b, circuitbreaker.STATE_CLOSED)
        expect(await ok() == 1, "call did not return the result")

    async def check_fail() -> None:
        state_is(counted_b, circuitbreaker.STATE_CLOSED)
        before = counted_b.failure_count
        with contextlib.suppress(Boom):
            await counted()
        expect(counted_b.failure_count == before + 1, "failure not counted")
        state_is(counted_b, circuitbreaker.STATE_CLOSED)

    async def check_open() -> None:
        nonlocal tripped_once
        if not tripped_once:
            tripped_once = True
            with contextlib.suppress(Boom):
                await tripped()
        state_is(tripped_b, circuitbreaker.STATE_OPEN)
        try:
            await tripped()
        except circuitbreaker.CircuitBreakerError:
            pass
        else:
            raise AssertionError("the open circuit admitted the call")
        state_is(tripped_b, circuitbreaker.STATE_OPEN)

    async def check_deco() -> None:
        state_is(deco_b, circuitbreaker.STATE_CLOSED)
        expect(await decorated() == 1, "decorated call did not return the result")

    async def deco_ok(n: int) -> int:
        w = ok
        t0 = perf_counter_ns()
        for _ in range(n):
            await w()
        return perf_counter_ns() - t0

    async def deco_fail(n: int) -> int:
        f = counted
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                await f()
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def deco_open(n: int) -> int:
        f = tripped
        error = circuitbreaker.CircuitBreakerError
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                await f()
            except error:
                pass
        return perf_counter_ns() - t0

    async def deco_ok2(n: int) -> int:
        w = decorated
        t0 = perf_counter_ns()
        for _ in range(n):
            await w()
        return perf_counter_ns() - t0

    lib, form = "circuitbreaker", "@circuit on the async function"
    return [
        Case(
            "success/circuitbreaker",
            "success",
            lib,
            form,
            deco_ok,
            "bare/async-ok",
            check_ok,
            headline=True,
        ),
        Case(
            "failure/circuitbreaker",
            "failure",
            lib,
            form,
            deco_fail,
            "bare/async-fail",
            check_fail,
            headline=True,
        ),
        Case(
            "open/circuitbreaker",
            "open",
            lib,
            form,
            deco_open,
            "bare/async-fail",
            check_open,
            headline=True,
        ),
        Case(
            "decorator/circuitbreaker",
            "decorator",
            lib,
            form,
            deco_ok2,
            "bare/async-ok",
            check_deco,
            headline=True,
        ),
    ]


# ---------------------------------------------------------------------------- aiobreaker


def aiobreaker_cases() -> list[Case]:
    closed_state = aiobreaker.CircuitBreakerState.CLOSED
    open_state = aiobreaker.CircuitBreakerState.OPEN
    ok = aiobreaker.CircuitBreaker(name="aio-ok")
    counted = aiobreaker.CircuitBreaker(fail_max=HUGE, name="aio-fail")
    tripped = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=RESET), name="aio-open")
    tripped.open()
    deco_b = aiobreaker.CircuitBreaker(name="aio-deco")
    decorated = deco_b(work)

    def state_is(b: aiobreaker.CircuitBreaker, state: Any) -> None:
        expect(b.current_state is state, f"{b.name} is {b.current_state}, expected {state}")

    async def check_ok() -> None:
        state_is(ok, closed_state)
        expect(await ok.call_async(work) == 1, "call did not return the result")

    async def check_fail() -> None:
        state_is(counted, closed_state)
        before = counted.fail_counter
        with contextlib.suppress(Boom):
            await counted.call_async(fail)
        expect(counted.fail_counter == before + 1, "failure not counted")
        state_is(counted, closed_state)

    async def check_open() -> None:
        state_is(tripped, open_state)
        try:
            await tripped.call_async(fail)
        except aiobreaker.CircuitBreakerError:
            pass
        else:
            raise AssertionError("the open circuit admitted the call")
        state_is(tripped, open_state)

    async def check_deco() -> None:
        state_is(deco_b, closed_state)
        expect(await decorated() == 1, "decorated call did not return the result")

    async def call_ok(n: int) -> int:
        w, c = work, ok.call_async
        t0 = perf_counter_ns()
        for _ in range(n):
            await c(w)
        return perf_counter_ns() - t0

    async def call_fail(n: int) -> int:
        f, c = fail, counted.call_async
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                await c(f)
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def call_open(n: int) -> int:
        f, c = fail, tripped.call_async
        error = aiobreaker.CircuitBreakerError
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                await c(f)
            except error:
                pass
        return perf_counter_ns() - t0

    async def deco_ok(n: int) -> int:
        w = decorated
        t0 = perf_counter_ns()
        for _ in range(n):
            await w()
        return perf_counter_ns() - t0

    lib, form = "aiobreaker", "await breaker.call_async(fn)"
    return [
        Case(
            "success/aiobreaker",
            "success",
            lib,
            form,
            call_ok,
            "bare/async-ok",
            check_ok,
            headline=True,
        ),
        Case(
            "failure/aiobreaker",
            "failure",
            lib,
            form,
            call_fail,
            "bare/async-fail",
            check_fail,
            headline=True,
        ),
        Case(
            "open/aiobreaker",
            "open",
            lib,
            form,
            call_open,
            "bare/async-fail",
            check_open,
            headline=True,
        ),
        Case(
            "decorator/aiobreaker",
            "decorator",
            lib,
            "@breaker",
            deco_ok,
            "bare/async-ok",
            check_deco,
            headline=True,
        ),
    ]


# ---------------------------------------------------------------------------- purgatory


def purgatory_cases() -> list[Case]:
    # One factory per scenario, so the timed loops call get_breaker(name) with no options.
    ok_f = AsyncCircuitBreakerFactory(default_ttl=RESET)
    fail_f = AsyncCircuitBreakerFactory(default_threshold=HUGE, default_ttl=RESET)
    open_f = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=RESET)
    deco_f = AsyncCircuitBreakerFactory(default_ttl=RESET)
    decorated = deco_f("pg-deco")(work)
    tripped_once = False

    async def state_is(factory: AsyncCircuitBreakerFactory, name: str, state: str) -> Any:
        context = (await factory.get_breaker(name)).context
        expect(context.state == state, f"{name} is {context.state}, expected {state}")
        return context

    async def check_ok() -> None:
        await state_is(ok_f, "pg-ok", "closed")
        async with await ok_f.get_breaker("pg-ok"):
            result = await work()
        expect(result == 1, "call did not return the result")
        await state_is(ok_f, "pg-ok", "closed")

    async def check_fail() -> None:
        context = await state_is(fail_f, "pg-fail", "closed")
        before = context.failure_count
        try:
            async with await fail_f.get_breaker("pg-fail"):
                await fail()
        except Boom:
            pass
        expect(context.failure_count == before + 1, "failure not counted")
        await state_is(fail_f, "pg-fail", "closed")

    async def check_open() -> None:
        nonlocal tripped_once
        if not tripped_once:
            tripped_once = True
            try:
                async with await open_f.get_breaker("pg-open"):
                    await fail()
            except Boom:
                pass
        await state_is(open_f, "pg-open", "opened")
        try:
            async with await open_f.get_breaker("pg-open"):
                await fail()
        except OpenedState:
            pass
        else:
            raise AssertionError("the open circuit admitted the call")
        await state_is(open_f, "pg-open", "opened")
        clear_traceback()

    def clear_traceback() -> None:
        # purgatory raises the same OpenedState instance on every rejection; its traceback
        # grows with each one (memory only). Cleared between loops, outside the timing.
        for context in open_f.uow.contexts.breakers.values():  # type: ignore[attr-defined]
            state = context._state
            if isinstance(state, BaseException):
                state.__traceback__ = None

    async def check_deco() -> None:
        expect(await decorated() == 1, "decorated call did not return the result")
        await state_is(deco_f, "pg-deco", "closed")

    async def with_ok(n: int) -> int:
        w, get = work, ok_f.get_breaker
        t0 = perf_counter_ns()
        for _ in range(n):
            async with await get("pg-ok"):
                await w()
        return perf_counter_ns() - t0

    async def with_fail(n: int) -> int:
        f, get = fail, fail_f.get_breaker
        t0 = perf_counter_ns()
        for _ in range(n):
            try:
                async with await get("pg-fail"):
                    await f()
            except Boom:
                pass
        return perf_counter_ns() - t0

    async def with_open(n: int) -> int:
        f, get = fail, open_f.get_breaker
        t0 = perf_counter_ns()
        for _ in range(n):
            try:
                async with await get("pg-open"):
                    await f()
            except OpenedState:
                pass
        return perf_counter_ns() - t0

    async def deco_ok(n: int) -> int:
        w = decorated
        t0 = perf_counter_ns()
        for _ in range(n):
            await w()
        return perf_counter_ns() - t0

    lib, form = "purgatory", "async with await factory.get_breaker(name)"
    return [
        Case(
            "success/purgatory",
            "success",
            lib,
            form,
            with_ok,
            "bare/async-ok",
            check_ok,
            headline=True,
        ),
        Case(
            "failure/purgatory",
            "failure",
            lib,
            form,
            with_fail,
            "bare/async-fail",
            check_fail,
            headline=True,
        ),
        Case(
            "open/purgatory",
            "open",
            lib,
            form,
            with_open,
            "bare/async-fail",
            check_open,
            headline=True,
            after=clear_traceback,
        ),
        Case(
            "decorator/purgatory",
            "decorator",
            lib,
            "@factory(name)",
            deco_ok,
            "bare/async-ok",
            check_deco,
            headline=True,
        ),
    ]


# ---------------------------------------------------------------------------- measuring


async def measure(cases: list[Case], settings: Settings, label: str) -> None:
    """Check, calibrate (the warm-up), then time every valid case in shuffled rounds; a case's
    ``after`` runs after each of its loops, outside the timing."""
    await _harness.measure(cases, settings, label=label, probe=2_000, step=1_000, after=run_after)


def run_after(case: Case) -> None:
    if case.after is not None:
        case.after()


# ---------------------------------------------------------------------------- reporting


def fmt(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.0f}" if value is not None else f"{'n/a':>{width}}"


def summarise(cases: list[Case], trio_cases: list[Case], stat: str) -> dict[str, Any]:
    by_key = {case.key: case for case in [*cases, *trio_cases]}
    result: dict[str, Any] = {}
    for scenario, title in SCENARIOS.items():
        heads = {c.library: c for c in cases if c.scenario == scenario and c.headline}
        overheads = {lib: overhead(heads[lib], by_key, stat) for lib in LIBRARIES if lib in heads}
        peers = {lib: v for lib, v in overheads.items() if lib in PEERS and v is not None}
        fastest = min(peers, key=lambda lib: peers[lib]) if peers else None
        bm = overheads.get("breaker_machines")
        ratio = None
        if fastest is not None and bm is not None and peers[fastest] > 0:
            ratio = bm / peers[fastest]
        goal = GOALS[scenario]
        trio = next((c for c in trio_cases if c.scenario == scenario and c.headline), None)
        result[scenario] = {
            "title": title,
            "overhead_ns": overheads,
            "invalid": {lib: c.invalid for lib, c in heads.items() if c.invalid},
            "fastest_peer": fastest,
            "fastest_peer_ns": peers.get(fastest) if fastest else None,
            "ratio": ratio,
            "goal": goal,
            "met": None if ratio is None else ratio <= goal,
            "breaker_machines_trio_ns": overhead(trio, by_key, stat) if trio else None,
        }
    return result


def print_details(cases: list[Case], trio_cases: list[Case], stat: str) -> None:
    by_key = {case.key: case for case in [*cases, *trio_cases]}
    other = "median" if stat == "min" else "min"
    print(
        f"\nPer case: ns/call ({stat} of rounds), overhead = minus its baseline "
        f"({other}-based overhead in brackets)."
    )
    groups = [("baseline", "bare calls (asyncio)"), *SCENARIOS.items()]
    for scenario, title in groups:
        print(f"\n  {title}")
        rows = [c for c in cases if c.scenario == scenario]
        rows += [c for c in trio_cases if c.scenario == scenario]
        for case in rows:
            runtime = "trio   " if case in trio_cases else "asyncio"
            name = f"{case.library}: {case.form}"
            if case.invalid is not None:
                print(f"    {runtime} {name:<62} INVALID ({case.invalid})")
                continue
            line = f"    {runtime} {name:<62} {fmt(figure(case, stat))} ns"
            if case.baseline is not None:
                line += (
                    f"  overhead {fmt(overhead(case, by_key, stat))} ns"
                    f"  [{fmt(overhead(case, by_key, other), 0).strip()}]"
                )
            line += f"  (N={case.calls:,})"
            print(line)


def print_summary(summary: dict[str, Any], other: dict[str, Any], stat: str) -> None:
    print(
        f"\nOverhead per call in ns ({stat} of rounds, minus the bare call); "
        "ratio = breaker_machines / fastest peer."
    )
    headers = ["scenario", *LIBRARIES, "ratio", "goal", "status", "bm (trio)"]
    widths = [20, 16, 10, 14, 10, 9, 6, 6, 7, 9]
    print(
        "  "
        + "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    for row in summary.values():
        cells = [row["title"]]
        cells += [
            "INVALID" if lib in row["invalid"] else fmt(row["overhead_ns"].get(lib), 0).strip()
            for lib in LIBRARIES
        ]
        ratio = row["ratio"]
        cells.append(f"{ratio:.2f}x" if ratio is not None else "n/a")
        cells.append(f"<={row['goal']:.1f}x")
        cells.append({True: "MET", False: "MISSED", None: "n/a"}[row["met"]])
        cells.append(fmt(row["breaker_machines_trio_ns"], 0).strip())
        print(
            "  "
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    print(
        "\n  pybreaker is timed on a sync work function against a bare sync call (its "
        "call_async needs tornado).\n  circuitbreaker is timed through its decorator in every "
        "scenario; aiobreaker through call_async (decorator in the last row);\n  purgatory "
        "through `async with await factory.get_breaker(name)` (decorator in the last row).\n"
        "  Open rejection is measured against the bare failing call, caught."
    )
    other_stat = "median" if stat == "min" else "min"
    print(f"\nGoals (by the {stat}; the {other_stat}-based ratio in brackets):")
    for scenario, row in summary.items():
        status = {True: "MET", False: "MISSED", None: "cannot tell"}[row["met"]]
        if row["ratio"] is not None and abs(row["ratio"] / row["goal"] - 1.0) < BORDERLINE:
            status += f" (borderline: within {BORDERLINE:.0%} of the goal)"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
        ratio2 = other[scenario]["ratio"]
        ratio += f" [{ratio2:.2f}x]" if ratio2 is not None else " [n/a]"
        fastest = row["fastest_peer"] or "none"
        print(
            f"  {row['title']:<20} breaker_machines <= {row['goal']:.1f}x fastest peer "
            f"({fastest}): {ratio} -> {status}"
        )


def environment(settings: Settings) -> dict[str, Any]:
    versions = _environment.versions("breaker-machines", "anyio", "trio", *PEERS)
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "versions": versions,
        "rounds": settings.rounds,
        "calls_per_loop": [settings.min_calls, settings.max_calls],
        "stat": settings.stat,
    }
    git = _environment.checkout()
    if git:
        info["git"] = git
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--rounds", type=int, help="rounds of timing (default 11, quick 3)")
    parser.add_argument(
        "--stat",
        choices=("min", "median"),
        default="min",
        help="how rounds are combined (default: min)",
    )
    parser.add_argument("--no-trio", action="store_true", help="skip the trio measurements")
    args = parser.parse_args(argv)
    if args.quick:
        settings = Settings(args.rounds or 3, 2_000, 10_000, 2_000_000, args.stat)
    else:
        settings = Settings(args.rounds or 11, 50_000, 200_000, 20_000_000, args.stat)

    started = time.perf_counter()
    cases = [
        *baselines("", sync=True),
        *breaker_machines_cases(),
        *pybreaker_cases(),
        *circuitbreaker_cases(),
        *aiobreaker_cases(),
        *purgatory_cases(),
    ]
    asyncio.run(measure(cases, settings, "asyncio"))
    trio_cases: list[Case] = []
    if not args.no_trio:
        import trio

        trio_cases = [*baselines("trio:", sync=False), *breaker_machines_cases("trio:")]
        trio.run(measure, trio_cases, settings, "trio")
    elapsed = time.perf_counter() - started

    env = environment(settings)
    print(
        f"breaker_machines {env['versions']['breaker-machines']} vs peers on Python "
        f"{env['python']} ({env['platform']}); {settings.rounds} rounds, "
        f"{settings.min_calls:,}..{settings.max_calls:,} calls per loop; {elapsed:.0f}s."
    )
    if env.get("git", {}).get("src_modified"):
        print(f"Note: src/ has uncommitted changes (HEAD {env['git']['head']}).")
    print_details(cases, trio_cases, settings.stat)
    summary = summarise(cases, trio_cases, settings.stat)
    other = summarise(cases, trio_cases, "median" if settings.stat == "min" else "min")
    print_summary(summary, other, settings.stat)
    invalid = [c for c in [*cases, *trio_cases] if c.invalid is not None]
    if invalid:
        print("\nINVALID cases (not in the state the scenario needs; not timed or not trusted):")
        for case in invalid:
            print(f"  {case.key}: {case.invalid}")

    if args.json:
        by_key = {case.key: case for case in [*cases, *trio_cases]}
        payload = {
            "environment": env,
            "seconds": elapsed,
            "goals": GOALS,
            "summary": summary,
            "summary_other_stat": other,
            "cases": {
                case.key: {
                    "runtime": "trio" if case in trio_cases else "asyncio",
                    "scenario": case.scenario,
                    "library": case.library,
                    "form": case.form,
                    "baseline": case.baseline,
                    "headline": case.headline,
                    "calls_per_loop": case.calls,
                    "ns_per_call_samples": case.samples,
                    "ns_per_call_min": min(case.samples) if case.samples else None,
                    "ns_per_call_median": (
                        statistics.median(case.samples) if case.samples else None
                    ),
                    "overhead_ns_min": overhead(case, by_key, "min"),
                    "overhead_ns_median": overhead(case, by_key, "median"),
                    "invalid": case.invalid,
                }
                for case in [*cases, *trio_cases]
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nWrote {args.json}")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
