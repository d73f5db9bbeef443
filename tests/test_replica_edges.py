"""The replica's rarer exchanges with shared storage, on the real Redis and PostgreSQL.

Slow calls counted into the batch, outcomes of a generation that already ended, a record
the storage lost, outcomes kept while storage is down (and dropped once older than the
window), an operator's control written after an attempt whose answer was lost, records
the core refuses, and half-open permits reserved or taken while the circuit moves on.
Storage going down is a storage closed under its breaker (every operation then raises
``StorageError`` at once), and coming back is the same storage opened again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import anyio
import pytest
from tests.conftest import FakeClock
from tests.helpers import Boom, succeed, trip

from breaker_machines import (
    Breaker,
    CircuitOpenError,
    Reason,
    State,
    StorageError,
    StorageEvent,
)
from breaker_machines.storage import Proposal, SharedStorage

pytestmark = pytest.mark.anyio

LIMIT = 30.0
LEASE = 60.0


class Backend:
    """Opens storages on one server's shared data; ``lose`` deletes a breaker's record."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.request = request

    def __call__(self, **settings: Any) -> SharedStorage:
        settings = {"flush_interval": 3600.0, "refresh_interval": 3600.0, **settings}
        request = self.request
        if self.kind == "redis":
            from breaker_machines.storage import RedisStorage

            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
            return RedisStorage(url, prefix=prefix, **settings)
        from breaker_machines.storage import PostgresStorage

        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")
        return PostgresStorage(dsn, schema=schema, **settings)

    async def lose(self, name: str) -> None:
        """The server loses the record (expired, restarted empty)."""
        if self.kind == "redis":
            async with self() as storage:
                await storage.delete(name)  # type: ignore[attr-defined]
            return
        import asyncio

        import asyncpg

        dsn = self.request.getfixturevalue("postgres_dsn")
        schema = self.request.getfixturevalue("postgres_schema")

        async def delete() -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute(f'DELETE FROM "{schema}".breakers WHERE name = $1', name)
            finally:
                await connection.close()

        await anyio.to_thread.run_sync(lambda: asyncio.run(delete()))


Maker = Backend


@pytest.fixture(params=["redis", "postgres"])
def make_storage(request: pytest.FixtureRequest) -> Backend:
    """Opens one more storage on the same shared data, with settings of the test's own."""
    return Backend(str(request.param), request)


def replica_of(breaker: Breaker) -> Any:
    replica = breaker._replica
    assert replica is not None
    return replica


async def go_down(storage: SharedStorage) -> None:
    """The storage stops answering: every operation raises StorageError."""
    await storage.__aexit__(None, None, None)


async def come_back(storage: SharedStorage) -> None:
    await storage.__aenter__()


@asynccontextmanager
async def fleet(
    make_storage: Maker, clock: FakeClock, name: str, **options: Any
) -> AsyncIterator[tuple[Breaker, Breaker]]:
    """Two breakers of one circuit, each on a storage of its own, both synced."""
    settings: dict[str, Any] = {"consecutive_failures": 1, "reset_after": 10.0, "clock": clock}
    settings.update(options)
    async with make_storage() as store_a, make_storage() as store_b:
        a = Breaker(name, storage=store_a, probe_lease=LEASE, **settings)
        b = Breaker(name, storage=store_b, probe_lease=LEASE, **settings)
        await a.sync()
        await b.sync()
        yield a, b


@asynccontextmanager
async def synced(
    make_storage: Maker, name: str, storage_settings: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[tuple[SharedStorage, Breaker]]:
    """One breaker on a storage of its own (made with ``storage_settings``), synced."""
    async with make_storage(**(storage_settings or {})) as storage:
        breaker = Breaker(name, storage=storage, **options)
        await breaker.sync()
        yield storage, breaker


def storage_of(breaker: Breaker) -> SharedStorage:
    storage: SharedStorage = replica_of(breaker).storage
    return storage


def advance(clock: FakeClock, seconds: float, *breakers: Breaker) -> None:
    clock.advance(seconds)
    for breaker in breakers:
        storage_of(breaker).advance_clock(seconds)


async def reset_due(
    breaker: Breaker, clock: FakeClock, *others: Breaker, tick: bool = False
) -> None:
    """``breaker`` trips and writes OPEN; then the test's clock and the storages of
    ``breaker`` and ``others`` move past reset_after (10 s). With ``tick`` the runner of
    ``breaker`` half-opens on time and writes HALF_OPEN."""
    await trip(breaker)
    await breaker.sync()
    advance(clock, 10.5, breaker, *others)
    if tick:
        breaker._tick()
        await breaker.sync()


async def open_without_retry(breaker: Breaker, version: int) -> None:
    """Another program writes an OPEN record with no retry time: the core refuses it."""
    storage = storage_of(breaker)
    proposal = Proposal(State.OPEN, version, 9, Reason.FORCED_OPEN, 0.0, None, "foreign")
    won, record = await storage.propose(breaker.name, version - 1, proposal)
    assert won
    assert (record.status, record.version, record.retry_in) == (State.OPEN, version, None)


# ------------------------------------------------------------------ the batch


async def test_slow_calls_are_flushed_as_slow(make_storage: Maker, clock: FakeClock) -> None:
    with anyio.fail_after(LIMIT):
        async with synced(
            make_storage,
            "slow calls",
            storage_settings={"flush_size": 2},
            clock=clock,
            slow_call_rate=0.9,
            slow_call_duration=1.0,
            minimum_calls=100,
            window=60.0,
        ) as (_, breaker):
            for ending in ("ok", "ok", "boom", "fast"):
                expected = pytest.raises(Boom) if ending == "boom" else nullcontext()
                with expected:
                    async with breaker.guard():
                        if ending != "fast":
                            clock.advance(2.0)
                        if ending == "boom":
                            raise Boom
            assert replica_of(breaker).batch == ["S", "S", "F", "s"]
            # flush_size=2: each flush leaves the rest of the batch, counted on top of the
            # fleet's record, slow calls included, until it goes too.
            await breaker.sync()
            stats = breaker.stats()
            assert (stats.window_calls, stats.window_failures, stats.window_slow) == (4, 1, 3)
            assert (stats.delivered, stats.unflushed) == (4, 0)
            assert breaker.state is State.CLOSED


async def test_an_outcome_of_an_ended_generation_is_stale(make_storage: Maker) -> None:
    with anyio.fail_after(LIMIT):
        async with synced(make_storage, "stale", consecutive_failures=1) as (_, breaker):
            async with breaker.guard():  # admitted in the first CLOSED generation
                await trip(breaker)  # its failure is of that generation too
                breaker.force_close()  # a third generation
                assert await breaker.call(succeed) == "ok"  # the batch follows it now
                assert breaker.stats().stale == 1  # the failure, batched before
            stats = breaker.stats()
            assert (stats.successes, stats.failures, stats.stale) == (2, 1, 2)
            assert stats.unflushed == 1
            await breaker.sync()
            stats = breaker.stats()
            assert (stats.delivered, stats.unflushed, stats.stale) == (1, 0, 2)
            assert breaker.state is State.CLOSED


async def test_outcomes_for_a_record_the_storage_lost(make_storage: Maker) -> None:
    with anyio.fail_after(LIMIT):
        async with make_storage() as storage, make_storage() as other:
            breaker = Breaker("lost record", storage=storage, consecutive_failures=3)
            await breaker.sync()
            breaker.force_open()
            await breaker.sync()
            breaker.reset()
            await breaker.sync()
            assert (await other.inspect("lost record")).record.version == 2
            await make_storage.lose("lost record")  # expired, or the server restarted empty
            assert await breaker.call(succeed) == "ok"
            await breaker.sync()  # the flush meets no record: ours is written back first
            stats = breaker.stats()
            assert (stats.delivered, stats.unflushed, stats.stale, stats.dropped) == (1, 0, 0, 0)
            stored = await other.inspect("lost record")
            assert not stored.record.missing
            assert stored.record.status is State.CLOSED
            assert stored.rate_calls + stored.window_failures >= 0
            assert breaker.state is State.CLOSED


async def test_outcomes_kept_while_down_and_dropped_past_the_window(
    make_storage: Maker, clock: FakeClock
) -> None:
    events: list[StorageEvent] = []
    count = 70
    with anyio.fail_after(LIMIT):
        async with synced(
            make_storage,
            "down a while",
            clock=clock,
            failures=1000,
            within=60.0,
            on_degraded=events.append,
            on_resynced=events.append,
        ) as (storage, breaker):
            await go_down(storage)
            replica = replica_of(breaker)
            for _ in range(count):
                clock.advance(0.5)
                assert await breaker.call(succeed) == "ok"
                with pytest.raises(StorageError):
                    await breaker.sync()
            assert len(replica.marks) < count - 1  # thinned: at most 64 kept, then more
            stats = breaker.stats()
            assert stats.degraded
            assert (stats.unflushed, stats.dropped) == (count, 0)
            clock.advance(45.0)  # the first 39 outcomes are older than the 60 s window now
            with pytest.raises(StorageError):
                await breaker.sync()
            dropped = breaker.stats().dropped
            assert 20 <= dropped <= 39  # (what storage was down for is marked coarsely)
            await come_back(storage)
            await breaker.sync()
            stats = breaker.stats()
            assert not stats.degraded
            assert (stats.delivered, stats.dropped, stats.unflushed) == (
                count - dropped,
                dropped,
                0,
            )
            assert [e.degraded for e in events] == [True, False]
            assert events[1].dropped == dropped
            assert events[1].downtime is not None
            assert events[1].downtime > 0.0


# ------------------------------------------------------------------ writing transitions


def watch_proposals(
    monkeypatch: pytest.MonkeyPatch, breaker: Breaker, first: Callable[[], object]
) -> list[bool]:
    """Note the ``force`` flag of every proposal ``breaker`` sends its storage (in the list
    returned); ``first()`` runs before the first proposal goes on (if it raises, that
    proposal gets no further)."""
    storage = storage_of(breaker)
    propose = storage.propose
    forced: list[bool] = []

    async def watched(name: str, expected: int, proposal: Proposal, *, force: bool = False) -> Any:
        forced.append(force)
        if len(forced) == 1:
            first()
        return await propose(name, expected, proposal, force=force)

    monkeypatch.setattr(storage, "propose", watched)
    return forced


async def test_an_operator_control_rewritten_after_a_lost_answer(
    make_storage: Maker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "uncertain control") as (a, b):

            def no_answer() -> None:  # no answer: it may or may not have landed
                raise StorageError("no answer within the timeout")

            forced = watch_proposals(monkeypatch, a, no_answer)
            a.force_open()
            with pytest.raises(StorageError, match="no answer"):
                await a.sync()
            assert replica_of(a).uncertain is not None
            await trip(b)  # meanwhile another process writes a newer record
            await b.sync()
            await a.sync()  # not its own record: the operator's control is forced over it
            assert forced == [True, False, True]
            assert a.state is State.FORCED_OPEN
            assert replica_of(a).uncertain is None
            stored = await storage_of(b).inspect("uncertain control")
            assert stored.record.status is State.FORCED_OPEN
            await b.sync()
            assert b.state is State.FORCED_OPEN


async def test_a_control_made_while_a_losing_write_is_on_its_way(
    make_storage: Maker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "control meanwhile") as (a, b):
            await trip(b)
            await b.sync()  # OPEN, version 1: a has not seen it
            # The operator acts while the first write is on its way.
            calls = watch_proposals(monkeypatch, a, a.force_open)
            await trip(a)  # a decides OPEN on its own counts and writes it: it loses
            await a.sync()
            assert calls == [False, True]  # the lost write, then the control, forced
            assert a.state is State.FORCED_OPEN
            await b.sync()
            assert b.state is State.FORCED_OPEN


async def test_a_write_that_finds_the_record_lost_writes_it_back(
    make_storage: Maker, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "lost before write") as (a, b):
            a.force_open()
            await a.sync()
            a.reset()
            await a.sync()  # CLOSED, version 2, is stored
            await make_storage.lose("lost before write")
            await trip(a)  # a decides OPEN: compare-and-set on version 2 finds no record
            await a.sync()
            stored = await storage_of(b).inspect("lost before write")
            assert not stored.record.missing
            assert (stored.record.status, stored.record.trips) == (State.OPEN, 1)
            await b.sync()
            assert b.state is State.OPEN
            assert a.state is State.OPEN
            assert replica_of(a).force is False


# ------------------------------------------------------------------ records the core refuses


async def test_counts_the_core_refuses_are_a_storage_error(make_storage: Maker) -> None:
    with anyio.fail_after(LIMIT):
        async with make_storage() as storage:
            breaker = Breaker(
                "bad random",
                storage=storage,
                jitter=0.5,
                random=lambda: 2.0,
                failures=10,
                within=60.0,
            )
            assert await breaker.call(succeed) == "ok"
            with pytest.raises(StorageError, match="shared counts rejected by the core"):
                await breaker.sync()
            assert breaker.stats().degraded


async def test_a_published_record_the_core_refuses_is_logged(
    make_storage: Maker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "refused record") as (a, _):
            await open_without_retry(a, 1)
            record = (await storage_of(a).inspect("refused record")).record
            with caplog.at_level(logging.WARNING, logger="breaker_machines"):
                replica_of(a).observe(record)  # what a's listener does with the message
            assert a.state is State.CLOSED
            assert a.snapshot.version == 0
            (warning,) = [r for r in caplog.records if "rejected by the core" in r.getMessage()]
            assert warning.levelno == logging.WARNING
            assert "must have retry_at" in warning.getMessage()


# ------------------------------------------------------------------ half-open permits


async def test_a_sync_probe_while_storage_is_down_uses_the_local_permit(
    make_storage: Maker, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with synced(
            make_storage, "down probe", clock=clock, consecutive_failures=1, reset_after=10
        ) as (storage, breaker):
            await trip(breaker)
            await breaker.sync()
            await go_down(storage)
            with pytest.raises(StorageError):
                await breaker.sync()
            clock.advance(10.5)
            with breaker.guard():  # a sync guard: no permit reserved, storage down
                assert breaker.state is State.HALF_OPEN
            assert breaker.state is State.CLOSED
            assert breaker.stats().rejections == 0


async def test_a_permit_asked_for_a_circuit_that_moved_on_is_not_reserved(
    make_storage: Maker, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "moved on") as (a, b):
            await reset_due(a, clock, b)
            with pytest.raises(CircuitOpenError), a.guard():  # asks the runner for a permit
                pytest.fail("a sync guard probed with no reserved permit")
            assert replica_of(a).want_permit
            a.reset()  # closed before the runner got to it
            await a.sync()
            replica = replica_of(a)
            assert (replica.want_permit, replica.reserved) == (False, None)
            stored = await storage_of(b).inspect("moved on")
            assert (stored.record.status, stored.record.probes) == (State.CLOSED, 0)


async def test_a_permit_reserved_against_a_newer_record_adopts_it(
    make_storage: Maker, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "reserve adopts") as (a, b):
            await reset_due(a, clock, b, tick=True)  # a's runner half-opens on time
            await b.sync()
            assert b.state is State.HALF_OPEN
            b.force_open()
            await b.sync()
            with pytest.raises(CircuitOpenError), a.guard():  # a has not seen it yet
                pytest.fail("a sync guard probed with no reserved permit")
            await a.sync()  # asking for the permit returns the newer record
            assert a.state is State.FORCED_OPEN
            assert replica_of(a).reserved is None


@pytest.mark.parametrize(("mode", "admitted"), [("local", True), ("reject", False)])
async def test_taking_a_permit_while_storage_is_down(
    make_storage: Maker, clock: FakeClock, mode: str, admitted: bool
) -> None:
    with anyio.fail_after(LIMIT):
        async with synced(
            make_storage,
            "down permit",
            clock=clock,
            consecutive_failures=1,
            reset_after=10,
            probe_lease=LEASE,
            degraded_mode=mode,
        ) as (storage, breaker):
            await reset_due(breaker, clock, tick=True)  # HALF_OPEN is stored
            await go_down(storage)
            if admitted:
                async with breaker.guard():
                    pass
                assert breaker.state is State.CLOSED
            else:
                with pytest.raises(CircuitOpenError):
                    async with breaker.guard():
                        pytest.fail("admitted while storage is down in 'reject' mode")
                assert breaker.state is State.HALF_OPEN
            stats = breaker.stats()
            assert stats.degraded
            assert stats.storage_errors == 1


async def test_a_permit_refused_with_a_record_the_core_refuses(
    make_storage: Maker, clock: FakeClock
) -> None:
    with anyio.fail_after(LIMIT):
        async with fleet(make_storage, clock, "refused permit") as (a, b):
            await reset_due(a, clock, b, tick=True)  # HALF_OPEN, version 2, is stored
            await open_without_retry(a, 3)
            with pytest.raises(CircuitOpenError) as refused:
                async with a.guard():
                    pytest.fail("admitted on a record the core refuses")
            assert refused.value.retry_after == LEASE
            stats = a.stats()
            assert (stats.degraded, stats.storage_errors) == (True, 1)
            assert (stats.state, stats.probes_in_flight) == (State.HALF_OPEN, 0)
