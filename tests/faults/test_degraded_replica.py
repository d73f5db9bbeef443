"""What a breaker does while its shared storage is down, step by step (no runner).

Each test drives one breaker by hand (``breaker.sync()`` is the runner's work, done now,
raising what the storage raised) through a proxy in front of a private server of each
backend, with a fake clock for the breaker: degraded modes, the callbacks that report the
degraded state, outcomes older than the window dropped instead of delivered late, and the
bound on what is kept while storage is down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import pytest

from breaker_machines import (
    Breaker,
    CircuitOpenError,
    Policy,
    Rejection,
    State,
    StorageError,
    StorageEvent,
)
from breaker_machines.storage import Batch, SharedStorage

from .proxy import Proxy
from .servers import FaultServer

pytestmark = pytest.mark.anyio

LIMIT = 30.0  # seconds any one test may take
TIMEOUT = 0.3  # the storage's timeout: a blackholed operation fails after this


class FakeClock(Protocol):  # the `clock` fixture of tests/conftest.py
    now: float

    def __call__(self) -> float: ...
    def advance(self, seconds: float) -> None: ...


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


async def three() -> int:
    return 3


@asynccontextmanager
async def proxied(
    server: FaultServer, **options: Any
) -> AsyncIterator[tuple[Proxy, SharedStorage]]:
    """A storage that reaches ``server`` through a proxy the test controls."""
    async with Proxy(server.port) as proxy:
        storage = server.storage(
            server.url(proxy.port),
            timeout=TIMEOUT,
            flush_interval=3600.0,
            refresh_interval=3600.0,
            **options,
        )
        async with storage:
            yield proxy, storage


async def resync(breaker: Breaker) -> None:
    """``sync()`` until the storage answers again (connections the blackhole spoiled are
    reset when it lifts, so the first attempt may fail; each attempt is bounded)."""
    for _ in range(50):
        try:
            await breaker.sync()
        except StorageError:
            await anyio.sleep(0.02)
        else:
            return
    raise AssertionError("the storage never answered again")


async def go_down(proxy: Proxy, breaker: Breaker) -> None:
    proxy.mode = "blackhole"
    with pytest.raises(StorageError):
        await breaker.sync()
    assert breaker.stats().degraded


async def fleet_calls(server: FaultServer, name: str, policy: Policy) -> tuple[int, int]:
    """(calls, failures) in the fleet's rate window, read by a storage of its own."""
    async with server.storage(server.url(), timeout=10.0) as storage:
        record = await storage.flush(name, policy, Batch(0))
        record = await storage.flush(name, policy, Batch(record.version))
    return sum(b[0] for b in record.rate_buckets), sum(b[1] for b in record.rate_buckets)


def fresh_name() -> str:
    return f"degraded-{uuid.uuid4().hex[:10]}"


async def test_callbacks_report_degraded_and_resynced(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    events: list[StorageEvent] = []
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(
                fresh_name(),
                storage=storage,
                clock=clock,
                on_degraded=events.append,
                on_resynced=events.append,
            )
            await breaker.sync()
            assert events == []
            await go_down(proxy, breaker)
            assert len(events) == 1
            down = events[0]
            assert (down.breaker, down.degraded, down.at, down.downtime) == (
                breaker.name,
                True,
                clock.now,
                None,
            )
            assert down.error
            with pytest.raises(StorageError):
                await breaker.sync()  # still down: no second event
            assert len(events) == 1
            clock.advance(2.5)
            proxy.mode = "pass"
            await resync(breaker)
            assert not breaker.stats().degraded
            assert [e.degraded for e in events] == [True, False]
            assert events[1].downtime == pytest.approx(2.5)
            assert events[1].error is None


async def test_reject_mode_rejects_every_call_while_storage_is_down(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    rejections: list[Rejection] = []
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(
                fresh_name(),
                storage=storage,
                clock=clock,
                degraded_mode="reject",
                on_reject=rejections.append,
            )
            await breaker.sync()
            with breaker.guard():
                pass
            await go_down(proxy, breaker)
            assert breaker.state is State.CLOSED  # the circuit itself is fine
            with pytest.raises(CircuitOpenError) as caught, breaker.guard():
                pytest.fail("admitted")
            assert caught.value.retry_after is not None
            assert caught.value.retry_after >= 0.0
            with pytest.raises(CircuitOpenError):
                async with breaker.guard():
                    pytest.fail("admitted")
            with pytest.raises(CircuitOpenError):
                await breaker.call(fail)
            assert breaker.stats().rejections == 3
            assert [r.state for r in rejections] == [State.CLOSED] * 3
            proxy.mode = "pass"
            await resync(breaker)
            with breaker.guard():
                pass
            async with breaker.guard():
                pass
            assert breaker.stats().rejections == 3
            assert breaker.stats().successes == 3


async def test_admit_mode_admits_what_the_open_circuit_would_reject(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(
                fresh_name(),
                storage=storage,
                clock=clock,
                consecutive_failures=2,
                degraded_mode="admit",
            )
            await breaker.sync()
            await go_down(proxy, breaker)
            for _ in range(2):
                with pytest.raises(Boom):
                    await breaker.call(fail)
            assert breaker.state is State.OPEN  # the core still decides, locally
            ran: list[int] = []
            with breaker.guard():
                ran.append(1)
            async with breaker.guard():
                ran.append(2)
            assert await breaker.call(three) == 3
            assert ran == [1, 2]
            stats = breaker.stats()
            assert stats.rejections == 0
            assert stats.state is State.OPEN
            assert stats.unflushed == 5  # of the closed generation: never taken as probes
            breaker.force_open()  # an operator's hold is not overridden
            with pytest.raises(CircuitOpenError), breaker.guard():
                pytest.fail("admitted")
            proxy.mode = "pass"
            await resync(breaker)
            assert breaker.state is State.FORCED_OPEN
            stats = breaker.stats()  # the generation they belong to ended before delivery
            assert (stats.stale, stats.delivered, stats.unflushed) == (5, 0, 0)
            with pytest.raises(CircuitOpenError), breaker.guard():
                pytest.fail("admitted")


async def test_local_mode_keeps_deciding_from_the_replica(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(fresh_name(), storage=storage, clock=clock, consecutive_failures=2)
            await breaker.sync()
            await go_down(proxy, breaker)
            with breaker.guard():
                pass
            for _ in range(2):
                with pytest.raises(Boom):
                    await breaker.call(fail)
            with pytest.raises(CircuitOpenError):
                await breaker.call(fail)
            proxy.mode = "pass"
            await resync(breaker)
            assert breaker.state is State.OPEN
            async with fault_server.storage(fault_server.url(), timeout=10.0) as other:
                record = await other.flush(breaker.name, breaker.policy, Batch(0))
            assert record.status is State.OPEN  # the local trip reached the fleet


async def test_outcomes_older_than_the_window_are_dropped_not_delivered_late(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    policy = Policy(failure_rate=0.99, minimum_calls=10**6, window=10.0)
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(fresh_name(), storage=storage, clock=clock, policy=policy)
            await breaker.sync()
            for _ in range(5):
                with pytest.raises(Boom):
                    await breaker.call(fail)
            await go_down(proxy, breaker)  # the 5 were sent, their answer never came
            for _ in range(4):
                with breaker.guard():
                    pass
            with pytest.raises(StorageError):
                await breaker.sync()  # marks the 4 as counted by now
            clock.advance(10.5)  # the first 9 are older than the 10 s window now
            for _ in range(3):
                with pytest.raises(Boom):
                    await breaker.call(fail)
            assert breaker.stats().unflushed == 12
            proxy.mode = "pass"
            await resync(breaker)
            stats = breaker.stats()
            assert (stats.delivered, stats.dropped, stats.stale, stats.unflushed) == (3, 9, 0, 0)
    assert await fleet_calls(fault_server, breaker.name, policy) == (3, 3)


async def test_what_is_kept_while_storage_is_down_is_bounded_and_the_rest_is_counted(
    fault_server: FaultServer,
) -> None:
    policy = Policy(failure_rate=0.99, minimum_calls=10**6, window=600.0)
    calls = 100_000 + 5_000
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(fresh_name(), storage=storage, policy=policy)
            await breaker.sync()
            await go_down(proxy, breaker)
            for _ in range(calls):
                with breaker.guard():
                    pass
            stats = breaker.stats()
            # The oldest tenth went when the bound (100,000) was reached.
            assert (stats.unflushed, stats.dropped) == (calls - 10_000, 10_000)
            proxy.mode = "pass"
            await resync(breaker)
            stats = breaker.stats()
            assert (stats.delivered, stats.dropped, stats.stale, stats.unflushed) == (
                calls - 10_000,
                10_000,
                0,
                0,
            )
    assert await fleet_calls(fault_server, breaker.name, policy) == (calls - 10_000, 0)


async def test_a_flush_resent_after_a_lost_answer_counts_once(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    policy = Policy(failure_rate=0.99, minimum_calls=10**6, window=600.0)
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(fresh_name(), storage=storage, clock=clock, policy=policy)
            await breaker.sync()
            for _ in range(7):
                with pytest.raises(Boom):
                    await breaker.call(fail)
            proxy.latency = 2 * TIMEOUT  # it arrives and is applied; the answer is too late
            with pytest.raises(StorageError):
                await breaker.sync()
            assert breaker.stats().unflushed == 7
            proxy.latency = 0.0
            await resync(breaker)
            stats = breaker.stats()
            assert (stats.delivered, stats.unflushed) == (7, 0)
    assert await fleet_calls(fault_server, breaker.name, policy) == (7, 7)


async def test_a_transition_published_while_the_listener_was_cut_off_is_caught_up(
    fault_server: FaultServer,
) -> None:
    opened = anyio.Event()
    name = fresh_name()
    with anyio.fail_after(LIMIT):
        async with (
            proxied(fault_server) as (proxy, storage),
            fault_server.storage(fault_server.url(), timeout=10.0) as direct,
        ):
            # No periodic refresh and nothing to flush: only the listener, or the refresh
            # after it reconnects, can tell this breaker about the other's trip.
            watcher = Breaker(name, storage=storage, on_open=opened.set)
            tripper = Breaker(name, storage=direct, consecutive_failures=1)
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.run)
                await storage.wait_subscribed()  # type: ignore[attr-defined]
                proxy.mode = "reset"
                proxy.reset_all()  # the listener's connection too; it cannot come back yet
                with pytest.raises(Boom):
                    await tripper.call(fail)
                await tripper.sync()  # published while the watcher is not listening
                assert watcher.state is State.CLOSED
                proxy.mode = "pass"
                await opened.wait()  # the listener reconnected and the breaker refreshed
                assert watcher.state is State.OPEN
                tg.cancel_scope.cancel()


async def test_reject_mode_rejects_the_probe_that_finds_storage_down(
    fault_server: FaultServer, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxied(fault_server) as (proxy, storage):
            breaker = Breaker(
                fresh_name(),
                storage=storage,
                clock=clock,
                consecutive_failures=1,
                reset_after=5.0,
                degraded_mode="reject",
            )
            await breaker.sync()
            with pytest.raises(Boom):
                await breaker.call(fail)
            await breaker.sync()  # OPEN is stored
            clock.advance(6.0)  # due to half-open
            proxy.mode = "blackhole"  # and nobody has noticed yet
            ran = False
            with pytest.raises(CircuitOpenError):
                async with breaker.guard():
                    ran = True
            assert not ran  # the probe's round trip found the outage: rejected, not run
            assert breaker.stats().degraded
