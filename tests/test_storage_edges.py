"""The storages' less travelled paths, on the real servers: opening without the driver, a
cancelled open, closing what was never opened, answers the storage cannot read, stored
records it must refuse, malformed messages and raising watchers on the push channel, stray
keys under the prefix, and the loop thread of the trio bridge when things go wrong.

Every async test runs under asyncio and trio (``anyio_backend``), except those that hand
the storage a client or pool of the test's own, which is bound to one asyncio loop. What
the test writes behind a storage's back (stray keys, damaged rows, replaced functions,
hand-sent notifications) lives under the test's own Redis prefix or PostgreSQL schema.
Nothing sleeps to wait: tests wait on events set by watchers and hooks, and every wait is
bounded by ``fail_after``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from tests.conftest import Opener
from tests.helpers import Boom, forced

from breaker_machines import ConfigError, Policy, Reason, State
from breaker_machines.storage import (
    Batch,
    CorruptRecordError,
    PostgresStorage,
    RedisStorage,
    SharedRecord,
    StorageError,
)
from breaker_machines.storage._bridge import LoopThread

#: Every wait is bounded: a broken storage fails a test, it never hangs it.
LIMIT = 20.0

POLICY = Policy(consecutive_failures=100)

#: A Redis URL with an option redis-py refuses.
BAD_OPTION_URL = "redis://127.0.0.1:6379/0?socket_timeout=abc"

both = pytest.mark.anyio
#: A client or pool of the test's own belongs to one asyncio loop (as in the other suites).
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


#: ``opened(origin="test")``: the transition CLOSED (version 0) -> OPEN (version 1).
opened = partial(forced, State.OPEN, Reason.CONSECUTIVE_FAILURES)


def bridge_threads() -> list[threading.Thread]:
    """The storages' own loop threads that are alive."""
    names = ("breaker-machines-redis", "breaker-machines-postgres")
    return [t for t in threading.enumerate() if t.name in names and t.is_alive()]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def redis_command(url: str, command: str, *args: Any) -> Any:
    """One command on a blocking client of the test's own, in a worker thread."""
    import redis

    def run() -> Any:
        client = redis.Redis.from_url(url)
        try:
            return client.execute_command(command, *args)
        finally:
            client.close()

    return await anyio.to_thread.run_sync(run)


async def sql(dsn: str, statement: str, *args: Any) -> Any:
    """``fetchval`` on a connection of the test's own, on an asyncio loop in a worker
    thread (the same under asyncio and trio)."""
    import asyncpg

    async def go() -> Any:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetchval(statement, *args)
        finally:
            await connection.close()

    return await anyio.to_thread.run_sync(asyncio.run, go())


@dataclass(frozen=True)
class Backend:
    """One kind of storage on its real server, and what a test does behind its back."""

    kind: str  # "redis" or "postgres", as the storage's messages name it
    address: str  # the Redis URL or the PostgreSQL DSN
    namespace: str  # the test's own Redis prefix or PostgreSQL schema

    def open(self) -> Any:
        """A storage on the test's own prefix or schema."""
        if self.kind == "redis":
            return RedisStorage(self.address, prefix=self.namespace)
        return PostgresStorage(self.address, schema=self.namespace)

    async def send(self, storage: Any, payload: str) -> None:
        """A raw payload on the storage's push channel."""
        if self.kind == "redis":
            await redis_command(self.address, "PUBLISH", storage.channel, payload)
        else:
            await sql(self.address, "SELECT pg_notify($1, $2)", storage.channel, payload)

    async def set_status(self, storage: Any, name: str, status: str) -> None:
        """Overwrite the stored status of breaker ``name``."""
        if self.kind == "redis":
            await redis_command(self.address, "HSET", storage.keys(name)[0], "status", status)
        else:
            table = f'"{self.namespace}".breakers'
            await sql(self.address, f"UPDATE {table} SET status = $1 WHERE name = $2", status, name)


@pytest.fixture(params=["redis", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return Backend("redis", url, request.getfixturevalue("redis_prefix"))
    dsn = request.getfixturevalue("postgres_dsn")
    return Backend("postgres", dsn, request.getfixturevalue("postgres_schema"))


# =========================================================================== both storages


@both
async def test_closing_a_storage_that_is_not_open_does_nothing(open_storage: Opener) -> None:
    storage = open_storage()
    with anyio.fail_after(LIMIT):
        await storage.__aexit__(None, None, None)  # never opened
        with pytest.raises(StorageError, match="is not open"):
            await storage.flush("svc", POLICY, Batch(0, "f"))
        async with storage:
            record = await storage.flush("svc", POLICY, Batch(0, "ff"))
            assert record.consecutive_failures == 2
        await storage.__aexit__(None, None, None)  # closed twice
        with pytest.raises(StorageError, match="is not open"):
            await storage.flush("svc", POLICY, Batch(0, "f"))
        async with storage:  # and it opens again afterwards
            record = await storage.flush("svc", POLICY, Batch(0, "f"))
            assert record.consecutive_failures == 3


@both
async def test_an_open_cancelled_midway_leaves_the_storage_closed_and_reusable(
    open_storage: Opener,
) -> None:
    storage = open_storage()
    with anyio.fail_after(LIMIT):
        with anyio.CancelScope() as scope:
            scope.cancel()
            # Under trio the cancellation lands while the driver connects on the loop
            # thread (inside __aenter__); under asyncio at the first checkpoint inside.
            async with storage:
                await anyio.lowlevel.checkpoint()
            pytest.fail("the cancelled scope went on")  # pragma: no cover
        assert scope.cancelled_caught
        assert bridge_threads() == []  # the loop thread of a trio open is gone
        with pytest.raises(StorageError, match="is not open"):
            await storage.flush("svc", POLICY, Batch(0, "f"))
        async with storage:
            record = await storage.flush("svc", POLICY, Batch(0, "f"))
            assert record.consecutive_failures == 1
    assert bridge_threads() == []


@both
async def test_a_raising_gap_hook_is_logged_and_the_others_still_run(
    open_storage: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage()
    heard: list[str] = []

    def broken() -> None:
        raise Boom("gap hook")

    remove_broken = storage.on_gap(broken)
    storage.on_gap(lambda: heard.append("gap"))
    with anyio.fail_after(LIMIT), caplog.at_level(logging.ERROR, logger="breaker_machines"):
        async with storage:
            await storage.wait_subscribed()  # the hooks run as the listener subscribes
        assert heard == ["gap"]
        failures = [r for r in caplog.records if "a gap hook of" in r.getMessage()]
        assert len(failures) == 1
        assert failures[0].exc_info is not None
        assert isinstance(failures[0].exc_info[1], Boom)
        remove_broken()
        remove_broken()  # removing it twice is harmless
        caplog.clear()
        async with storage:
            await storage.wait_subscribed()
        assert heard == ["gap", "gap"]
        assert not any("a gap hook of" in r.getMessage() for r in caplog.records)


@both
async def test_inspecting_a_damaged_record_is_a_corrupt_record_error(backend: Backend) -> None:
    with anyio.fail_after(LIMIT):
        async with backend.open() as storage:
            await storage.flush("svc", POLICY, Batch(0, "ff"))
            stored = await storage.inspect("svc")
            assert stored.record.consecutive_failures == 2
            await backend.set_status(storage, "svc", "ajar")
            before = storage.errors
            malformed = f"{backend.kind}: malformed record"
            with pytest.raises(CorruptRecordError, match=malformed) as caught:
                await storage.inspect("svc")
            assert "ajar" in str(caught.value)
            assert storage.errors == before + 1
            if backend.kind == "redis":
                # Impossible window totals are refused too: more slow calls than calls.
                url = backend.address
                await redis_command(url, "HSET", storage.keys("other")[0], "version", "0")
                await redis_command(url, "HSET", storage.keys("other")[1], "s:1", "5")
                with pytest.raises(CorruptRecordError, match="impossible"):
                    await storage.inspect("other")
                assert storage.errors == before + 2


@both
async def test_malformed_pushes_and_raising_watchers_are_logged_and_skipped(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[SharedRecord] = []
    got_all: list[tuple[str, SharedRecord]] = []
    arrived = anyio.Event()
    stopped_all: list[str] = []

    def broken(record: SharedRecord) -> None:
        raise Boom("watcher")

    def broken_all(key: str, record: SharedRecord) -> None:
        raise Boom("every watcher")

    def good(record: SharedRecord) -> None:
        got.append(record)

    def good_all(key: str, record: SharedRecord) -> None:
        got_all.append((key, record))
        arrived.set()

    # A push names its breaker by name on Redis, by the MD5 of the name on PostgreSQL.
    by_name = backend.kind == "redis"
    field, push = ("name", "message") if by_name else ("key", "notification")
    with anyio.fail_after(LIMIT), caplog.at_level(logging.WARNING, logger="breaker_machines"):
        async with backend.open() as storage:
            storage.watch("svc", broken)
            storage.watch("svc", good)
            storage.watch_all(broken_all)
            storage.watch_all(good_all)
            stop = storage.watch_all(lambda key, record: stopped_all.append(key))
            stop()
            stop()  # stopping twice is harmless
            await storage.wait_subscribed()
            for payload in ("not json", f'{{"{field}": 5, "status": "open"}}', '["svc"]'):
                await backend.send(storage, payload)
            won, _ = await storage.propose("svc", 0, opened("writer"))
            assert won
            # Pushes arrive in order (commit order on PostgreSQL): the malformed ones first.
            await arrived.wait()
            key = got_all[0][0]
            assert await storage.name_of(key) == "svc"
    (record,) = got
    assert (record.status, record.version, record.origin) == (State.OPEN, 1, "writer")
    assert got_all == [("svc" if by_name else key, record)]
    assert stopped_all == []
    warnings = messages(caplog, logging.WARNING)
    assert sum(f"ignored a malformed {push}" in m for m in warnings) == 3
    errors = messages(caplog, logging.ERROR)
    assert "a watcher of 'svc' raised" in errors
    at = "'svc'" if by_name else f"key {key}"
    assert f"a watcher of every breaker raised (at {at})" in errors


# =========================================================================== no driver


@both
@pytest.mark.parametrize(
    ("driver", "extra", "make"),
    [
        # Without redis-py the URL's options cannot be checked up front: they are accepted
        # here (a bad socket_timeout is refused with redis-py installed, see below).
        ("redis.asyncio", "redis", lambda: RedisStorage(BAD_OPTION_URL)),
        (
            "asyncpg",
            "postgres",
            lambda: PostgresStorage("postgresql://postgres@127.0.0.1:5432/test"),
        ),
    ],
    ids=["redis", "postgres"],
)
async def test_a_storage_without_its_driver_is_refused_when_it_opens(
    driver: str, extra: str, make: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, driver, None)  # as if the driver were missing
    storage = make()
    # Opening says what is missing.
    with pytest.raises(ConfigError, match=rf"pip install 'breaker-machines\[{extra}\]'") as caught:
        async with storage:
            pytest.fail("opened without its driver")  # pragma: no cover
    assert caught.value.field == "storage"
    assert bridge_threads() == []
    monkeypatch.undo()
    if extra == "redis":
        with pytest.raises(ConfigError, match="redis-py refuses"):
            RedisStorage(BAD_OPTION_URL)


# =========================================================================== configuration


def test_a_redis_url_with_a_bad_port_after_an_ipv6_host_hides_port_and_password() -> None:
    with pytest.raises(ConfigError, match="bad port") as caught:
        RedisStorage("redis://user:s3cret@[::1]:99999/0")
    assert caught.value.field == "url"
    assert caught.value.value == "redis://user:***@[::1]:***/0"
    assert "s3cret" not in str(caught.value)
    assert "99999" not in str(caught.value)


@pytest.mark.parametrize("table", ["breakers_meta", "t_buckets", "x_probes"])
def test_a_postgres_table_named_like_the_storages_own_tables_is_refused(table: str) -> None:
    with pytest.raises(ConfigError, match="must not end in _meta, _buckets or _probes") as caught:
        PostgresStorage("postgresql://postgres@127.0.0.1/test", table=table)
    assert caught.value.field == "table"
    assert caught.value.value == table


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -float("inf"), True, "1"])
def test_advance_clock_refuses_what_is_not_a_finite_number(seconds: Any) -> None:
    redis_storage = RedisStorage("redis://127.0.0.1:6379/0")
    postgres_storage = PostgresStorage("postgresql://postgres@127.0.0.1/test")
    for storage in (redis_storage, postgres_storage):
        with pytest.raises(ConfigError, match="must be a finite number") as caught:
            storage.advance_clock(seconds)
        assert caught.value.field == "seconds"
        storage.advance_clock(2.5)  # a finite number still moves the clock
        storage.advance_clock(-1)
        assert storage._shift == 1.5  # pyright: ignore[reportPrivateUsage]


@both
@pytest.mark.parametrize("limit", [0, -1, 2_147_483_648, True, 1.5, "10"])
async def test_sweep_refuses_a_bad_limit_before_anything_else(limit: Any) -> None:
    storage = PostgresStorage("postgresql://postgres@127.0.0.1/test")
    # Not even open: the limit is checked first.
    with pytest.raises(ConfigError, match="must be an integer from 1 to 2147483647") as caught:
        await storage.sweep(limit)
    assert caught.value.field == "limit"


def test_new_origins_are_fresh_hex_identifiers() -> None:
    origins = {RedisStorage.new_origin() for _ in range(100)}
    assert len(origins) == 100
    assert all(len(o) == 32 and int(o, 16) >= 0 for o in origins)


# =========================================================================== redis


@pytest.mark.anyio
@asyncio_only
async def test_a_client_the_storage_cannot_use_fails_the_open_and_leaves_it_closed(
    redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url, encoding="no-such-codec")
    try:
        storage = RedisStorage(client=client, prefix=redis_prefix)
        with anyio.fail_after(LIMIT):
            # Registering the scripts encodes them with the client's encoding.
            with pytest.raises(LookupError, match="no-such-codec"):
                async with storage:
                    pytest.fail("opened")  # pragma: no cover
            with pytest.raises(StorageError, match="is not open"):
                await storage.flush("svc", POLICY, Batch(0, "f"))
    finally:
        await client.aclose()


@pytest.mark.anyio
@asyncio_only
async def test_redis_answers_the_storage_cannot_read_are_storage_errors(
    redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    answer: dict[str, Any] = {}
    # Every script's answer, as this client hands it over, is what the test says.
    client.set_response_callback("EVALSHA", lambda response, **options: answer["raw"])
    try:
        async with RedisStorage(client=client, prefix=redis_prefix) as storage:
            with anyio.fail_after(LIMIT):
                answer["raw"] = b"not json"
                with pytest.raises(StorageError, match=r"redis flush: unreadable answer b'not"):
                    await storage.flush("svc", POLICY, Batch(0, "f"))
                assert storage.errors == 1
                answer["raw"] = b'{"ok": 1}'
                with pytest.raises(StorageError, match=r"redis: unreadable answer \{'ok': 1\}"):
                    await storage.propose("svc", 0, opened())
                assert storage.errors == 2
                for raw in (b"[2, {}]", b"[1]", b"[1, {}, 3]"):
                    answer["raw"] = raw
                    with pytest.raises(StorageError, match=r"redis: unreadable answer \["):
                        await storage.acquire_probe("svc", 0, 1, 10.0, "token")
                assert storage.errors == 5
                answer["raw"] = b'{"status": "half-closed", "version": 1, "trips": 1}'
                with pytest.raises(CorruptRecordError, match="redis: malformed record"):
                    await storage.inspect("svc")
                assert storage.errors == 6
                # Only the answers were unreadable: the scripts ran on the server.
                client.set_response_callback("EVALSHA", lambda response, **options: response)
                stored = await storage.inspect("svc")
                assert (stored.record.status, stored.record.version) == (State.OPEN, 1)
                assert storage.errors == 6
    finally:
        await client.aclose()


@both
async def test_breaker_names_pages_through_scan_and_skips_keys_it_did_not_make(
    redis_url: str, redis_prefix: str
) -> None:
    storage = RedisStorage(redis_url, prefix=redis_prefix)
    # Enough keys that SCAN (500 a round) needs several rounds.
    names = [f"svc-{i:04d}" for i in range(1500)]
    pairs: list[str] = []
    for name in names:
        pairs += [storage.keys(name)[0], "1"]
    stray = [
        f"{redis_prefix}:{{~%FF}}:state",  # not UTF-8 once decoded
        f"{redis_prefix}:{{~%ZZ}}:state",  # not how any name is encoded
        f"{redis_prefix}:{{~a%62}}:state",  # "ab" encoded otherwise than keys() does
    ]
    for key in stray:
        pairs += [key, "1"]
    with anyio.fail_after(LIMIT):
        await redis_command(redis_url, "MSET", *pairs)
        async with storage:
            assert await storage.breaker_names() == names


# =========================================================================== postgres


async def replace_function(dsn: str, schema: str, function: str, answer: str) -> None:
    """Make ``<schema>.<function>`` (same arguments) answer ``answer`` (an SQL jsonb)."""
    arguments = await sql(
        dsn,
        "SELECT pg_get_function_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2",
        schema,
        function,
    )
    assert arguments is not None
    await sql(
        dsn,
        f'CREATE OR REPLACE FUNCTION "{schema}"."{function}"({arguments}) '
        f"RETURNS jsonb LANGUAGE sql AS $$ SELECT {answer} $$",
    )


@asynccontextmanager
async def holding_svc(dsn: str, schema: str) -> AsyncIterator[PostgresStorage]:
    """An open PostgreSQL storage on the test's schema, which it made by storing one
    failure of breaker "svc"."""
    async with PostgresStorage(dsn, schema=schema) as storage:
        await storage.flush("svc", POLICY, Batch(0, "f"))
        yield storage


@both
async def test_postgres_answers_the_storage_cannot_read_are_storage_errors(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async def replace(function: str, answer: str) -> None:
        await replace_function(postgres_dsn, postgres_schema, function, answer)

    with anyio.fail_after(LIMIT):
        async with holding_svc(postgres_dsn, postgres_schema) as storage:
            await replace("breakers_flush", "NULL::jsonb")
            await replace("breakers_propose", "'{}'::jsonb")
            await replace("breakers_acquire", "'[2, {}]'::jsonb")
            before = storage.errors
            with pytest.raises(StorageError, match="postgres flush: unreadable answer None"):
                await storage.flush("svc", POLICY, Batch(0, "f"))
            with pytest.raises(StorageError, match=r"postgres: unreadable answer \{\}"):
                await storage.propose("svc", 0, opened())
            with pytest.raises(StorageError, match=r"postgres: unreadable answer \[2, \{\}\]"):
                await storage.acquire_probe("svc", 0, 1, 10.0, "token")
            assert storage.errors == before + 3
            await replace("breakers_acquire", "'[1]'::jsonb")
            with pytest.raises(StorageError, match=r"postgres: unreadable answer \[1\]"):
                await storage.acquire_probe("svc", 0, 1, 10.0, "token")
            assert storage.errors == before + 4
            stored = await storage.inspect("svc")  # the replaced functions wrote nothing
            assert stored.record.consecutive_failures == 1


@both
async def test_breaker_names_refuses_names_that_are_not_strings(
    postgres_dsn: str, postgres_schema: str
) -> None:
    with anyio.fail_after(LIMIT):
        async with holding_svc(postgres_dsn, postgres_schema) as storage:
            assert await storage.breaker_names() == ["svc"]
            # Someone put a table of another shape in its place.
            table = f'"{postgres_schema}".breakers'
            await sql(postgres_dsn, f"ALTER TABLE {table} RENAME TO breakers_old")
            await sql(postgres_dsn, f"CREATE VIEW {table} AS SELECT 7 AS name")
            before = storage.errors
            with pytest.raises(StorageError, match=r"postgres names: unreadable answer \[7\]"):
                await storage.breaker_names()
            assert storage.errors > before


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_pool_of_the_callers_is_used_under_asyncio_and_refused_under_trio(
    anyio_backend: str, postgres_dsn: str, postgres_schema: str
) -> None:
    import asyncpg

    if anyio_backend == "asyncio":
        pool = await asyncpg.create_pool(postgres_dsn, min_size=0, max_size=4)
        try:
            with anyio.fail_after(LIMIT):
                async with PostgresStorage(pool=pool, schema=postgres_schema) as storage:
                    record = await storage.flush("svc", POLICY, Batch(0, "f"))
                    assert record.consecutive_failures == 1
                assert not pool.is_closing()  # the caller's pool stays open
                assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()
        return

    async def make() -> Any:  # a pool of another (asyncio) loop, as a trio caller has
        made = await asyncpg.create_pool(postgres_dsn, min_size=0, max_size=4)
        await made.close()
        return made

    pool = await anyio.to_thread.run_sync(asyncio.run, make())
    storage = PostgresStorage(pool=pool, schema=postgres_schema)
    with anyio.fail_after(LIMIT):
        with pytest.raises(ConfigError, match="under trio pass dsn= instead") as caught:
            async with storage:
                pytest.fail("opened")  # pragma: no cover
    assert caught.value.field == "pool"
    assert bridge_threads() == []  # the loop thread it started is gone
    with pytest.raises(StorageError, match="is not open"):
        await storage.flush("svc", POLICY, Batch(0, "f"))


# =========================================================================== loop thread


@both
async def test_a_loop_thread_names_itself_and_shows_its_state() -> None:
    loop_thread = LoopThread("bm-test-loop")
    assert loop_thread.name == "bm-test-loop"
    assert repr(loop_thread) == "<LoopThread 'bm-test-loop' new>"
    loop_thread.start()
    try:
        assert repr(loop_thread) == "<LoopThread 'bm-test-loop' running>"
        assert loop_thread.thread is not None
        assert loop_thread.thread.name == "bm-test-loop"
        assert await loop_thread.run(asyncio.sleep, 0, "ok") == "ok"
    finally:
        await loop_thread.aclose()
    assert repr(loop_thread) == "<LoopThread 'bm-test-loop' closed>"


def test_a_loop_thread_that_cannot_start_its_thread_closes_its_loop_and_can_retry() -> None:
    # In a child process: the address space is capped so that no thread stack fits.
    code = textwrap.dedent(
        """
        import asyncio, resource, threading
        from breaker_machines.storage._bridge import LoopThread

        def size():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[0]) * resource.getpagesize()

        loop_thread = LoopThread("bm-no-thread")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        threading.stack_size(256 * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (size() + 64 * 1024 * 1024, hard))
        try:
            loop_thread.start()
        except RuntimeError as error:
            print("refused:", error)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            threading.stack_size(0)
        print(repr(loop_thread), loop_thread.loop, loop_thread.thread)
        print("threads:", threading.active_count())
        loop_thread.start()
        print(repr(loop_thread))
        asyncio.run(loop_thread.aclose())
        print(repr(loop_thread))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "refused: can't start new thread",
        "<LoopThread 'bm-no-thread' new> None None",  # nothing kept: it may start again
        "threads: 1",
        "<LoopThread 'bm-no-thread' running>",
        "<LoopThread 'bm-no-thread' closed>",
    ]


async def _stop_on_its_own(loop_thread: LoopThread) -> None:
    """Stop the loop of ``loop_thread`` from inside (not through aclose) and wait for its
    thread to end."""
    loop, thread = loop_thread.loop, loop_thread.thread
    assert loop is not None
    assert thread is not None
    loop.call_soon_threadsafe(loop.stop)
    await anyio.to_thread.run_sync(thread.join)


@both
async def test_a_loop_thread_whose_loop_ended_on_its_own_refuses_calls() -> None:
    loop_thread = LoopThread("bm-test-stopped")
    loop_thread.start()
    await _stop_on_its_own(loop_thread)
    with anyio.fail_after(LIMIT), pytest.raises(RuntimeError, match="Event loop is closed"):
        await loop_thread.run(asyncio.sleep, 0)
    assert loop_thread.loop is not None
    assert loop_thread.loop.is_closed()


@both
async def test_closing_a_loop_thread_whose_loop_ended_on_its_own_is_harmless() -> None:
    loop_thread = LoopThread("bm-test-stopped")
    loop_thread.start()
    await _stop_on_its_own(loop_thread)
    with anyio.fail_after(LIMIT):
        await loop_thread.aclose()
    assert repr(loop_thread) == "<LoopThread 'bm-test-stopped' closed>"


@both
async def test_a_loop_thread_refuses_a_caller_of_another_async_library() -> None:
    import sniffio

    loop_thread = LoopThread("bm-test-library")
    loop_thread.start()
    try:
        previous = sniffio.thread_local.name
        sniffio.thread_local.name = "curio"  # what sniffio says under curio
        try:
            with pytest.raises(RuntimeError, match="from asyncio or trio, not from 'curio'"):
                await loop_thread.run(asyncio.sleep, 0)
        finally:
            sniffio.thread_local.name = previous
        with anyio.fail_after(LIMIT):  # still usable from a supported library
            assert await loop_thread.run(asyncio.sleep, 0, "ok") == "ok"
    finally:
        await loop_thread.aclose()


@both
async def test_a_cancelled_aclose_lets_the_thread_wind_down_on_its_own() -> None:
    loop_thread = LoopThread("bm-test-winding")
    loop_thread.start()
    started = threading.Event()
    gates: list[asyncio.Event] = []

    async def stubborn() -> None:
        """A driver call that, once cancelled, takes until the gate opens to unwind."""
        gate = asyncio.Event()
        gates.append(gate)
        started.set()
        try:
            await asyncio.get_running_loop().create_future()  # never done
        except asyncio.CancelledError:
            await gate.wait()
            raise

    outcome: list[str] = []

    async def call() -> None:
        with pytest.raises(RuntimeError, match="was cancelled on bm-test-winding's event loop"):
            await loop_thread.run(stubborn)
        outcome.append("cancelled")

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await anyio.to_thread.run_sync(started.wait)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await loop_thread.aclose()  # cancelled while the thread unwinds stubborn
            assert scope.cancelled_caught
            assert repr(loop_thread) == "<LoopThread 'bm-test-winding' closed>"
            thread, loop = loop_thread.thread, loop_thread.loop
            assert thread is not None
            assert loop is not None
            assert thread.is_alive()  # stubborn still holds it
            assert outcome == []
            loop.call_soon_threadsafe(gates[0].set)
            await loop_thread.aclose()  # again: waits for the thread this time
        assert not thread.is_alive()
        assert loop.is_closed()
    assert outcome == ["cancelled"]
