"""Storage faults under load: what breakers do when their shared storage breaks.

Each scenario runs against a private server of each backend (``fault_server``: Redis and
PostgreSQL) under asyncio and trio. Two storages on the server play two processes. On
them run breakers with tasks calling them all the time:

* ``load``: one circuit shared by both processes (three tasks each), with a rule that
  never trips (a failure rate over a 600 s window with a million minimum calls), so every
  outcome is a CLOSED, non-probe outcome that must reach the fleet exactly once;
* ``guard``: tripped by its failing dependency *while storage is down* (protection);
* ``early``: tripped while storage was up, so the storage holds an OPEN record through
  the fault (lost with a Redis restart: the breaker writes it back).

Then a fault (killed, paused, slow, silent or resetting server) and its end. Every
scenario checks:

1. **Bounded callers**: every call returns within ``CALL_TIMEOUT + SLACK`` (see SLACK).
2. **No storage error reaches a caller**: a call raises the dependency's own error, a
   ``CircuitTimeoutError`` or a ``CircuitOpenError``; anything else fails the test.
3. **Protection**: with storage down (each breaker's ``sync()`` fails), a failing
   dependency still opens ``guard`` locally, and ``early`` keeps rejecting.
4. **Recovery**: once the fault is lifted, each breaker's runner finds the storage again
   on its own (``stats().degraded`` turns false), and ``sync()`` succeeds (retried: a
   Redis client may still hand out a dead pooled connection once, a known problem).
5. **Convergence**: a fresh storage and fresh breakers on the server read the same
   status and stored version as the breakers that lived through the fault (one refresh).
6. **Accounting**: for ``load``, ``delivered + dropped + stale`` equals the outcomes its
   callers saw (and, as that circuit never changes generation and the outage is short,
   ``dropped == stale == 0``), nothing is left unflushed, and the server counts exactly
   the sum of ``delivered`` over both processes (minus what a Redis restart lost,
   measured once every process had noticed the outage). No outcome is lost, none
   counted twice: a flush the server ran but whose answer was lost (paused server,
   latency, resets) is resent and must be applied once.

Nothing sleeps to wait for a condition: faults are confirmed by a ``sync()`` that fails,
recovery by ``sync()`` and by polling ``stats().degraded`` under ``fail_after`` (it
depends on the runner's real back-off timers). The only other sleeps are the durations
the load runs for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import pytest

from breaker_machines import (
    Breaker,
    CircuitOpenError,
    CircuitTimeoutError,
    Policy,
    State,
    StorageError,
    running,
)
from breaker_machines.storage import Batch, SharedRecord, SharedStorage

from .proxy import Proxy
from .servers import FaultServer

pytestmark = pytest.mark.anyio

#: Every storage operation may take this long (small, to keep the suite fast).
STORAGE_TIMEOUT = 0.2
STORAGE_OPTIONS: dict[str, Any] = {
    "timeout": STORAGE_TIMEOUT,
    "flush_interval": 0.05,
    "refresh_interval": 0.2,
}
#: The breakers' own call timeout. The dependency takes about a millisecond.
CALL_TIMEOUT = 0.1
#: What a caller may wait beyond its timeout. Callers never wait on storage while the
#: circuit is CLOSED or OPEN (none of these breakers half-opens during a test): admission
#: is local and the outcome joins a batch. So a call takes what the dependency takes
#: (~1 ms) plus event-loop scheduling. Measured on a 2-core machine (two storages, six
#: breakers, nine calling tasks, the proxy, the servers and, under trio, the bridge
#: threads): at most 8 ms; 51 ms under coverage; 160 ms with two busy processes taking
#: both cores. 0.25 s stays above that with room, while a caller held up by a blocked
#: storage operation and the one in flight ahead of it (2 x 0.2 s) would exceed
#: ``CALL_TIMEOUT + SLACK``.
SLACK = 0.25
#: A failing ``sync()`` may first wait for the runner's operation in flight (one timeout)
#: and then fails its own (one timeout).
SYNC_LIMIT = 2 * STORAGE_TIMEOUT + 0.3
#: The runner retries after 0.05 s doubling (times 0.5..1.5): after an outage of a second
#: or two its next attempt is at most ~2.5 s away; 10 s is a generous bound.
RECOVERY_LIMIT = 10.0
#: A restarted server answers at once: what a breaker may need to find it again.
RESTART_RECOVERY = 3.0
#: Bound of a whole scenario (a broken storage fails a test, it never hangs it).
SCENARIO_LIMIT = 45.0
#: How long the load runs before the fault, during it (besides the checks) and after it.
LOAD_TIME = 0.3
#: Pause between two calls of one calling task.
PAUSE = 0.004


class DependencyError(Exception):
    """The protected dependency's own failure."""


class Dependency:
    """The protected service: fails every ``every``-th call, or always when ``failing``."""

    def __init__(self, every: int = 0) -> None:
        self.every = every
        self.failing = False
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        number = self.calls
        await anyio.sleep(0.001)
        if self.failing or (self.every and number % self.every == 0):
            raise DependencyError(number)
        return "ok"


@dataclass
class Caller:
    """Calls one breaker and classifies what every call did (shared by its tasks)."""

    breaker: Breaker
    dependency: Dependency
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    rejected: int = 0
    unexpected: list[BaseException] = field(default_factory=list)
    slowest: float = 0.0
    late: list[float] = field(default_factory=list)

    @property
    def observed(self) -> int:
        """Outcomes the callers saw (every admitted call that reported)."""
        return self.succeeded + self.failed + self.timed_out

    async def call(self) -> str:
        started = time.monotonic()
        try:
            await self.breaker.call(self.dependency)
        except CircuitOpenError:
            kind = "rejected"
            self.rejected += 1
        except CircuitTimeoutError:
            kind = "timed_out"
            self.timed_out += 1
        except DependencyError:
            kind = "failed"
            self.failed += 1
        except Exception as error:  # a storage error (or anything else) reached a caller
            kind = "unexpected"
            self.unexpected.append(error)
        else:
            kind = "succeeded"
            self.succeeded += 1
        elapsed = time.monotonic() - started
        self.slowest = max(self.slowest, elapsed)
        if elapsed >= CALL_TIMEOUT + SLACK:
            self.late.append(elapsed)
        return kind

    async def keep_calling(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            await self.call()
            await anyio.sleep(PAUSE)

    def check(self) -> None:
        """No caller saw a storage error; none waited past its bound."""
        name = self.breaker.name
        assert not self.unexpected, f"{name}: callers got {self.unexpected[:5]!r}"
        assert not self.late, (
            f"{name}: {len(self.late)} calls took longer than {CALL_TIMEOUT + SLACK}s"
            f" (slowest {self.slowest:.3f}s)"
        )


def stored(breaker: Breaker) -> int:
    """The fleet's (stored) version of the circuit as ``breaker`` last exchanged it."""
    replica = breaker._replica
    assert replica is not None
    return replica.stored


def load_breaker(name: str, storage: SharedStorage, **options: Any) -> Breaker:
    """A breaker that never trips: all its outcomes are CLOSED, non-probe outcomes."""
    return Breaker(
        name,
        storage=storage,
        failure_rate=0.99,
        minimum_calls=10**6,
        window=600,
        timeout=CALL_TIMEOUT,
        **options,
    )


def guard_breaker(name: str, storage: SharedStorage, **options: Any) -> Breaker:
    """A breaker that opens after 3 consecutive failures and stays open for the test."""
    return Breaker(
        name,
        storage=storage,
        consecutive_failures=3,
        reset_after=600,
        timeout=CALL_TIMEOUT,
        **options,
    )


async def blocking(fn: Callable[[], None]) -> None:
    """Run a blocking server control (start, kill, ...) without blocking the event loop."""
    await anyio.to_thread.run_sync(fn)


async def trip(caller: Caller, *, limit: int = 30) -> None:
    """Make the dependency fail until the breaker rejects a call (bounded)."""
    caller.dependency.failing = True
    for _ in range(limit):
        if await caller.call() == "rejected":
            return
    raise AssertionError(f"{caller.breaker.name} did not open after {limit} failing calls")


async def expect_storage_down(breakers: Sequence[Breaker]) -> None:
    """Each breaker's ``sync()`` fails, within SYNC_LIMIT: every one is degraded now."""

    async def one(breaker: Breaker) -> None:
        with anyio.fail_after(SYNC_LIMIT), pytest.raises(StorageError):
            await breaker.sync()
        assert breaker.stats().degraded

    async with anyio.create_task_group() as group:
        for breaker in breakers:
            group.start_soon(one, breaker)


async def until_recovered(breakers: Sequence[Breaker]) -> None:
    """Wait until each runner found the storage again on its own, then sync each.

    A ``sync()`` may still fail once the runner recovered: a Redis client reuses pooled
    connections to the old server (see
    ``test_right_after_a_restart_concurrent_operations_succeed``), so it is retried.
    """
    with anyio.fail_after(RECOVERY_LIMIT):
        # Polled: the runners' own back-off timers decide when they try again.
        while any(breaker.stats().degraded for breaker in breakers):  # noqa: ASYNC110
            await anyio.sleep(0.05)
        for breaker in breakers:
            await sync_eventually(breaker)


async def sync_eventually(breaker: Breaker) -> None:
    """``sync()`` until it succeeds, within RESTART_RECOVERY.

    A storage operation outside the fault can still miss the short STORAGE_TIMEOUT on a
    loaded machine (opening a connection included): that is not what these tests check.
    """
    with anyio.fail_after(RESTART_RECOVERY):
        await _sync_until_answered(breaker)


async def _sync_until_answered(breaker: Breaker) -> None:
    while True:
        try:
            await breaker.sync()
        except StorageError:
            await anyio.sleep(0.05)  # reconnecting: real timers decide
        else:
            assert not breaker.stats().degraded
            return


async def flush_eventually(storage: SharedStorage, breaker: Breaker) -> SharedRecord:
    """An empty flush of ``breaker``'s record through ``storage`` (a fresh process
    reading it), retried like :func:`sync_eventually`."""
    with anyio.fail_after(RESTART_RECOVERY):
        while True:
            try:
                return await storage.flush(breaker.name, breaker.policy, Batch(stored(breaker)))
            except StorageError:
                await anyio.sleep(0.05)


# =========================================================================== the harness

Fault = Callable[[], Awaitable[None]]


async def scenario(
    server: FaultServer,
    inject: Fault,
    lift: Fault,
    *,
    url: str | None = None,
    loses_data: bool = False,
) -> None:
    """Run the load, ``inject`` the fault, check protection, ``lift`` it, check the rest.

    ``loses_data``: the fault wipes the server (a Redis restart): outcomes acknowledged
    before it are gone from the server's count.
    """
    url = url or server.url()
    tag = uuid.uuid4().hex[:10]
    names = {kind: f"{kind}-{tag}" for kind in ("load", "guard", "early")}
    with anyio.fail_after(SCENARIO_LIMIT):
        async with (
            server.storage(url, **STORAGE_OPTIONS) as store_a,
            server.storage(url, **STORAGE_OPTIONS) as store_b,
        ):
            loads = [load_breaker(names["load"], store) for store in (store_a, store_b)]
            guard = guard_breaker(names["guard"], store_a)
            early = guard_breaker(names["early"], store_b)
            load_callers = [Caller(breaker, Dependency(every=3)) for breaker in loads]
            guard_caller = Caller(guard, Dependency())
            early_caller = Caller(early, Dependency())
            breakers = [*loads, guard, early]
            lost = 0
            async with running(*breakers):
                await trip(early_caller)
                await sync_eventually(early)  # its OPEN record is stored before the fault
                assert stored(early) == 1
                stop = anyio.Event()
                async with anyio.create_task_group() as group:
                    for caller in load_callers:
                        for _ in range(3):
                            group.start_soon(caller.keep_calling, stop)
                    for caller in (guard_caller, guard_caller, early_caller):
                        group.start_soon(caller.keep_calling, stop)
                    await anyio.sleep(LOAD_TIME)
                    for breaker in breakers:
                        await sync_eventually(breaker)

                    await inject()
                    await expect_storage_down(breakers)
                    if loses_data:
                        # Every process has noticed: what they acknowledged so far is in
                        # the server that is about to lose it, and nothing more will be.
                        lost = sum(breaker.stats().delivered for breaker in loads)

                    # Protection: the failing dependency opens guard locally.
                    await trip(guard_caller)
                    for breaker in (guard, early):
                        stats = breaker.stats()
                        assert stats.state is State.OPEN, breaker.name
                        assert stats.degraded, breaker.name
                    assert await early_caller.call() == "rejected"
                    await anyio.sleep(LOAD_TIME)  # the load goes on against a broken storage

                    await lift()
                    await until_recovered(breakers)
                    await anyio.sleep(LOAD_TIME)
                    stop.set()
                for breaker in breakers:
                    await sync_eventually(breaker)
            for caller in [*load_callers, guard_caller, early_caller]:
                caller.check()
            assert guard.state is State.OPEN
            assert early.state is State.OPEN

        await check_convergence(server, breakers)
        await check_accounting(server, load_callers, lost)


async def check_convergence(server: FaultServer, breakers: Sequence[Breaker]) -> None:
    """A fresh process sees what the survivors of the fault hold (one refresh each)."""
    async with server.storage(server.url(), **STORAGE_OPTIONS) as fresh:
        for breaker in breakers:
            record = await flush_eventually(fresh, breaker)
            assert (record.status, record.version) == (breaker.state, stored(breaker)), breaker.name
        names = {breaker.name: breaker for breaker in breakers}
        others = [
            Breaker(name, storage=fresh, policy=breaker.policy) for name, breaker in names.items()
        ]
        async with running(*others):  # each adopts the stored state while it starts
            for other in others:
                # Its first refresh can miss the storage's short timeout on a loaded
                # machine (the breaker then starts degraded): sync until it answers.
                await sync_eventually(other)
                breaker = names[other.name]
                assert (other.state, stored(other)) == (breaker.state, stored(breaker)), other.name


async def check_accounting(server: FaultServer, callers: Sequence[Caller], lost: int) -> None:
    """Every outcome callers saw is delivered, dropped or stale; the server counts the
    delivered ones exactly once."""
    for caller in callers:
        stats = caller.breaker.stats()
        assert stats.unflushed == 0, caller.breaker.name
    total = 0
    for caller in callers:
        stats = caller.breaker.stats()
        assert caller.observed > 0
        assert stats.delivered + stats.dropped + stats.stale == caller.observed, (
            stats,
            caller.observed,
        )
        # The load's circuit never changes generation, and the outage is far shorter
        # than its window and its bound on kept outcomes: every outcome is delivered.
        assert (stats.dropped, stats.stale) == (0, 0), stats
        total += stats.delivered
    breaker = callers[0].breaker
    async with server.storage(server.url(), **STORAGE_OPTIONS) as fresh:
        record = await flush_eventually(fresh, breaker)
    counted = sum(bucket[0] for bucket in record.rate_buckets)
    assert counted == total - lost, {"server": counted, "delivered": total, "lost": lost}


# =========================================================================== the scenarios


async def test_server_killed_mid_load_and_restarted(fault_server: FaultServer) -> None:
    # Redis has no persistence: a killed Redis comes back empty. PostgreSQL recovers its
    # committed data after the crash.
    await scenario(
        fault_server,
        lambda: blocking(fault_server.kill),
        lambda: blocking(fault_server.start),
        loses_data=fault_server.backend == "redis",
    )


async def test_server_paused_past_the_storage_timeout(fault_server: FaultServer) -> None:
    # Requests pile up in the frozen server's sockets; it runs them (late) once resumed.
    await scenario(
        fault_server,
        lambda: blocking(fault_server.pause),
        lambda: blocking(fault_server.resume),
    )


async def test_latency_above_the_storage_timeout(fault_server: FaultServer) -> None:
    async with Proxy(fault_server.port) as proxy:

        async def inject() -> None:
            proxy.latency = 2 * STORAGE_TIMEOUT

        async def lift() -> None:
            proxy.latency = 0.0

        await scenario(fault_server, inject, lift, url=fault_server.url(proxy.port))


async def test_blackhole(fault_server: FaultServer) -> None:
    async with Proxy(fault_server.port) as proxy:

        async def inject() -> None:
            proxy.mode = "blackhole"

        async def lift() -> None:
            proxy.mode = "pass"

        # (Whether the proxy had to reset connections that lost bytes depends on whether
        # the client had already closed them on its timeout: tests/faults/test_proxy.py
        # checks the proxy itself.)
        await scenario(fault_server, inject, lift, url=fault_server.url(proxy.port))


async def test_connection_resets(fault_server: FaultServer) -> None:
    async with Proxy(fault_server.port) as proxy:

        async def inject() -> None:
            proxy.mode = "reset"
            proxy.reset_all()

        async def lift() -> None:
            proxy.mode = "pass"

        await scenario(fault_server, inject, lift, url=fault_server.url(proxy.port))
        assert proxy.resets > 0


@pytest.mark.parametrize("fault_server", ["redis"], indirect=True)
async def test_redis_restarted_empty(fault_server: FaultServer) -> None:
    # A clean shutdown and a start without the data: every record and count is gone.
    # The breakers write back the states they know; the loads start counting anew.
    await scenario(
        fault_server,
        lambda: blocking(fault_server.stop),
        lambda: blocking(fault_server.start),
        loses_data=True,
    )


@pytest.mark.parametrize("fault_server", ["postgres"], indirect=True)
async def test_postgres_restarted_with_data(fault_server: FaultServer) -> None:
    # A clean shutdown and a start on the same data: nothing is lost.
    await scenario(
        fault_server,
        lambda: blocking(fault_server.stop),
        lambda: blocking(fault_server.start),
    )


@pytest.mark.parametrize(
    ("fault_server", "keep_data"),
    [
        ("redis", True),
        ("redis", False),
        ("postgres", True),
        ("postgres", False),
    ],
    indirect=["fault_server"],
)
async def test_a_restart_between_two_syncs_keeps_or_rewrites_the_stored_state(
    fault_server: FaultServer, keep_data: bool
) -> None:
    """``restart(keep_data=True)`` keeps the OPEN record; a server restarted empty gets it
    written back by the breaker that knew it (at a version past the one it knew)."""
    name = f"restart-{uuid.uuid4().hex[:10]}"
    with anyio.fail_after(SCENARIO_LIMIT):
        async with fault_server.storage(fault_server.url(), **STORAGE_OPTIONS) as storage:
            breaker = guard_breaker(name, storage)
            caller = Caller(breaker, Dependency())
            async with running(breaker):
                await trip(caller)
                await sync_eventually(breaker)
                assert stored(breaker) == 1
                await blocking(lambda: fault_server.restart(keep_data=keep_data))
                # The server answers at once: a few failed attempts at most (dead pooled
                # connections), well within RESTART_RECOVERY.
                await sync_eventually(breaker)
                assert breaker.state is State.OPEN
                assert stored(breaker) == (1 if keep_data else 2)
                assert await caller.call() == "rejected"
            caller.check()
        await check_convergence(fault_server, [breaker])


# =========================================================================== degraded modes


@pytest.mark.parametrize("mode", ["local", "reject", "admit"])
async def test_degraded_mode_with_a_killed_server(fault_server: FaultServer, mode: str) -> None:
    """While the server is dead, ``local`` decides from the replica (a failing dependency
    opens it), ``reject`` refuses every call, ``admit`` lets every call through; once the
    server is back, each breaker agrees with a fresh process again."""
    name = f"mode-{mode}-{uuid.uuid4().hex[:10]}"
    with anyio.fail_after(SCENARIO_LIMIT):
        async with fault_server.storage(fault_server.url(), **STORAGE_OPTIONS) as storage:
            breaker = guard_breaker(name, storage, degraded_mode=mode)
            caller = Caller(breaker, Dependency())
            async with running(breaker):
                stop = anyio.Event()
                async with anyio.create_task_group() as group:
                    for _ in range(3):
                        group.start_soon(caller.keep_calling, stop)
                    await anyio.sleep(LOAD_TIME)
                    await sync_eventually(breaker)
                    assert caller.succeeded > 0

                    await blocking(fault_server.kill)
                    await expect_storage_down([breaker])
                    dependency = caller.dependency
                    if mode == "local":
                        await trip(caller)
                        assert breaker.stats().state is State.OPEN
                    elif mode == "reject":
                        reached = dependency.calls
                        for _ in range(10):
                            assert await caller.call() == "rejected"
                        assert dependency.calls == reached  # nothing got through
                        assert breaker.stats().state is State.CLOSED
                    else:
                        dependency.failing = True
                        reached = dependency.calls
                        for _ in range(10):
                            assert await caller.call() == "failed"
                        assert dependency.calls >= reached + 10  # every call got through
                    assert breaker.stats().degraded

                    await blocking(fault_server.start)
                    await until_recovered([breaker])
                    if mode == "reject":
                        assert await caller.call() == "succeeded"  # admitted again
                    else:
                        # A local trip made while down is kept and written once back.
                        assert breaker.state is State.OPEN
                        assert await caller.call() == "rejected"
                    stop.set()
                await sync_eventually(breaker)
            caller.check()
        await check_convergence(fault_server, [breaker])


# =========================================================================== after a restart


async def test_right_after_a_restart_concurrent_operations_succeed(
    fault_server: FaultServer,
) -> None:
    """Connections a storage pooled before a server restart are not handed out again:
    once the server answers, operations succeed, however many run at once."""
    names = [f"pool-{uuid.uuid4().hex[:10]}-{i}" for i in range(5)]
    errors: list[str] = []

    async def flush(storage: SharedStorage, name: str, collect: bool) -> None:
        try:
            await storage.flush(name, Policy(), Batch(0))
        except StorageError as error:
            if not collect:
                raise
            errors.append(str(error))

    with anyio.fail_after(SCENARIO_LIMIT):
        async with fault_server.storage(fault_server.url(), **STORAGE_OPTIONS) as storage:
            async with anyio.create_task_group() as group:  # several pooled connections
                for name in names:
                    group.start_soon(flush, storage, name, False)
            await blocking(fault_server.kill)
            await blocking(fault_server.start)
            async with anyio.create_task_group() as group:
                for name in names:
                    group.start_soon(flush, storage, name, True)
    assert errors == []
