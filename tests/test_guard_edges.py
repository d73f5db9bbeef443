"""Guard paths that only rarely run: waiting for a bulkhead slot (and being cancelled or
timed out while waiting), a shared half-open probe meeting a full bulkhead, a probe the
fleet refuses, a guard cancelled while asking the fleet for its permit, and the slow paths
of the base class (type rules that match nothing, ``failure_if`` raising, a full queue of
async callbacks, rejections logged while DEBUG is off).

Shared storage runs on the real Redis and PostgreSQL (``open_storage``), every async test
under asyncio and trio; nothing sleeps: the tests wait on the bulkhead's own statistics.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from tests.conftest import FakeClock, Opener
from tests.helpers import Boom, fail, succeed, trip

from breaker_machines import (
    Breaker,
    BulkheadFullError,
    CircuitOpenError,
    Rejection,
    State,
    Transition,
    _base,
)
from breaker_machines.storage import SharedStorage

LIMIT = 30.0
LEASE = 60.0


def limiter_of(breaker: Breaker) -> anyio.CapacityLimiter:
    limiter = breaker._limiter
    assert limiter is not None
    return limiter


async def until_waiting(breaker: Breaker, count: int = 1) -> None:
    """Yield until ``count`` guards wait for a slot of ``breaker``'s bulkhead."""
    limiter = limiter_of(breaker)
    while limiter.statistics().tasks_waiting < count:
        await anyio.lowlevel.checkpoint()


async def hold_the_slot(
    breaker: Breaker,
    release: anyio.Event,
    order: list[str],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Hold a slot of ``breaker``'s bulkhead (a guard) until ``release`` is set; ``order``
    gets "holder in" once it holds it (``tg.start`` returns then) and "holder out" before
    it lets it go."""
    async with breaker.guard():
        order.append("holder in")
        task_status.started()
        await release.wait()
        order.append("holder out")


def when_waiting(tg: anyio.abc.TaskGroup, breaker: Breaker, then: Callable[[], object]) -> None:
    """Call ``then()`` (in ``tg``) once a guard waits for a slot of ``breaker``'s bulkhead."""

    async def watch() -> None:
        await until_waiting(breaker)
        then()

    tg.start_soon(watch)


def storage_of(breaker: Breaker) -> SharedStorage:
    replica = breaker._replica
    assert replica is not None
    return replica.storage


@asynccontextmanager
async def half_open_breaker(
    open_storage: Opener, clock: FakeClock, name: str, **options: Any
) -> AsyncIterator[Breaker]:
    """A breaker on shared storage, tripped (OPEN written), its clocks past reset_after."""
    async with open_storage() as store:
        breaker = Breaker(
            name,
            storage=store,
            clock=clock,
            consecutive_failures=1,
            reset_after=10.0,
            probe_lease=LEASE,
            **options,
        )
        await breaker.sync()
        await trip(breaker)
        await breaker.sync()
        clock.advance(10.5)
        store.advance_clock(10.5)
        yield breaker


async def fleet_probes(breaker: Breaker) -> int:
    """The fleet's half-open permits out, as stored (after this breaker's sync)."""
    await breaker.sync()
    return (await storage_of(breaker).inspect(breaker.name)).record.probes


# ------------------------------------------------------------------ memory storage


@pytest.mark.anyio
async def test_sync_without_shared_storage_changes_nothing() -> None:
    breaker = Breaker("memory", consecutive_failures=3)
    with pytest.raises(Boom):
        await breaker.call(fail)
    before = breaker.stats()
    await breaker.sync()
    assert breaker.stats() == before
    assert before.failures == 1
    assert before.state is State.CLOSED


def test_plain_guard_failures_without_an_event_log() -> None:
    breaker = Breaker("no log", consecutive_failures=3, event_log=0)
    assert breaker._events is None
    for _ in range(2):
        with pytest.raises(Boom), breaker.guard():
            raise Boom("down")
    stats = breaker.stats()
    assert (stats.failures, stats.consecutive_failures) == (2, 2)
    assert breaker.state is State.CLOSED
    with pytest.raises(Boom), breaker.guard():
        raise Boom("down")
    assert breaker.state is State.OPEN
    assert breaker.stats().trips == 1


@pytest.mark.anyio
async def test_a_guard_cancelled_while_waiting_for_a_slot() -> None:
    breaker = Breaker("waiting", max_concurrent=1, bulkhead_wait=LIMIT)
    release = anyio.Event()
    admitted: list[str] = []
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(hold_the_slot, breaker, release, admitted)
            with anyio.CancelScope() as scope:
                when_waiting(tg, breaker, scope.cancel)
                async with breaker.guard():
                    admitted.append("waiter")  # pragma: no cover - cancelled first
            assert scope.cancelled_caught
            release.set()
    stats = breaker.stats()
    assert admitted == ["holder in", "holder out"]
    assert (stats.successes, stats.cancelled, stats.bulkhead_rejections) == (1, 1, 0)
    assert limiter_of(breaker).borrowed_tokens == 0


# ------------------------------------------------------------------ failure_if, type rules


@pytest.mark.anyio
async def test_failure_if_raising_counts_the_result_as_a_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(result: object) -> bool:
        raise ZeroDivisionError("predicate bug")

    breaker = Breaker("refuses", failure_if=broken)
    with caplog.at_level(logging.ERROR, logger="breaker_machines"):
        assert await breaker.call(succeed) == "ok"
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (1, 0)
    (record,) = [r for r in caplog.records if "failure_if raised" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError


@pytest.mark.parametrize(("as_success", "counted"), [(False, "ignored"), (True, "successes")])
def test_an_exception_no_type_rule_names(as_success: bool, counted: str) -> None:
    breaker = Breaker(
        "typed", record=[KeyError], consecutive_failures=1, ignored_counts_as_success=as_success
    )
    for _ in range(2):  # the second time the remembered class decides
        with pytest.raises(ValueError, match="bad input"), breaker.guard():
            raise ValueError("bad input")
    stats = breaker.stats()
    assert getattr(stats, counted) == 2
    assert stats.failures == 0
    assert breaker.state is State.CLOSED
    with pytest.raises(KeyError), breaker.guard():
        raise KeyError("recorded")
    assert breaker.state is State.OPEN


def test_a_probe_raising_an_ignored_exception_frees_its_permit(clock: FakeClock) -> None:
    breaker = Breaker(
        "ignored probe", ignore=[KeyError], consecutive_failures=1, reset_after=10.0, clock=clock
    )
    with pytest.raises(Boom), breaker.guard():
        raise Boom
    clock.advance(10.0)
    with pytest.raises(KeyError), breaker.guard():
        assert breaker.state is State.HALF_OPEN
        raise KeyError("not the dependency's fault")
    stats = breaker.stats()
    assert stats.state is State.HALF_OPEN
    assert (stats.ignored, stats.probes_in_flight) == (1, 0)
    with breaker.guard():  # the only permit is free again: the next call probes
        pass
    assert breaker.state is State.CLOSED


# ------------------------------------------------------------------ callbacks and logging


def test_async_callbacks_beyond_the_queue_bound_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    created: list[Awaitable[None]] = []

    async def later(payload: object) -> None:  # pragma: no cover - never run: no runner
        pass

    def coroutine_returning(transition: Transition) -> Awaitable[None]:
        awaitable = later(transition)
        created.append(awaitable)
        return awaitable

    breaker = Breaker("queue", on_reject=later, on_close=coroutine_returning)
    breaker.force_open()
    bound = _base._MAX_PENDING_CALLBACKS
    with caplog.at_level(logging.WARNING, logger="breaker_machines"):
        for _ in range(bound + 1):
            with pytest.raises(CircuitOpenError), breaker.guard():
                pass
        assert breaker.stats().callbacks_dropped == 1  # the rejection past the bound
        breaker.force_close()  # on_close returns a coroutine: dropped and closed
    stats = breaker.stats()
    assert (stats.rejections, stats.callbacks_dropped) == (bound + 1, 2)
    assert len(breaker._pending) == bound
    (coroutine,) = created
    assert inspect.iscoroutine(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
    dropped = [r.getMessage() for r in caplog.records if "waiting for a runner" in r.getMessage()]
    assert len(dropped) == 2
    assert "dropped on_reject" in dropped[0]
    assert "dropped on_close" in dropped[1]


def test_the_level_cache_is_hooked_once() -> None:
    logger = logging.getLogger("breaker_machines")
    hooked = _base._LEVEL_CACHE
    assert hooked is not None
    assert getattr(logger, "_cache", None) is hooked
    assert _base._hook_level_cache() is None  # already a _LevelCache: not wrapped again
    assert getattr(logger, "_cache", None) is hooked


def test_a_rejection_with_debug_off_and_a_foreign_level_cache(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = logging.getLogger("breaker_machines")
    caplog.set_level(logging.INFO, logger="breaker_machines")  # DEBUG off
    monkeypatch.setattr(_base._LOG, "debug", True)
    breaker = Breaker("foreign cache")
    breaker.force_open()
    monkeypatch.setattr(logger, "_cache", {})  # not the cache the module hooked
    for _ in range(2):
        with pytest.raises(CircuitOpenError), breaker.guard():
            pass
    # Every rejection still asks the logger: the switch is only turned off through the
    # hooked cache, which a level change would clear.
    assert _base._LOG.debug is True
    monkeypatch.undo()
    monkeypatch.setattr(_base._LOG, "debug", True)
    with pytest.raises(CircuitOpenError), breaker.guard():
        pass
    assert _base._LOG.debug is False  # through the hooked cache: off until a level change
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert breaker.stats().rejections == 3


# ------------------------------------------------------------------ shared storage


@pytest.mark.anyio
async def test_a_shared_closed_circuit_waits_for_a_bulkhead_slot(open_storage: Opener) -> None:
    release = anyio.Event()
    order: list[str] = []
    with anyio.fail_after(LIMIT):
        async with open_storage() as store:
            breaker = Breaker("shared wait", storage=store, max_concurrent=1, bulkhead_wait=LIMIT)
            await breaker.sync()
            async with anyio.create_task_group() as tg:
                await tg.start(hold_the_slot, breaker, release, order)
                when_waiting(tg, breaker, release.set)
                async with breaker.guard():
                    order.append("waiter in")
            await breaker.sync()
    assert order == ["holder in", "holder out", "waiter in"]
    stats = breaker.stats()
    assert (stats.successes, stats.bulkhead_rejections, stats.delivered) == (2, 0, 2)


@pytest.mark.anyio
async def test_a_shared_probe_meets_a_full_bulkhead(open_storage: Opener, clock: FakeClock) -> None:
    with anyio.fail_after(LIMIT):
        async with half_open_breaker(
            open_storage, clock, "probe bulkhead", half_open_probes=2, max_concurrent=1
        ) as breaker:
            async with breaker.guard():
                assert breaker.state is State.HALF_OPEN
                assert await fleet_probes(breaker) == 1
                with pytest.raises(BulkheadFullError):
                    async with breaker.guard():
                        pytest.fail("admitted past the bulkhead")
                # The refused guard had taken a fleet permit: it gave it back.
                assert await fleet_probes(breaker) == 1
                stats = breaker.stats()
                assert (stats.bulkhead_rejections, stats.probes_in_flight) == (1, 1)
            await breaker.sync()
            assert breaker.state is State.CLOSED
            assert await fleet_probes(breaker) == 0


@pytest.mark.parametrize("ending", ["admitted", "timed out", "cancelled"])
@pytest.mark.anyio
async def test_a_shared_probe_waits_for_a_bulkhead_slot(
    open_storage: Opener, clock: FakeClock, ending: str
) -> None:
    wait = 0.01 if ending == "timed out" else LIMIT
    release = anyio.Event()
    order: list[str] = []
    with anyio.fail_after(LIMIT):
        async with half_open_breaker(
            open_storage,
            clock,
            "probe wait",
            half_open_probes=2,
            success_threshold=2,
            max_concurrent=1,
            bulkhead_wait=wait,
        ) as breaker:
            async with anyio.create_task_group() as tg:
                await tg.start(hold_the_slot, breaker, release, order)
                assert breaker.state is State.HALF_OPEN
                if ending == "admitted":
                    when_waiting(tg, breaker, release.set)
                    async with breaker.guard():
                        order.append("waiter in")
                elif ending == "timed out":
                    with pytest.raises(BulkheadFullError):
                        async with breaker.guard():
                            pytest.fail("admitted past the bulkhead")
                    assert breaker.stats().probes_in_flight == 1  # its permit went back
                    release.set()
                else:
                    with anyio.CancelScope() as scope:
                        when_waiting(tg, breaker, scope.cancel)
                        async with breaker.guard():
                            pytest.fail("admitted although cancelled")
                    assert scope.cancelled_caught
                    stats = breaker.stats()
                    assert (stats.cancelled, stats.probes_in_flight) == (1, 1)
                    release.set()
            await breaker.sync()
            stats = breaker.stats()
            if ending == "admitted":
                assert order == ["holder in", "holder out", "waiter in"]
                assert breaker.state is State.CLOSED  # two probes succeeded
                assert stats.bulkhead_rejections == 0
            else:
                assert order == ["holder in", "holder out"]
                assert breaker.state is State.HALF_OPEN  # one success of the two needed
                assert stats.bulkhead_rejections == (1 if ending == "timed out" else 0)
                assert await fleet_probes(breaker) == 0


@pytest.mark.anyio
async def test_the_fleet_refusing_a_probe_tells_on_reject(
    open_storage: Opener, clock: FakeClock
) -> None:
    rejections: list[Rejection] = []
    options: dict[str, Any] = {
        "consecutive_failures": 1,
        "reset_after": 10.0,
        "probe_lease": LEASE,
        "clock": clock,
    }
    with anyio.fail_after(LIMIT):
        async with open_storage() as store_a, open_storage() as store_b:
            a = Breaker("fleet refusal", storage=store_a, **options)
            b = Breaker("fleet refusal", storage=store_b, on_reject=rejections.append, **options)
            await a.sync()
            await b.sync()
            await trip(a)
            await a.sync()
            await b.sync()
            assert b.state is State.OPEN
            for store in (store_a, store_b):
                store.advance_clock(10.5)
            clock.advance(10.5)
            async with a.guard():
                with pytest.raises(CircuitOpenError) as refused:
                    async with b.guard():
                        pytest.fail("the fleet admitted a second probe")
                assert refused.value.retry_after == LEASE
            assert rejections == [Rejection("fleet refusal", State.HALF_OPEN, LEASE)]
            stats = b.stats()
            assert (stats.rejections, stats.probes_in_flight) == (1, 0)


@pytest.mark.anyio
async def test_a_guard_cancelled_while_taking_the_fleets_permit(
    open_storage: Opener, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(LIMIT):
        async with half_open_breaker(open_storage, clock, "cancelled probe") as breaker:
            store = storage_of(breaker)
            acquire = store.acquire_probe
            asked = anyio.Event()
            answer = anyio.Event()

            async def slow_acquire(*args: Any) -> Any:
                asked.set()
                await answer.wait()  # the round trip is slow
                return await acquire(*args)

            monkeypatch.setattr(store, "acquire_probe", slow_acquire)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_when_asked() -> None:
                        await asked.wait()
                        scope.cancel()

                    tg.start_soon(cancel_when_asked)
                    async with breaker.guard():
                        pytest.fail("admitted although cancelled")
            assert scope.cancelled_caught
            stats = breaker.stats()
            assert stats.state is State.HALF_OPEN
            assert (stats.probes_in_flight, stats.rejections) == (0, 0)  # the permit went back
            monkeypatch.setattr(store, "acquire_probe", acquire)
            answer.set()
            async with breaker.guard():  # the one permit is free: the next call probes
                assert await fleet_probes(breaker) == 1
            await breaker.sync()
            assert breaker.state is State.CLOSED
