"""The read side of the shared storages that operator tools use (no policy needed):
``breaker_names()``, ``inspect()``, ``inspect_many()``, ``watch_all()`` and ``name_of()``,
on the real Redis and PostgreSQL servers, under asyncio and trio.

Nothing sleeps: waits are on events set by watchers, bounded by ``fail_after``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from tests.helpers import forced

from breaker_machines import Policy, Reason, State
from breaker_machines.storage import (
    Batch,
    CorruptRecordError,
    PostgresStorage,
    Proposal,
    RedisStorage,
    SharedRecord,
    SharedStorage,
    StoredBreaker,
)

LIMIT = 10
WIDE = 1000.0  # bucket width (s): no boundary is crossed during a test

#: Names that are awkward for keys, globs and SQL alike.
NAMES = ["plain", "with space", "co:lon {braces}", "glob*?[x]\\", "ünïcødé ☂"]

Opener = Callable[..., Any]


@pytest.fixture(params=["redis", "postgres"])
def opener(request: pytest.FixtureRequest) -> Opener:
    """Build a storage of either kind on a fresh prefix/schema: ``opener(**options)``."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")

        def redis(**options: Any) -> RedisStorage:
            return RedisStorage(url, prefix=options.pop("prefix", prefix), timeout=5.0, **options)

        return redis
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema: str = request.getfixturevalue("postgres_schema")

    def postgres(**options: Any) -> PostgresStorage:
        return PostgresStorage(dsn, schema=schema, timeout=5.0, **options)

    return postgres


@asynccontextmanager
async def opened(storage: SharedStorage) -> AsyncGenerator[Any, None]:
    async with storage:
        with anyio.fail_after(LIMIT):
            await storage.wait_subscribed()  # type: ignore[attr-defined]
        yield storage


POLICY = Policy(failures=100, within=WIDE, failure_rate=0.9, window=WIDE, minimum_calls=1000)


@pytest.mark.anyio
async def test_names_lists_every_stored_breaker_sorted_and_nothing_else(opener: Opener) -> None:
    async with opened(opener()) as storage:
        with anyio.fail_after(LIMIT):
            assert await storage.breaker_names() == []
            for name in NAMES[::2]:  # a transition stores a record...
                await storage.propose(name, 0, forced(State.FORCED_OPEN, Reason.FORCED_OPEN))
            for name in NAMES[1::2]:  # ...and so do counted outcomes
                await storage.flush(name, POLICY, Batch(0, "f", origin="o", seq=1))
            await storage.flush("refreshed only", POLICY, Batch(0))  # stores nothing
            assert await storage.breaker_names() == sorted(NAMES)


@pytest.mark.anyio
async def test_names_of_another_redis_prefix_are_not_listed(
    redis_url: str, redis_prefix: str
) -> None:
    async with (
        opened(RedisStorage(redis_url, prefix=redis_prefix)) as mine,
        opened(RedisStorage(redis_url, prefix=redis_prefix + ":x")) as nested,
        opened(RedisStorage(redis_url, prefix=redis_prefix + "*")) as globbing,
    ):
        with anyio.fail_after(LIMIT):
            proposal = forced(State.FORCED_OPEN, Reason.FORCED_OPEN)
            await mine.propose("a", 0, proposal)
            await nested.propose("b", 0, proposal)
            await globbing.propose("c", 0, proposal)
            assert await mine.breaker_names() == ["a"]
            assert await nested.breaker_names() == ["b"]
            assert await globbing.breaker_names() == ["c"]


@pytest.mark.anyio
async def test_inspect_reads_the_record_and_window_totals_without_a_policy(
    opener: Opener,
) -> None:
    async with opened(opener(ttl=500.0)) as storage:
        with anyio.fail_after(LIMIT):
            missing = await storage.inspect("nobody")
            assert missing.record.missing
            assert missing.record.status is State.CLOSED
            assert missing.record.version == 0
            assert missing.expires_in is None

            await storage.flush("svc", POLICY, Batch(0, "ffSFs", origin="o", seq=1))
            seen = await storage.inspect("svc")
            assert isinstance(seen, StoredBreaker)
            assert seen.name == "svc"
            assert not seen.record.missing
            assert seen.record.status is State.CLOSED
            assert seen.record.consecutive_failures == 0
            assert seen.window_failures == 3
            assert (seen.rate_calls, seen.rate_failures, seen.rate_slow) == (5, 3, 2)
            assert seen.expires_in is not None
            assert 400.0 < seen.expires_in <= 500.0

            await storage.flush("svc", POLICY, Batch(0, "ff", origin="o", seq=2))
            assert (await storage.inspect("svc")).record.consecutive_failures == 2

            await storage.propose("svc", 0, forced(State.OPEN, Reason.FAILURE_RATE))
            opened_one = await storage.inspect("svc")
            record = opened_one.record
            assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
            assert record.reason is Reason.FAILURE_RATE
            assert record.retry_in is not None
            assert 25.0 < record.retry_in <= 30.0
            assert record.opened_ago is not None
            assert 0.0 <= record.opened_ago < 5.0
            assert record.origin == "test"
            # a transition starts a new generation: the windows are empty
            assert (opened_one.window_failures, opened_one.rate_calls) == (0, 0)


@pytest.mark.anyio
async def test_inspect_writes_nothing_and_extends_no_ttl(opener: Opener) -> None:
    async with opened(opener(ttl=500.0)) as storage:
        with anyio.fail_after(LIMIT):
            await storage.flush("svc", POLICY, Batch(0, "f", origin="o", seq=1))
            storage.advance_clock(100.0)
            first = await storage.inspect("svc")
            second = await storage.inspect("svc")
            assert first.expires_in is not None
            assert second.expires_in is not None
            if isinstance(storage, PostgresStorage):  # (Redis's TTL runs on real time)
                assert 390.0 < first.expires_in <= 400.0
            assert second.expires_in <= first.expires_in
            await storage.inspect("nobody")
            assert await storage.breaker_names() == ["svc"]


@pytest.mark.anyio
async def test_watch_all_hears_every_breaker_and_name_of_turns_keys_into_names(
    opener: Opener,
) -> None:
    async with opened(opener()) as listener, opened(opener()) as writer:
        heard: list[tuple[str, SharedRecord]] = []
        done = anyio.Event()

        def watcher(key: str, record: SharedRecord) -> None:
            heard.append((key, record))
            if len(heard) == len(NAMES):
                done.set()

        stop = listener.watch_all(watcher)
        with anyio.fail_after(LIMIT):
            for name in NAMES:
                await writer.propose(name, 0, forced(State.FORCED_OPEN, Reason.FORCED_OPEN))
            await done.wait()
            stop()
            names = [await listener.name_of(key) for key, _ in heard]
            assert sorted(n for n in names if n is not None) == sorted(NAMES)
            for key, record in heard:
                assert record.status is State.FORCED_OPEN
                assert record.reason is Reason.FORCED_OPEN
                if isinstance(listener, PostgresStorage):
                    assert len(key) == 32  # the MD5 of the name: payloads are bounded
                else:
                    assert key in NAMES
            if isinstance(listener, PostgresStorage):
                unknown = hashlib.md5(b"nobody").hexdigest()
                assert await listener.name_of(unknown) is None
            # stopped: nothing more arrives
            await writer.propose("plain", 1, forced(State.CLOSED, Reason.FORCED_CLOSE))
            assert len(heard) == len(NAMES)


@pytest.mark.anyio
async def test_a_corrupt_record_is_an_error_of_its_own_in_inspect_many(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    async with opened(RedisStorage(redis_url, prefix=redis_prefix)) as storage:
        with anyio.fail_after(LIMIT):
            await storage.propose("good", 0, forced(State.FORCED_OPEN, Reason.FORCED_OPEN))
            await storage.propose("bad", 0, forced(State.FORCED_OPEN, Reason.FORCED_OPEN))
            client = redis.Redis.from_url(redis_url)  # pyright: ignore[reportUnknownMemberType]
            try:
                client.hset(storage.keys("bad")[0], "trips", "many")
            finally:
                client.close()
            with pytest.raises(CorruptRecordError):
                await storage.inspect("bad")
            good, bad = await storage.inspect_many(["good", "bad"])
            assert isinstance(good, StoredBreaker)
            assert good.record.version == 1
            assert isinstance(bad, CorruptRecordError)


@pytest.mark.anyio
async def test_the_base_class_leaves_the_read_side_unimplemented() -> None:
    class Bare(SharedStorage):
        async def __aenter__(self) -> Bare:  # pragma: no cover - never opened
            return self

        async def __aexit__(self, *exc: object) -> None:  # pragma: no cover
            pass

        async def flush(self, name: str, policy: Policy, batch: Batch) -> SharedRecord:
            raise NotImplementedError  # pragma: no cover

        async def propose(
            self, name: str, expected: int, proposal: Proposal, *, force: bool = False
        ) -> tuple[bool, SharedRecord]:
            raise NotImplementedError  # pragma: no cover

        async def acquire_probe(
            self, name: str, version: int, limit: int, lease: float, token: str
        ) -> tuple[bool, SharedRecord]:
            raise NotImplementedError  # pragma: no cover

        def watch(self, name: str, watcher: Callable[[SharedRecord], None]) -> Any:
            raise NotImplementedError  # pragma: no cover

    bare = Bare()
    with pytest.raises(NotImplementedError):
        await bare.breaker_names()
    with pytest.raises(NotImplementedError):
        await bare.inspect("x")
    with pytest.raises(NotImplementedError):
        bare.watch_all(lambda key, record: None)
    assert await bare.name_of("x") == "x"
