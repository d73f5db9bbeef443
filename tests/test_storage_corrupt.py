"""A stored record that does not validate is reported and replaced, never trusted.

Against the real Redis and PostgreSQL: the test damages a breaker's stored record the way
a hand edit or another program would, and checks that the breaker's next exchange counts
it (``stats().corrupt_records``), logs it as an error, writes its own state over it, and
that another process then reads a valid record again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import anyio
import pytest

from breaker_machines import Breaker, State
from breaker_machines.storage import Batch, PostgresStorage, RedisStorage, SharedStorage

pytestmark = pytest.mark.anyio

LIMIT = 30.0


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


Damage = Callable[[str], Awaitable[None]]


def redis_damages(redis_url: str, storage: RedisStorage) -> dict[str, Damage]:
    import redis

    def hset(field: str, value: str) -> Damage:
        async def damage(name: str) -> None:
            def write() -> None:
                client = redis.Redis.from_url(redis_url)
                try:
                    client.hset(storage.keys(name)[0], field, value)
                finally:
                    client.close()

            await anyio.to_thread.run_sync(write)

        return damage

    return {
        "unknown status": hset("status", "half-closed"),
        "version not a number": hset("version", "eleven"),
        "negative trips": hset("trips", "-3"),
    }


def postgres_damages(dsn: str, schema: str) -> dict[str, Damage]:
    import asyncpg

    def update(assignment: str) -> Damage:
        async def damage(name: str) -> None:
            def write() -> None:
                async def run() -> None:
                    connection = await asyncpg.connect(dsn)
                    try:
                        await connection.execute(
                            f'UPDATE "{schema}".breakers SET {assignment} WHERE name = $1', name
                        )
                    finally:
                        await connection.close()

                import asyncio

                asyncio.run(run())

            await anyio.to_thread.run_sync(write)

        return damage

    return {
        "unknown status": update("status = 'half-closed'"),
        "negative trips": update("trips = -3"),
        "negative count": update("consecutive_failures = -1"),
        "batches not an object": update("""batches = '"oops"'::jsonb"""),
    }


async def check_replaced(
    storage: SharedStorage,
    other: SharedStorage,
    damage: Damage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"corrupt-{uuid.uuid4().hex[:8]}"
    breaker = Breaker(name, storage=storage, consecutive_failures=2)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    await breaker.sync()  # OPEN is stored
    version = (await other.flush(name, breaker.policy, Batch(0))).version
    await damage(name)
    with caplog.at_level(logging.ERROR, logger="breaker_machines"):
        await breaker.sync()
    stats = breaker.stats()
    assert stats.corrupt_records == 1
    assert not stats.degraded
    assert any(
        r.levelno == logging.ERROR and "replacing it" in r.getMessage() for r in caplog.records
    )
    record = await other.flush(name, breaker.policy, Batch(0))
    assert record.status is State.OPEN
    assert record.version > version
    assert record.trips == 1
    assert breaker.state is State.OPEN


@pytest.mark.parametrize("kind", ["unknown status", "version not a number", "negative trips"])
async def test_a_corrupt_redis_record_is_reported_and_replaced(
    redis_url: str, redis_prefix: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            RedisStorage(redis_url, prefix=redis_prefix) as storage,
            RedisStorage(redis_url, prefix=redis_prefix) as other,
        ):
            damage = redis_damages(redis_url, storage)[kind]
            await check_replaced(storage, other, damage, caplog)


@pytest.mark.parametrize("kind", ["unknown status", "negative trips", "negative count"])
async def test_a_corrupt_postgres_record_is_reported_and_replaced(
    postgres_dsn: str, postgres_schema: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            PostgresStorage(postgres_dsn, schema=postgres_schema) as storage,
            PostgresStorage(postgres_dsn, schema=postgres_schema) as other,
        ):
            damage = postgres_damages(postgres_dsn, postgres_schema)[kind]
            await check_replaced(storage, other, damage, caplog)


async def check_counts_replaced(
    storage: SharedStorage,
    other: SharedStorage,
    damage: Damage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Damage the counters of a CLOSED circuit with outcomes on their way: the flush that
    meets it replaces the record, then delivers the outcomes into it."""
    name = f"corrupt-{uuid.uuid4().hex[:8]}"
    breaker = Breaker(name, storage=storage, consecutive_failures=100)
    with pytest.raises(Boom):
        await breaker.call(fail)
    await breaker.sync()
    await damage(name)
    with pytest.raises(Boom):
        await breaker.call(fail)
    with caplog.at_level(logging.ERROR, logger="breaker_machines"):
        await breaker.sync()
    stats = breaker.stats()
    assert stats.corrupt_records == 1
    assert not stats.degraded
    assert any(
        r.levelno == logging.ERROR and "replacing it" in r.getMessage() for r in caplog.records
    )
    assert (stats.unflushed, stats.dropped, stats.stale) == (0, 0, 0)
    assert stats.delivered == 2  # one before the damage, one into the replaced record
    record = await other.flush(name, breaker.policy, Batch(0))
    assert record.status is State.CLOSED
    assert record.consecutive_failures == 1


@pytest.mark.parametrize("field", ["cf", "batches"])
async def test_corrupt_redis_counters_are_reported_and_replaced(
    redis_url: str, redis_prefix: str, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    with anyio.fail_after(LIMIT):
        async with (
            RedisStorage(redis_url, prefix=redis_prefix) as storage,
            RedisStorage(redis_url, prefix=redis_prefix) as other,
        ):

            async def damage(name: str) -> None:
                def write() -> None:
                    client = redis.Redis.from_url(redis_url)
                    try:
                        state, _, _, batches = storage.keys(name)
                        if field == "cf":
                            client.hset(state, "cf", "many")
                        else:  # every origin's last batch number
                            for origin in client.hkeys(batches):
                                client.hset(batches, origin, "twelve")
                    finally:
                        client.close()

                await anyio.to_thread.run_sync(write)

            await check_counts_replaced(storage, other, damage, caplog)


async def test_corrupt_postgres_batches_are_reported_and_replaced(
    postgres_dsn: str, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            PostgresStorage(postgres_dsn, schema=postgres_schema) as storage,
            PostgresStorage(postgres_dsn, schema=postgres_schema) as other,
        ):
            damage = postgres_damages(postgres_dsn, postgres_schema)["batches not an object"]
            await check_counts_replaced(storage, other, damage, caplog)
