"""The PostgreSQL storage: its configuration, its schema, the shared-storage protocol on a
real server, TTL and sweeping, breakers sharing one circuit through it, and what a breaker
does when PostgreSQL is unreachable or never answers.

Every async test runs under asyncio and trio. Nothing here sleeps to wait for something:
tests flush with ``await breaker.sync()``, wait on events that callbacks set, move the
storage's clock with ``advance_clock()``, and bound every wait with ``fail_after``. What the
storage wrote is read back through a plain asyncpg connection of the test's own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import string
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest

from breaker_machines import (
    Breaker,
    CircuitOpenError,
    ConfigError,
    Policy,
    Reason,
    State,
    Transition,
    running,
)
from breaker_machines.storage import (
    Batch,
    PostgresStorage,
    Proposal,
    SharedRecord,
    StorageError,
)
from breaker_machines.storage._postgres_sql import SCHEMA_VERSION

#: Every wait is bounded: a broken storage fails a test, it never hangs it.
LIMIT = 10

#: A width so wide (seconds) that no real time passes a bucket boundary during a test.
WIDE = 1000.0

both = pytest.mark.anyio


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


async def succeed() -> str:
    return "ok"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Database:
    """A plain asyncpg connection per call, on an asyncio loop in a worker thread: the
    test's own view of what the storage wrote, the same under asyncio and trio."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        import asyncpg

        async def go() -> Any:
            connection = await asyncpg.connect(self.dsn)
            try:
                return await getattr(connection, method)(sql, *args)
            finally:
                await connection.close()

        return await anyio.to_thread.run_sync(asyncio.run, go())

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._call("fetch", sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchval", sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._call("execute", sql, *args)

    async def now(self) -> float:
        return float(await self.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))

    async def tables(self, schema: str) -> set[str]:
        rows = await self.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        return {row[0] for row in rows}

    async def schema_exists(self, schema: str) -> bool:
        return bool(
            await self.fetchval(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema
            )
        )

    async def count(self, schema: str, table: str, name: str | None = None) -> int:
        sql = f'SELECT count(*) FROM "{schema}"."{table}"'
        if name is None:
            return int(await self.fetchval(sql))
        return int(await self.fetchval(sql + " WHERE name = $1", name))

    async def row(self, schema: str, name: str, table: str = "breakers") -> Any:
        return await self._call(
            "fetchrow", f'SELECT * FROM "{schema}"."{table}" WHERE name = $1', name
        )

    async def drop(self, schema: str) -> None:
        await self.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def db(postgres_dsn: str) -> Database:
    return Database(postgres_dsn)


@asynccontextmanager
async def transaction(dsn: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """An open transaction on a connection of the test's own (another process's, in
    effect), kept across awaits: yields ``execute(sql, *args)``. Commit it by hand."""
    import asyncpg

    from breaker_machines.storage._bridge import executor_for_current_loop

    executor = executor_for_current_loop("test-transaction")
    try:
        connection = await executor.run(asyncpg.connect, dsn)
        try:
            await executor.run(connection.execute, "BEGIN")

            async def execute(sql: str, *args: Any) -> Any:
                return await executor.run(connection.execute, sql, *args)

            yield execute
        finally:
            await executor.run(connection.close)
    finally:
        await executor.aclose()


async def align(storage: PostgresStorage, db: Database, width: float = WIDE) -> None:
    """Move ``storage``'s clock to one second into a bucket of ``width`` seconds."""
    now = await db.now()
    storage.advance_clock(math.floor(now / width) * width + width + 1.0 - now)


def proposal(
    status: State,
    version: int,
    *,
    trips: int = 1,
    reason: Reason = Reason.CONSECUTIVE_FAILURES,
    opened_ago: float | None = 0.0,
    open_for: float | None = None,
    origin: str = "test",
) -> Proposal:
    if status is State.OPEN and open_for is None:
        open_for = 30.0
    return Proposal(status, version, trips, reason, opened_ago, open_for, origin)


def total(buckets: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int]:
    return (
        sum(b[0] for b in buckets),
        sum(b[1] for b in buckets),
        sum(b[2] for b in buckets),
    )


@asynccontextmanager
async def storages(
    dsn: str, schema: str, count: int = 2, **options: Any
) -> AsyncIterator[list[PostgresStorage]]:
    """``count`` storages on one schema (think: processes), each listening.

    Batches wait for ``sync()`` and idle breakers never refresh on their own, so only what
    a test does (or notifies) moves a breaker.
    """
    settings: dict[str, Any] = {
        "flush_interval": 3600.0,
        "refresh_interval": 3600.0,
        "timeout": 5.0,
        **options,
    }
    async with PostgresStorage(dsn, schema=schema, **settings) as first:
        if count == 1:
            with anyio.fail_after(LIMIT):
                await first.wait_subscribed()
            yield [first]
            return
        async with storages(dsn, schema, count - 1, **options) as rest:
            with anyio.fail_after(LIMIT):
                await first.wait_subscribed()
            yield [first, *rest]


class Proxy:
    """A loopback TCP server in front of PostgreSQL that the test switches between modes.

    ``refuse``: every connection is closed at once; ``blackhole``: accepted and never
    answered; ``forward``: relayed to PostgreSQL; ``mute``: relayed to PostgreSQL, whose
    answers are dropped (a request goes through, its answer is lost). ``port`` is where
    it listens. While ``drop`` is set, what a client sends containing it never reaches
    the server (that request hangs; the rest of the connection's traffic flows).
    """

    def __init__(self, target: tuple[str, int], mode: str) -> None:
        self.target = target
        self.mode = mode
        self.port = 0
        self.refused = anyio.Event()
        self.accepted = anyio.Event()
        self.drop: bytes | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            self.accepted.set()
            if self.mode == "refuse":
                self.refused.set()
                return
            if self.mode == "blackhole":
                await anyio.sleep_forever()
            upstream = await anyio.connect_tcp(*self.target)
            async with upstream, anyio.create_task_group() as tg:

                async def pump(
                    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream
                ) -> None:
                    try:
                        async for chunk in source:
                            if self.mode == "mute" and source is upstream:
                                continue
                            if self.drop is not None and source is client and self.drop in chunk:
                                continue
                            await sink.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)


@asynccontextmanager
async def proxy(mode: str, target: tuple[str, int] = ("127.0.0.1", 5432)) -> AsyncIterator[Proxy]:
    server = Proxy(target, mode)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def postgres_address(dsn: str) -> tuple[str, int]:
    import urllib.parse

    parts = urllib.parse.urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def proxied(dsn: str, server: Proxy) -> str:
    """``dsn`` with its host and port replaced by the proxy's."""
    import urllib.parse

    parts = urllib.parse.urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{server.port}" if user else f"127.0.0.1:{server.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# =========================================================================== configuration

DSN = "postgresql://postgres@127.0.0.1:5432/test"

BAD_IDENTIFIERS = [
    "",
    "1abc",
    "9",
    'a"b',
    '"',
    "a;b",
    "a; DROP TABLE x",
    "a b",
    " a",
    "a-b",
    "a.b",
    "a\nb",
    "a\n",  # re.match's $ would accept a trailing newline; fullmatch must not
    "ünï",
    "x" * 41,
    "_" * 41,
    7,
    None,
    b"bytes",
    ["a"],
]

NOT_SECONDS = (0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "1", None)


@pytest.mark.parametrize(
    ("args", "options", "field"),
    [
        ((), {}, "dsn"),  # neither dsn nor pool
        ((DSN,), {"pool": object()}, "dsn"),  # both
        ((42,), {}, "dsn"),
        ((b"postgresql://h/db",), {}, "dsn"),
        (("mysql://127.0.0.1:3306/db",), {}, "dsn"),
        (("http://127.0.0.1:5432/db",), {}, "dsn"),
        (("redis://127.0.0.1:6379/0",), {}, "dsn"),
        (("127.0.0.1:5432",), {}, "dsn"),
        (("host=127.0.0.1 dbname=test",), {}, "dsn"),  # a libpq key=value string
        (("postgresql://127.0.0.1:99999/db",), {}, "dsn"),
        (("postgresql://127.0.0.1:65536/db",), {}, "dsn"),
        (("postgresql://127.0.0.1:port/db",), {}, "dsn"),
        (("postgresql://127.0.0.1:-1/db",), {}, "dsn"),
        (("postgres://user:secret@127.0.0.1:5x/db",), {}, "dsn"),
        ((), {"pool": object()}, "pool"),
        ((), {"pool": DSN}, "pool"),
        ((), {"pool": 0}, "pool"),
        *[((DSN,), {"schema": value}, "schema") for value in BAD_IDENTIFIERS],
        *[((DSN,), {"table": value}, "table") for value in BAD_IDENTIFIERS],
        *[((DSN,), {"create": value}, "create") for value in (1, 0, "yes", "", None, 1.0)],
        *[
            ((DSN,), {field: value}, field)
            for field in ("ttl", "timeout", "refresh_interval", "sweep_interval")
            for value in NOT_SECONDS
        ],
        *[
            ((DSN,), {"flush_interval": value}, "flush_interval")
            for value in (-0.001, -1, math.nan, math.inf, -math.inf, True, False, "0", None)
        ],
        *[
            ((DSN,), {"flush_size": value}, "flush_size")
            for value in (0, -1, True, False, 1.5, "10", None)
        ],
        *[
            ((DSN,), {"max_connections": value}, "max_connections")
            for value in (1, 0, -3, True, False, 2.5, "16", None)
        ],
    ],
)
def test_a_bad_configuration_raises_config_error_naming_the_field(
    args: tuple[Any, ...], options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStorage(*args, **options)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}=")


def test_a_bad_dsn_is_reported_before_anything_else() -> None:
    # Only the dsn is wrong here: no other field is blamed for it.
    with pytest.raises(ConfigError) as caught:
        PostgresStorage("mysql://h/db", schema="ok", table="ok", ttl=5)
    assert caught.value.field == "dsn"


@pytest.mark.parametrize(
    "dsn",
    [
        DSN,
        "postgres://127.0.0.1/test",
        "postgresql://localhost",
        "postgresql://user:pw@db.example.com:6543/app?sslmode=require",
        "postgresql://[::1]:5432/db",
        "postgresql://db/app?application_name=x&connect_timeout=3",
    ],
)
def test_good_dsns_are_accepted(dsn: str) -> None:
    storage = PostgresStorage(dsn)
    assert (storage.schema, storage.table) == ("breaker_machines", "breakers")
    assert storage.channel == "breaker_machines.breakers"
    assert storage.create is True


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql:///test",
        "postgresql:///test?host=/var/run/postgresql",
        "postgresql://",
        "postgresql://:5432/test",
        "postgres://user@/test?host=/tmp",
    ],
)
def test_a_dsn_for_the_local_unix_socket_is_accepted(dsn: str) -> None:
    storage = PostgresStorage(dsn)  # libpq's "no host": the local Unix socket
    assert storage.channel == "breaker_machines.breakers"


@pytest.mark.parametrize(
    "dsn", ["postgresql:///test", "postgresql:///test?host=/var/run/postgresql", "postgresql://"]
)
def test_repr_shows_a_dsn_without_a_host_as_given(dsn: str) -> None:
    assert repr(PostgresStorage(dsn)) == f"<PostgresStorage {dsn} breaker_machines.breakers>"


def test_the_limits_of_each_option_are_accepted() -> None:
    storage = PostgresStorage(
        DSN,
        schema="s" * 40,
        table="T" * 22,  # the channel "<schema>.<table>" fits PostgreSQL's 63 bytes
        create=False,
        ttl=0.5,
        flush_interval=0,
        flush_size=1,
        refresh_interval=0.001,
        timeout=1e-3,
        sweep_interval=1e-3,
        max_connections=2,
    )
    assert (storage.schema, storage.table) == ("s" * 40, "T" * 22)
    assert storage.create is False
    assert storage.ttl == 0.5
    assert storage.flush_interval == 0.0
    assert storage.flush_size == 1
    assert storage.refresh_interval == 0.001
    assert storage.timeout == 0.001
    assert storage.sweep_interval == 0.001
    for identifier in ("_", "a", "A_9", "_1", "x" * 40, "CamelCase"):
        assert PostgresStorage(DSN, schema=identifier).schema == identifier
        assert PostgresStorage(DSN, table=identifier).table == identifier


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://user:secret@db:5432/app", "postgresql://user:***@db:5432/app"),
        ("postgres://:secret@db/app", "postgres://:***@db/app"),
        ("postgresql://secret:secret@db/app", "postgresql://secret:***@db/app"),
        ("postgresql://user@db/app?password=secret", "postgresql://user@db/app?password=***"),
        (
            "postgresql://db/app?sslmode=require&password=secret&application_name=x",
            "postgresql://db/app?sslmode=require&password=***&application_name=x",
        ),
        ("postgresql://u:secret@db/app?passwd=secret", "postgresql://u:***@db/app?passwd=***"),
    ],
)
def test_repr_redacts_the_password(dsn: str, shown: str) -> None:
    text = repr(PostgresStorage(dsn, schema="app", table="cb"))
    assert text == f"<PostgresStorage {shown} app.cb>"
    assert "secret@" not in text
    assert ":secret" not in text
    assert "=secret" not in text


@pytest.mark.parametrize(
    "dsn",
    [
        "mysql://user:secret@db/app",
        "postgresql://user:secret@db:99999/app",
        "postgresql://user:secret@db:port/app",
        "mysql://db/app?password=secret",
        "postgresql://user:secret@db:5432:5433/app",
    ],
)
def test_a_config_error_about_a_dsn_does_not_show_its_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStorage(dsn)
    assert caught.value.field == "dsn"
    assert "secret" not in str(caught.value)
    assert "secret" not in repr(caught.value.value)


def test_a_config_error_for_both_dsn_and_pool_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStorage("postgresql://user:secret@db/app", pool=object())
    assert "secret" not in str(caught.value)


def test_ddl_names_every_object_quoted_and_changes_with_schema_and_table() -> None:
    sql = PostgresStorage(DSN, schema="Sch", table="Tab").ddl()
    for suffix in ("", "_meta", "_buckets", "_probes"):
        assert f'CREATE TABLE IF NOT EXISTS "Sch"."Tab{suffix}"' in sql
    for function in ("record", "flush", "propose", "acquire", "sweep"):
        assert f'CREATE OR REPLACE FUNCTION "Sch"."Tab_{function}"' in sql
    assert 'CREATE SCHEMA IF NOT EXISTS "Sch"' in sql
    assert "breaker_machines" not in sql
    assert PostgresStorage(DSN, schema="Sch", table="Tab").ddl() == sql
    assert PostgresStorage(DSN, schema="Sch", table="Other").ddl() != sql


def test_the_ddl_command_prints_what_the_storage_would_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from breaker_machines.__main__ import main

    # The docstring and the create=False StorageError send users to this command.
    assert "python -m breaker_machines ddl" in (PostgresStorage.__doc__ or "")
    assert main(["ddl", "--schema", "Sch", "--table", "Tab"]) == 0
    assert capsys.readouterr().out == PostgresStorage(DSN, schema="Sch", table="Tab").ddl()
    assert main(["ddl"]) == 0
    assert capsys.readouterr().out == PostgresStorage(DSN).ddl()


# =========================================================================== schema


@both
async def test_the_schema_is_created_on_first_use(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    with anyio.fail_after(LIMIT):
        assert not await db.schema_exists(postgres_schema)
        storage = PostgresStorage(postgres_dsn, schema=postgres_schema)
        assert not await db.schema_exists(postgres_schema)  # building it connects nowhere
        async with storage:
            record = await storage.flush("svc", CONSECUTIVE, Batch(0, "ff"))
            assert record.consecutive_failures == 2
        assert await db.tables(postgres_schema) == {
            "breakers",
            "breakers_buckets",
            "breakers_probes",
            "breakers_meta",
        }
        meta = await db.fetch(f'SELECT key, value FROM "{postgres_schema}"."breakers_meta"')
        assert [tuple(row) for row in meta] == [("schema_version", str(SCHEMA_VERSION))]
        functions = await db.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = $1",
            postgres_schema,
        )
        assert {row[0] for row in functions} == {
            f"breakers_{function}"
            for function in ("record", "flush", "propose", "acquire", "sweep")
        }
        row = await db.row(postgres_schema, "svc")
        assert (row["status"], row["version"], row["consecutive_failures"]) == ("closed", 0, 2)


@both
async def test_storages_opening_one_new_schema_at_once_all_work(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    count = 4
    records: list[SharedRecord] = []
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:

            async def process() -> None:
                async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
                    records.append(await storage.flush("svc", CONSECUTIVE, Batch(0, "f")))
                    await storage.wait_subscribed()

            for _ in range(count):
                tg.start_soon(process)
        assert len(records) == count
        assert sorted(r.consecutive_failures for r in records) == list(range(1, count + 1))
        row = await db.row(postgres_schema, "svc")
        assert row["consecutive_failures"] == count
        meta = await db.count(postgres_schema, "breakers_meta")
        assert meta == 1


@both
async def test_storages_of_different_tables_creating_one_new_schema_at_once_all_work(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    schemas = [f"{postgres_schema}_{i}" for i in range(5)]
    errors: list[StorageError] = []
    try:
        with anyio.fail_after(LIMIT * 2):
            for schema in schemas:
                async with anyio.create_task_group() as tg:

                    async def process(schema: str, table: str) -> None:
                        async with PostgresStorage(
                            postgres_dsn, schema=schema, table=table
                        ) as storage:
                            try:
                                await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
                            except StorageError as error:
                                errors.append(error)

                    for table in ("alpha", "beta", "gamma"):
                        tg.start_soon(process, schema, table)
    finally:
        for schema in schemas:
            await db.drop(schema)
    assert errors == []


@both
async def test_with_create_false_a_missing_schema_fails_every_operation_until_ddl_is_applied(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    with anyio.fail_after(LIMIT):
        async with PostgresStorage(
            postgres_dsn, schema=postgres_schema, create=False, timeout=2.0
        ) as storage:
            operations: list[Callable[[], Awaitable[Any]]] = [
                lambda: storage.flush("svc", CONSECUTIVE, Batch(0, "f")),
                lambda: storage.propose("svc", 0, proposal(State.OPEN, 1)),
                lambda: storage.acquire_probe("svc", 1, 1, 10.0, "t"),
                storage.sweep,
            ]
            for operation in operations:
                with pytest.raises(StorageError) as caught:
                    await operation()
                assert "ddl()" in str(caught.value)
                assert "create=False" in str(caught.value)
            with anyio.move_on_after(0.3) as waited:
                await storage.wait_subscribed()
            assert waited.cancelled_caught, "listening on a table that does not exist"
            assert not await db.schema_exists(postgres_schema)  # no DDL was run

            await db.execute(storage.ddl())
            record = await storage.flush("svc", CONSECUTIVE, Batch(0, "ff"))
            assert record.consecutive_failures == 2
            won, _ = await storage.propose("svc", 0, proposal(State.OPEN, 1))
            assert won
            await storage.wait_subscribed()  # the listener retries and gets there too
        assert await db.tables(postgres_schema) == {
            "breakers",
            "breakers_buckets",
            "breakers_probes",
            "breakers_meta",
        }


@both
async def test_ddl_is_idempotent_and_keeps_the_data(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    storage = PostgresStorage(postgres_dsn, schema=postgres_schema, create=False)
    with anyio.fail_after(LIMIT):
        await db.execute(storage.ddl())
        await db.execute(storage.ddl())
        async with storage:
            record = await storage.flush("svc", CONSECUTIVE, Batch(0, "fff"))
            assert record.consecutive_failures == 3
        await db.execute(storage.ddl())
        async with PostgresStorage(postgres_dsn, schema=postgres_schema) as again:
            record = await again.flush("svc", CONSECUTIVE, Batch(0, "f"))
            assert record.consecutive_failures == 4
        assert await db.count(postgres_schema, "breakers_meta") == 1


@both
async def test_a_schema_of_another_version_is_refused(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    with anyio.fail_after(LIMIT):
        async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
        await db.execute(
            f"UPDATE \"{postgres_schema}\".breakers_meta SET value = '99' "
            "WHERE key = 'schema_version'"
        )
        for create in (True, False):
            async with PostgresStorage(
                postgres_dsn, schema=postgres_schema, create=create
            ) as storage:
                with pytest.raises(StorageError, match="schema version 99"):
                    await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
        row = await db.row(postgres_schema, "svc")
        assert row["consecutive_failures"] == 1  # nothing was written


@both
@pytest.mark.parametrize("table", ["custom", "CamelCase", "_t", "t" * 40])
async def test_another_table_name_works_and_tables_in_one_schema_are_independent(
    postgres_dsn: str, postgres_schema: str, db: Database, table: str
) -> None:
    settings: dict[str, Any] = {"schema": postgres_schema, "timeout": 5.0}
    async with (
        PostgresStorage(postgres_dsn, table=table, **settings) as mine,
        PostgresStorage(postgres_dsn, table=table, **settings) as mine_too,
        PostgresStorage(postgres_dsn, **settings) as default,
    ):
        heard: dict[str, list[SharedRecord]] = {"mine": [], "default": []}
        arrived = {key: anyio.Event() for key in heard}

        def watcher(key: str) -> Callable[[SharedRecord], None]:
            def watch(record: SharedRecord) -> None:
                heard[key].append(record)
                arrived[key].set()

            return watch

        mine_too.watch("svc", watcher("mine"))
        default.watch("svc", watcher("default"))
        with anyio.fail_after(LIMIT):
            await mine_too.wait_subscribed()
            await default.wait_subscribed()
            assert (await mine.flush("svc", CONSECUTIVE, Batch(0, "fff"))).consecutive_failures == 3
            assert (
                await default.flush("svc", CONSECUTIVE, Batch(0, "f"))
            ).consecutive_failures == 1
            won, _ = await mine.propose("svc", 0, proposal(State.OPEN, 1, origin="mine"))
            assert won
            await arrived["mine"].wait()
            # The default table's breaker is untouched, and its listeners heard nothing of
            # it: its own transition is the first thing they hear.
            record = await default.flush("svc", CONSECUTIVE, Batch(0, "f"))
            assert (record.status, record.version, record.consecutive_failures) == (
                State.CLOSED,
                0,
                2,
            )
            won, _ = await default.propose("svc", 0, proposal(State.OPEN, 1, origin="default"))
            assert won
            await arrived["default"].wait()
        assert [r.origin for r in heard["default"]] == ["default"]
        assert [r.origin for r in heard["mine"]] == ["mine"]
        assert mine.channel == f"{postgres_schema}.{table}"
    expected = {
        f"{t}{suffix}"
        for t in (table, "breakers")
        for suffix in ("", "_buckets", "_probes", "_meta")
    }
    assert await db.tables(postgres_schema) == expected
    assert (await db.row(postgres_schema, "svc", table))["status"] == "open"


@both
async def test_the_longest_schema_and_table_names_accepted_work(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    # The NOTIFY channel is "<schema>.<table>", and PostgreSQL channel names have at most
    # 63 bytes: the longest schema (40) leaves 22 characters for the table.
    schema = postgres_schema + "x" * (40 - len(postgres_schema))
    table = "t" * 22
    try:
        with anyio.fail_after(LIMIT):
            async with storages(postgres_dsn, schema, table=table) as (writer, reader):
                assert len(writer.channel) == 63
                heard = anyio.Event()
                reader.watch("svc", lambda record: heard.set())
                await writer.flush("svc", CONSECUTIVE, Batch(0, "f"))
                won, _ = await writer.propose("svc", 0, proposal(State.OPEN, 1))
                assert won
                await heard.wait()
            assert f"{table}_expires_at" in {
                row[0]
                for row in await db.fetch(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema
                )
            }
    finally:
        await db.drop(schema)


@pytest.mark.parametrize(
    ("schema", "table"),
    [("s" * 40, "t" * 23), ("s" * 23, "t" * 40), ("s" * 31, "t" * 32), ("s" * 40, "t" * 40)],
)
def test_a_schema_and_table_too_long_for_a_notify_channel_are_refused(
    schema: str, table: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStorage(DSN, schema=schema, table=table)
    assert caught.value.field == "table"


# =========================================================================== the protocol

CONSECUTIVE = Policy(consecutive_failures=100)
IN_WINDOW = Policy(failures=1000, within=10 * WIDE)  # 10 buckets of WIDE seconds
BY_CALLS = Policy(failure_rate=0.5, window_calls=10, minimum_calls=5)  # 10 buckets of 1 call
BY_PAIRS = Policy(failure_rate=0.5, window_calls=10, minimum_calls=5, buckets=5)  # 5 x 2 calls
BY_TIME = Policy(failure_rate=0.5, slow_call_rate=0.5, slow_call_duration=1.0, window=10 * WIDE)


@both
async def test_a_flush_adds_up_consecutive_failures(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            expected = [("fffsf", 1), ("ff", 3), ("FF", 5), ("", 5), ("S", 0), ("fs", 0), ("f", 1)]
            for outcomes, failures in expected:
                record = await storage.flush("svc", CONSECUTIVE, Batch(0, outcomes))
                assert record.consecutive_failures == failures, outcomes
                assert (record.status, record.version, record.missing) == (
                    State.CLOSED,
                    0,
                    False,
                )
                # A policy without windows reads no buckets back.
                assert (record.failure_buckets, record.rate_buckets) == ((), ())


@both
async def test_a_refresh_of_a_name_never_written_is_missing_and_writes_nothing(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            for policy in (CONSECUTIVE, IN_WINDOW, BY_CALLS, BY_TIME):
                record = await storage.flush("svc", policy, Batch(0))
                assert record.missing
                assert (record.status, record.version, record.trips) == (State.CLOSED, 0, 0)
                assert (record.retry_in, record.opened_ago) == (None, None)
            assert await db.count(postgres_schema, "breakers") == 0
            assert await db.count(postgres_schema, "breakers_buckets") == 0
            await storage.flush("svc", CONSECUTIVE, Batch(0, "s"))
            assert not (await storage.flush("svc", CONSECUTIVE, Batch(0))).missing
            assert await db.count(postgres_schema, "breakers") == 1


@both
async def test_the_failure_window_counts_failures_per_time_bucket(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        await align(storage, db)
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", IN_WINDOW, Batch(0, "fffsf"))
            assert record.failure_buckets == ((4, 4, 0),)
            record = await storage.flush("svc", IN_WINDOW, Batch(0, "FSs"))
            assert record.failure_buckets == ((5, 5, 0),)
            storage.advance_clock(WIDE)
            record = await storage.flush("svc", IN_WINDOW, Batch(0, "ff"))
            assert record.failure_buckets == ((2, 2, 0), (5, 5, 0))
            storage.advance_clock(2 * WIDE)
            record = await storage.flush("svc", IN_WINDOW, Batch(0))
            assert record.failure_buckets == ((0, 0, 0), (0, 0, 0), (2, 2, 0), (5, 5, 0))
            storage.advance_clock(7 * WIDE)  # the bucket of 5 left the window
            record = await storage.flush("svc", IN_WINDOW, Batch(0))
            assert total(record.failure_buckets) == (2, 2, 0)
            assert len(record.failure_buckets) == 10
            storage.advance_clock(WIDE)
            record = await storage.flush("svc", IN_WINDOW, Batch(0, "f"))
            assert record.failure_buckets == ((1, 1, 0),)
            # Buckets that left the window were deleted.
            rows = await db.fetch(
                f'SELECT kind, calls FROM "{postgres_schema}".breakers_buckets WHERE name = $1',
                "svc",
            )
            assert [(row["kind"], row["calls"]) for row in rows] == [(b"f", 1)]


@both
async def test_a_count_based_rate_window_splits_at_the_bucket_size(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            assert BY_CALLS.rate_bucket_calls == 1
            record = await storage.flush("one", BY_CALLS, Batch(0, "fffsf"))
            assert record.rate_head == 4
            assert record.rate_buckets == ((1, 1, 0), (1, 0, 0), (1, 1, 0), (1, 1, 0), (1, 1, 0))
            record = await storage.flush("one", BY_CALLS, Batch(0, "SF"))
            assert record.rate_head == 6
            assert record.rate_buckets[:3] == ((1, 1, 1), (1, 0, 1), (1, 1, 0))
            assert total(record.rate_buckets) == (7, 5, 2)

            assert BY_PAIRS.rate_bucket_calls == 2
            record = await storage.flush("two", BY_PAIRS, Batch(0, "fffsf"))
            assert record.rate_head == 2
            assert record.rate_buckets == ((1, 1, 0), (2, 1, 0), (2, 2, 0))
            record = await storage.flush("two", BY_PAIRS, Batch(0, "S"))  # fills bucket 2
            assert record.rate_head == 2
            assert record.rate_buckets == ((2, 1, 1), (2, 1, 0), (2, 2, 0))
            record = await storage.flush("two", BY_PAIRS, Batch(0, "F"))  # starts bucket 3
            assert record.rate_head == 3
            assert record.rate_buckets == ((1, 1, 1), (2, 1, 1), (2, 1, 0), (2, 2, 0))


@both
async def test_a_count_based_rate_window_keeps_only_its_buckets(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", BY_PAIRS, Batch(0, "f" * 20 + "s" * 5))
            # 25 calls in buckets of 2: buckets 0..12; the window holds 8..12 (9 calls).
            assert record.rate_head == 12
            assert len(record.rate_buckets) == 5
            assert total(record.rate_buckets) == (9, 4, 0)
            assert record.rate_buckets[0] == (1, 0, 0)
            rows = await db.fetch(
                f'SELECT idx FROM "{postgres_schema}".breakers_buckets '
                "WHERE name = $1 AND kind = 'r' ORDER BY idx",
                "svc",
            )
            assert [row["idx"] for row in rows] == [8, 9, 10, 11, 12]


def model_rate_window(outcomes: str, size: int, count: int) -> tuple[int, tuple[Any, ...]]:
    """The count-based window of ``count`` buckets of ``size`` calls after ``outcomes``:
    (head, buckets newest first, empty old buckets trimmed)."""
    if not outcomes:
        return 0, ()
    head = (len(outcomes) - 1) // size
    buckets = []
    for index in range(head, max(-1, head - count), -1):
        letters = outcomes[index * size : (index + 1) * size]
        buckets.append(
            (
                len(letters),
                sum(c in "fF" for c in letters),
                sum(c in "SF" for c in letters),
            )
        )
    while len(buckets) > 1 and buckets[-1] == (0, 0, 0):
        buckets.pop()
    return head, tuple(buckets)


@both
@pytest.mark.parametrize(("window_calls", "buckets"), [(12, 4), (10, 10), (9, 3), (7, 1)])
async def test_random_batches_add_up_like_a_model(
    postgres_dsn: str, postgres_schema: str, window_calls: int, buckets: int
) -> None:
    policy = Policy(
        consecutive_failures=10**6,
        failure_rate=1.0,
        slow_call_rate=1.0,
        slow_call_duration=1.0,
        window_calls=window_calls,
        buckets=buckets,
        minimum_calls=1,
    )
    size = window_calls // buckets
    rng = random.Random(f"{window_calls}/{buckets}")
    seen = ""
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT * 2):
            for _ in range(60):
                batch = "".join(rng.choice("sfSF") for _ in range(rng.choice((0, 1, 2, 5, 13))))
                if rng.random() < 0.2:
                    batch = rng.choice("sS") * 3 + batch  # runs of failures get broken too
                record = await storage.flush("svc", policy, Batch(0, batch))
                seen += batch
                trailing = len(seen) - len(seen.rstrip("fF"))
                assert record.consecutive_failures == trailing
                assert (record.rate_head, record.rate_buckets) == model_rate_window(
                    seen, size, buckets
                ), seen


@both
async def test_a_time_based_rate_window_counts_calls_failures_and_slow_calls(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        await align(storage, db)
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", BY_TIME, Batch(0, "fFsSs"))
            assert record.rate_buckets == ((5, 2, 2),)
            storage.advance_clock(WIDE)
            record = await storage.flush("svc", BY_TIME, Batch(0, "S"))
            assert record.rate_buckets == ((1, 0, 1), (5, 2, 2))
            storage.advance_clock(9 * WIDE)  # the first bucket left; the second stays
            record = await storage.flush("svc", BY_TIME, Batch(0, "f"))
            assert record.rate_buckets[0] == (1, 1, 0)
            assert total(record.rate_buckets) == (2, 1, 1)


@both
async def test_slow_letters_count_as_slow_and_as_what_they_are(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    policy = Policy(
        consecutive_failures=100,
        failures=100,
        within=10 * WIDE,
        slow_call_rate=0.5,
        slow_call_duration=1.0,
        window=10 * WIDE,
    )
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        await align(storage, db)
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", policy, Batch(0, "SSF"))
            assert record.consecutive_failures == 1  # F is a failure
            assert record.failure_buckets == ((1, 1, 0),)  # S is not
            assert record.rate_buckets == ((3, 1, 3),)
            record = await storage.flush("svc", policy, Batch(0, "FF"))
            assert record.consecutive_failures == 3
            record = await storage.flush("svc", policy, Batch(0, "S"))  # a slow success
            assert record.consecutive_failures == 0
            assert record.rate_buckets == ((6, 3, 6),)


@both
async def test_a_batch_of_another_version_is_not_counted(
    postgres_dsn: str, postgres_schema: str
) -> None:
    policy = Policy(consecutive_failures=100, failures=100, within=10 * WIDE)
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            assert (await storage.flush("svc", policy, Batch(1, "fff"))).missing  # a future one
            won, _ = await storage.propose("svc", 0, proposal(State.OPEN, 1))
            assert won
            record = await storage.flush("svc", policy, Batch(0, "fff"))  # an old one
            assert (record.version, record.consecutive_failures) == (1, 0)
            assert record.failure_buckets == ()
            record = await storage.flush("svc", policy, Batch(1, "fff"))  # OPEN counts nothing
            assert (record.version, record.consecutive_failures) == (1, 0)
            assert record.failure_buckets == ()
            won, _ = await storage.propose(
                "svc", 1, proposal(State.CLOSED, 2, reason=Reason.PROBES_SUCCEEDED)
            )
            assert won
            for version in (0, 1, 3):
                record = await storage.flush("svc", policy, Batch(version, "ff"))
                assert (record.version, record.consecutive_failures) == (2, 0)
                assert record.failure_buckets == ()
            record = await storage.flush("svc", policy, Batch(2, "ff"))
            assert (record.version, record.consecutive_failures) == (2, 2)
            assert total(record.failure_buckets) == (2, 2, 0)


@both
async def test_propose_is_a_compare_and_set_on_the_version(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            won, record = await storage.propose("svc", 0, proposal(State.OPEN, 1, origin="one"))
            assert won
            assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
            assert record.reason is Reason.CONSECUTIVE_FAILURES
            assert record.origin == "one"
            assert not record.missing

            # Another process proposing on the version it last saw loses...
            won, record = await storage.propose(
                "svc", 0, proposal(State.OPEN, 1, trips=9, origin="two")
            )
            assert not won
            # ... and is told what is stored.
            assert (record.status, record.version, record.trips, record.origin) == (
                State.OPEN,
                1,
                1,
                "one",
            )
            won, record = await storage.propose("svc", 7, proposal(State.CLOSED, 8))
            assert not won
            assert (record.status, record.version) == (State.OPEN, 1)

            won, record = await storage.propose(
                "svc", 1, proposal(State.HALF_OPEN, 2, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert won
            assert (record.status, record.version) == (State.HALF_OPEN, 2)
            assert record.reason is Reason.RESET_AFTER_ELAPSED


@both
async def test_concurrent_proposals_on_one_version_have_exactly_one_winner(
    postgres_dsn: str, postgres_schema: str
) -> None:
    results: list[tuple[bool, SharedRecord]] = []
    async with storages(postgres_dsn, postgres_schema, count=3) as group:
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as tg:

                async def contender(storage: PostgresStorage, who: str) -> None:
                    results.append(
                        await storage.propose("svc", 0, proposal(State.OPEN, 1, origin=who))
                    )

                for index in range(12):
                    tg.start_soon(contender, group[index % 3], f"p{index}")
    winners = [record.origin for won, record in results if won]
    assert len(winners) == 1
    for _, record in results:  # winners and losers alike see the one stored record
        assert (record.version, record.origin) == (1, winners[0])


@both
async def test_a_forced_proposal_wins_with_a_version_past_the_stored_one(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            await storage.propose("svc", 0, proposal(State.OPEN, 1))
            forced = proposal(State.FORCED_OPEN, 1, trips=0, reason=Reason.FORCED_OPEN)
            won, record = await storage.propose("svc", 0, forced, force=True)
            assert won
            assert (record.status, record.version) == (State.FORCED_OPEN, 2)  # stored + 1
            assert record.reason is Reason.FORCED_OPEN
            closed = proposal(State.CLOSED, 10, trips=0, reason=Reason.FORCED_CLOSE)
            won, record = await storage.propose("svc", 5, closed, force=True)
            assert won
            assert (record.status, record.version) == (State.CLOSED, 10)  # its own version
            won, record = await storage.propose(
                "fresh", 3, proposal(State.FORCED_OPEN, 1, reason=Reason.FORCED_OPEN), force=True
            )
            assert won
            assert record.version == 1  # max(0 + 1, 1) on a name never written


@both
async def test_a_written_transition_empties_windows_counters_and_permits(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    policy = Policy(
        consecutive_failures=100,
        failures=100,
        within=10 * WIDE,
        failure_rate=0.9,
        window_calls=10,
        minimum_calls=10,
    )

    async def rows(table: str) -> int:
        return await db.count(postgres_schema, table, "svc")

    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", policy, Batch(0, "sfff"))
            assert record.consecutive_failures == 3
            assert record.failure_buckets
            assert record.rate_buckets
            assert record.rate_head == 3
            assert await rows("breakers_buckets") > 0
            won, record = await storage.propose(
                "svc", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert won
            assert await rows("breakers_buckets") == 0
            record = await storage.flush("svc", policy, Batch(1))
            assert (record.consecutive_failures, record.rate_head) == (0, 0)
            assert (record.failure_buckets, record.rate_buckets) == ((), ())

            assert (await storage.acquire_probe("svc", 1, 5, 60.0, "p1"))[0]
            assert (await storage.acquire_probe("svc", 1, 5, 60.0, "p2"))[0]
            record = await storage.flush("svc", policy, Batch(1, "", (("p1", True),)))
            assert (record.half_open_successes, record.probes) == (1, 1)
            assert await rows("breakers_probes") == 1

            won, record = await storage.propose(
                "svc", 1, proposal(State.OPEN, 2, trips=2, reason=Reason.PROBE_FAILED)
            )
            assert won
            assert (record.half_open_successes, record.probes) == (0, 0)
            assert await rows("breakers_probes") == 0
            row = await db.row(postgres_schema, "svc")
            assert (row["half_open_successes"], row["consecutive_failures"]) == (0, 0)
            assert (row["status"], row["version"], row["trips"]) == ("open", 2, 2)


@both
async def test_a_written_transition_is_notified_to_every_storage_on_the_table(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (writer, reader):
        received: dict[str, list[SharedRecord]] = {"svc": [], "other": [], "stopped": []}
        arrived = {name: anyio.Event() for name in received}

        def watcher(key: str) -> Callable[[SharedRecord], None]:
            def watch(record: SharedRecord) -> None:
                received[key].append(record)
                arrived[key].set()

            return watch

        reader.watch("svc", watcher("svc"))
        reader.watch("other", watcher("other"))
        stop_one = reader.watch("svc", watcher("stopped"))
        stop_all = reader.watch("gone", watcher("stopped"))
        stop_one()
        stop_all()
        stop_all()  # stopping twice is harmless
        with anyio.fail_after(LIMIT):
            won, _ = await writer.propose(
                "svc", 0, proposal(State.OPEN, 1, open_for=30.0, origin="writer")
            )
            assert won
            # A lost compare-and-set notifies nothing.
            won, _ = await writer.propose("svc", 0, proposal(State.OPEN, 1, origin="loser"))
            assert not won
            await arrived["svc"].wait()
            await writer.propose("gone", 0, proposal(State.OPEN, 1, origin="writer"))
            # Notifications arrive in commit order: once "other" is here, nothing else is.
            await writer.propose("other", 0, proposal(State.OPEN, 1, origin="writer"))
            await arrived["other"].wait()
        (record,) = received["svc"]
        assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
        assert record.reason is Reason.CONSECUTIVE_FAILURES
        assert record.origin == "writer"
        assert record.retry_in is not None
        assert 29.0 < record.retry_in <= 30.0
        assert len(received["other"]) == 1
        assert received["stopped"] == []


@both
async def test_acquire_probe_hands_out_at_most_limit_permits_while_half_open(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            won, record = await storage.acquire_probe("svc", 0, 2, 10.0, "missing")
            assert not won
            assert (record.status, record.missing) == (State.CLOSED, True)
            await storage.flush("svc", CONSECUTIVE, Batch(0, "s"))
            won, record = await storage.acquire_probe("svc", 0, 2, 10.0, "closed")
            assert not won
            assert (record.status, record.missing) == (State.CLOSED, False)
            await storage.propose("svc", 0, proposal(State.OPEN, 1))
            assert not (await storage.acquire_probe("svc", 1, 2, 10.0, "open"))[0]
            await storage.propose(
                "svc", 1, proposal(State.HALF_OPEN, 2, reason=Reason.RESET_AFTER_ELAPSED)
            )
            for version in (0, 1, 3):
                won, record = await storage.acquire_probe("svc", version, 2, 10.0, "stale")
                assert not won
                assert (record.status, record.version) == (State.HALF_OPEN, 2)
            assert await db.count(postgres_schema, "breakers_probes") == 0
            won, record = await storage.acquire_probe("svc", 2, 2, 10.0, "t1")
            assert won
            assert record.probes == 1
            won, record = await storage.acquire_probe("svc", 2, 2, 10.0, "t2")
            assert won
            assert record.probes == 2
            won, record = await storage.acquire_probe("svc", 2, 2, 10.0, "t3")
            assert not won
            assert record.probes == 2
            storage.advance_clock(9.0)
            assert not (await storage.acquire_probe("svc", 2, 2, 10.0, "t3"))[0]
            storage.advance_clock(1.5)  # both leases ran out
            # A refused request reads the record too: a permit past its lease is not out.
            won, record = await storage.acquire_probe("svc", 1, 2, 10.0, "stale")
            assert not won
            assert record.probes == 0
            won, record = await storage.acquire_probe("svc", 2, 2, 10.0, "t3")
            assert won
            assert record.probes == 1
            assert await db.count(postgres_schema, "breakers_probes") == 1


@both
async def test_an_expired_lease_frees_exactly_one_permit(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            await storage.propose(
                "svc", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert (await storage.acquire_probe("svc", 1, 2, 10.0, "short"))[0]
            assert (await storage.acquire_probe("svc", 1, 2, 100.0, "long"))[0]
            assert not (await storage.acquire_probe("svc", 1, 2, 10.0, "x"))[0]
            storage.advance_clock(10.5)
            won, record = await storage.acquire_probe("svc", 1, 2, 10.0, "x")
            assert won
            assert record.probes == 2
            assert not (await storage.acquire_probe("svc", 1, 2, 10.0, "y"))[0]


@both
async def test_a_released_permit_counts_a_success_only_while_half_open_at_its_version(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            await storage.propose(
                "svc", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
            )
            for token in ("ok", "failed", "late", "stale"):
                assert (await storage.acquire_probe("svc", 1, 10, 10.0, token))[0]

            def release(version: int, *probes: tuple[str, bool]) -> Any:
                return storage.flush("svc", CONSECUTIVE, Batch(version, "", probes))

            record = await release(1, ("ok", True))
            assert (record.half_open_successes, record.probes) == (1, 3)
            record = await release(1, ("ok", True))  # released already: counts once
            assert record.half_open_successes == 1
            record = await release(1, ("failed", False), ("unknown", True))
            assert (record.half_open_successes, record.probes) == (1, 2)
            record = await release(0, ("stale", True))  # another version: freed, not counted
            assert (record.half_open_successes, record.probes) == (1, 1)

            storage.advance_clock(10.5)  # "late"'s lease ran out before it reported
            record = await release(1, ("late", True))
            assert (record.half_open_successes, record.probes) == (1, 0)
            assert (await db.row(postgres_schema, "svc"))["half_open_successes"] == 1

            # CLOSED at the batch's version: a permit (planted by hand) counts nothing.
            await storage.propose("svc", 1, proposal(State.CLOSED, 2))
            await db.execute(
                f'INSERT INTO "{postgres_schema}".breakers_probes VALUES ($1, $2, $3)',
                "svc",
                "planted",
                1e12,
            )
            record = await release(2, ("planted", True))
            assert record.half_open_successes == 0
            assert record.probes == 0
            assert (await db.row(postgres_schema, "svc"))["half_open_successes"] == 0


@both
async def test_times_are_the_servers_and_travel_as_durations(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (one, other):
        with anyio.fail_after(LIMIT):
            won, record = await one.propose(
                "svc", 0, proposal(State.OPEN, 1, opened_ago=5.0, open_for=30.0)
            )
            assert won
            assert record.retry_in is not None
            assert record.opened_ago is not None
            assert 29.0 < record.retry_in <= 30.0
            assert 5.0 <= record.opened_ago < 6.0
            # Stored as the server's absolute times.
            row = await db.row(postgres_schema, "svc")
            now = await db.now()
            assert abs(row["retry_at"] - (now + 30.0)) < 1.0
            assert abs(row["opened_at"] - (now - 5.0)) < 1.0
            one.advance_clock(10.0)  # only this storage's clock moves
            record = await one.flush("svc", CONSECUTIVE, Batch(1))
            assert record.retry_in is not None
            assert 19.0 < record.retry_in <= 20.0
            assert record.opened_ago is not None
            assert 15.0 <= record.opened_ago < 16.0
            record = await other.flush("svc", CONSECUTIVE, Batch(1))
            assert record.retry_in is not None
            assert 29.0 < record.retry_in <= 30.0
            # A transition with no retry time (forced open) has none.
            forced = proposal(State.FORCED_OPEN, 2, reason=Reason.FORCED_OPEN, opened_ago=None)
            won, record = await other.propose("svc", 1, forced)
            assert won
            assert (record.retry_in, record.opened_ago) == (None, None)


NAMES = [
    "svc",
    "with spaces",
    "it's",
    "''",
    'say "hi"',
    "a;b",
    "'); DROP TABLE x; --",
    "'); DROP TABLE breakers; --",
    "$1",
    "$$ LANGUAGE plpgsql $$",
    "\\",
    "%_*",
    "ünïcødé ☃ 名前 🚀",
    "e\u0301",  # decomposed é: a different name from the composed one
    "é",
    "tab\tnew\nline",
    "",
    " ",
    "x" * 10_000,
    "é" * 10_000,
]


@both
async def test_names_are_data(postgres_dsn: str, postgres_schema: str, db: Database) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT * 2):
            for index, name in enumerate(NAMES):
                record = await storage.flush(name, CONSECUTIVE, Batch(0, "f" * (index + 1)))
                assert record.consecutive_failures == index + 1, name
            for index, name in enumerate(NAMES):
                record = await storage.flush(name, CONSECUTIVE, Batch(0))
                assert record.consecutive_failures == index + 1, name
                origin = f"origin of {name[:50]} ☃"
                won, record = await storage.propose(name, 0, proposal(State.OPEN, 1, origin=origin))
                assert won
                assert record.origin == origin  # data too, and it travels back intact
                await storage.propose(
                    name, 1, proposal(State.HALF_OPEN, 2, reason=Reason.RESET_AFTER_ELAPSED)
                )
                assert (await storage.acquire_probe(name, 2, 1, 60.0, name))[0]
            assert await storage.sweep() == 0
    assert await db.tables(postgres_schema) == {
        "breakers",
        "breakers_buckets",
        "breakers_probes",
        "breakers_meta",
    }
    rows = await db.fetch(f'SELECT name, version, status FROM "{postgres_schema}".breakers')
    assert sorted(row["name"] for row in rows) == sorted(NAMES)
    assert {(row["version"], row["status"]) for row in rows} == {(2, "half_open")}
    probes = await db.fetch(f'SELECT name, token FROM "{postgres_schema}".breakers_probes')
    assert sorted((row["name"], row["token"]) for row in probes) == sorted(
        (name, name) for name in NAMES
    )


def incompressible(size: int, seed: int = 7) -> str:
    """``size`` random letters and digits: a name PostgreSQL cannot compress much."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(size))


@both
async def test_a_breaker_name_at_the_storages_limit_is_shared(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    # The name keys every table, and a btree key holds about 2.7 kB: the storage takes
    # names of up to 2,000 bytes, however incompressible.
    name = incompressible(1000) + "é" * 500
    assert len(name.encode()) == 2000
    async with storages(postgres_dsn, postgres_schema) as (store_a, store_b):
        opened: list[tuple[str, Transition]] = []
        both_open = anyio.Event()
        a = Breaker(
            name,
            storage=store_a,
            consecutive_failures=2,
            on_open=recorder(opened, "a", both_open, 2),
        )
        b = Breaker(
            name,
            storage=store_b,
            consecutive_failures=2,
            on_open=recorder(opened, "b", both_open, 2),
        )
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                for breaker in (a, b):
                    with pytest.raises(Boom):
                        await breaker.call(fail)
                await a.sync()
                await b.sync()
                await both_open.wait()
        assert sorted((who, t.won) for who, t in opened) == [("a", False), ("b", True)]
        assert (await db.row(postgres_schema, name))["status"] == "open"
        assert (await store_a.acquire_probe(name, 1, 1, 10.0, "t"))[1].version == 1


@pytest.mark.parametrize(
    "name",
    [incompressible(2001), "é" * 1001, "x" * 10_000, "nul\x00inside", "lone\ud800surrogate"],
    ids=["2001-bytes", "2002-bytes-of-e-acute", "10000-x", "nul", "lone-surrogate"],
)
def test_a_breaker_name_postgresql_cannot_key_is_refused_when_the_breaker_is_built(
    name: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        Breaker(name, storage=PostgresStorage(DSN))
    assert caught.value.field == "name"
    assert len(str(caught.value)) < 500  # a long name is not repeated whole


@both
@pytest.mark.parametrize("name", ["nul\x00inside", "lone\ud800surrogate"], ids=repr)
async def test_a_name_postgresql_cannot_store_fails_as_a_storage_error(
    postgres_dsn: str, postgres_schema: str, name: str
) -> None:
    # PostgreSQL text holds no NUL and only valid UTF-8: such a name cannot be shared, but
    # it fails like an unreachable server (a StorageError), never with anything else.
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            operations: list[Callable[[], Awaitable[Any]]] = [
                lambda: storage.flush(name, CONSECUTIVE, Batch(0, "f")),
                lambda: storage.propose(name, 0, proposal(State.OPEN, 1)),
                lambda: storage.acquire_probe(name, 1, 1, 10.0, "t"),
            ]
            for operation in operations:
                with pytest.raises(StorageError):
                    await operation()
            # ... and the storage works on for other names.
            assert (
                await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            ).consecutive_failures == 1


@both
@pytest.mark.parametrize(
    "name",
    ["x" * 10_000, "'); DROP TABLE x; --", "名前 ☃", ""],
    ids=lambda name: f"{len(name)}-chars",
)
async def test_a_transition_of_any_name_is_notified(
    postgres_dsn: str, postgres_schema: str, name: str
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (writer, reader):
        heard: list[SharedRecord] = []
        arrived = anyio.Event()

        def watch(record: SharedRecord) -> None:
            heard.append(record)
            arrived.set()

        reader.watch(name, watch)
        reader.watch(name + "x", watch)  # a neighbour hears nothing
        with anyio.fail_after(LIMIT):
            won, _ = await writer.propose(name, 0, proposal(State.OPEN, 1, origin="w"))
            assert won
            await arrived.wait()
            await writer.propose("marker", 0, proposal(State.OPEN, 1, origin="m"))
            marker = anyio.Event()
            reader.watch("marker", lambda record: marker.set())
            await writer.propose("marker", 1, proposal(State.OPEN, 2, origin="m"))
            await marker.wait()
        assert [(r.version, r.origin) for r in heard] == [(1, "w")]


@both
async def test_the_statements_counter_counts_one_per_operation(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            before = storage.statements
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            await storage.propose("svc", 0, proposal(State.HALF_OPEN, 1))
            await storage.acquire_probe("svc", 1, 1, 1.0, "t")
            await storage.sweep()
            # The background sweeper may slip in its first sweep meanwhile.
            assert storage.statements - before in (4, 5)


@both
async def test_operations_on_a_closed_storage_raise_storage_error(
    postgres_dsn: str, postgres_schema: str
) -> None:
    storage = PostgresStorage(postgres_dsn, schema=postgres_schema)
    operations: list[Callable[[], Awaitable[Any]]] = [
        lambda: storage.flush("svc", CONSECUTIVE, Batch(0, "f")),
        lambda: storage.propose("svc", 0, proposal(State.OPEN, 1)),
        lambda: storage.acquire_probe("svc", 1, 1, 10.0, "t"),
        storage.sweep,
    ]
    for operation in operations:  # never opened
        with pytest.raises(StorageError, match="not open"):
            await operation()
    async with storage:
        with pytest.raises(RuntimeError, match="already open"):
            await storage.__aenter__()
        with anyio.fail_after(LIMIT):
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
    for operation in operations:  # closed
        with pytest.raises(StorageError, match="not open"):
            await operation()


@both
async def test_a_closed_storage_can_be_opened_again(
    postgres_dsn: str, postgres_schema: str
) -> None:
    storage = PostgresStorage(postgres_dsn, schema=postgres_schema, timeout=5.0)
    with anyio.fail_after(LIMIT):
        async with storage:
            await storage.wait_subscribed()
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
        async with storage, storages(postgres_dsn, postgres_schema, count=1) as (other,):
            heard = anyio.Event()
            storage.watch("svc", lambda record: heard.set())
            await storage.wait_subscribed()
            record = await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            assert record.consecutive_failures == 2
            await other.propose("svc", 0, proposal(State.OPEN, 1))
            await heard.wait()


@both
async def test_a_listener_whose_connection_is_killed_listens_again(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (writer, reader):
        heard: list[SharedRecord] = []
        arrived = anyio.Event()

        def watch(record: SharedRecord) -> None:
            heard.append(record)
            arrived.set()

        reader.watch("svc", watch)
        with anyio.fail_after(LIMIT):
            killed = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %' AND query LIKE $1",
                f"%{postgres_schema}%",
            )
            assert killed == 2  # one listening connection per storage
            # Notify until the reader hears: it noticed and listens again (within seconds).
            for version in range(1, 10_000):
                forced = proposal(State.FORCED_OPEN, version, reason=Reason.FORCED_OPEN)
                await writer.propose("svc", 0, forced, force=True)
                with anyio.move_on_after(0.1):
                    await arrived.wait()
                if arrived.is_set():
                    break
        assert heard
        assert heard[-1].status is State.FORCED_OPEN


# =========================================================================== TTL and sweep


@both
async def test_sweep_deletes_expired_breakers_with_their_buckets_and_permits(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    policy = Policy(failures=100, within=10 * WIDE, failure_rate=0.9, window_calls=10)
    schema = postgres_schema

    async def rows(name: str) -> tuple[int, int, int]:
        return (
            await db.count(schema, "breakers", name),
            await db.count(schema, "breakers_buckets", name),
            await db.count(schema, "breakers_probes", name),
        )

    async with PostgresStorage(postgres_dsn, schema=schema, ttl=100) as storage:
        with anyio.fail_after(LIMIT):
            for name in ("windowed", "kept"):
                await storage.flush(name, policy, Batch(0, "ffs"))
            await storage.propose(
                "probing", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert (await storage.acquire_probe("probing", 1, 1, 1000.0, "t"))[0]
            assert await rows("windowed") == (1, 4, 0)  # 3 rate buckets, 1 failure bucket
            assert await rows("probing") == (1, 0, 1)
            now = await db.now()
            for name in ("windowed", "kept", "probing"):
                assert abs((await db.row(schema, name))["expires_at"] - (now + 100)) < 2.0
            assert await storage.sweep() == 0  # nothing expired yet

            storage.advance_clock(99.0)
            await storage.flush("kept", policy, Batch(0))  # a refresh keeps it
            assert await storage.sweep() == 0
            storage.advance_clock(2.0)  # the others are 101 s old, "kept" 2 s
            assert await storage.sweep(limit=1) == 1  # the oldest first, up to the limit
            assert await storage.sweep() == 1
            assert await storage.sweep() == 0
            assert await rows("windowed") == (0, 0, 0)
            assert await rows("probing") == (0, 0, 0)
            assert await rows("kept") == (1, 4, 0)
            # A swept breaker reads as missing: its generation starts over.
            record = await storage.flush("windowed", policy, Batch(0))
            assert record.missing
            record = await storage.flush("windowed", policy, Batch(0, "f"))
            assert (record.missing, total(record.failure_buckets)) == (False, (1, 1, 0))


@both
async def test_every_write_pushes_the_expiry_back(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema, ttl=100) as storage:
        with anyio.fail_after(LIMIT):
            shift = 0.0

            async def expires_in() -> float:
                row = await db.row(postgres_schema, "svc")
                return float(row["expires_at"]) - (await db.now()) - shift

            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            steps: list[Callable[[], Awaitable[Any]]] = [
                lambda: storage.flush("svc", CONSECUTIVE, Batch(0, "f")),
                lambda: storage.flush("svc", CONSECUTIVE, Batch(0)),
                lambda: storage.propose(
                    "svc", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
                ),
                lambda: storage.acquire_probe("svc", 1, 1, 5.0, "t"),
            ]
            for step in steps:
                storage.advance_clock(60.0)
                shift += 60.0
                assert await expires_in() < 41.0
                await step()
                assert 98.0 < await expires_in() <= 100.0
                assert await storage.sweep() == 0


@both
async def test_a_breaker_writes_its_state_back_after_its_record_was_swept(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with storages(postgres_dsn, postgres_schema, count=1, ttl=100) as (storage,):
        breaker = Breaker("svc", storage=storage, consecutive_failures=1, reset_after=1000)
        async with running(breaker):
            with anyio.fail_after(LIMIT):
                with pytest.raises(Boom):
                    await breaker.call(fail)
                await breaker.sync()
                assert (await db.row(postgres_schema, "svc"))["status"] == "open"
                storage.advance_clock(101)
                assert await storage.sweep() == 1
                assert await db.row(postgres_schema, "svc") is None
                await breaker.sync()  # reads it missing: re-seeds it
                assert breaker.state is State.OPEN
        row = await db.row(postgres_schema, "svc")
        assert (row["status"], row["trips"]) == ("open", 1)
        assert row["version"] >= 1


@both
@pytest.mark.parametrize("counted", [False, True], ids=["time-based", "count-based"])
async def test_bucket_rows_never_exceed_the_rings(
    postgres_dsn: str, postgres_schema: str, db: Database, counted: bool
) -> None:
    count = 4
    if counted:
        policy = Policy(
            failures=1000,
            within=count * WIDE,
            failure_rate=0.9,
            window_calls=8,
            buckets=count,
            minimum_calls=8,
        )
    else:
        policy = Policy(
            failures=1000, within=count * WIDE, failure_rate=0.9, window=count * WIDE, buckets=count
        )
    rng = random.Random(3)
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        await align(storage, db)
        with anyio.fail_after(LIMIT * 2):
            peak = 0
            for step in range(40):
                storage.advance_clock(WIDE * rng.choice((0, 0.5, 1, 1, 2, 7)))
                batch = "".join(rng.choice("sfSF") for _ in range(rng.randint(1, 9)))
                record = await storage.flush("svc", policy, Batch(0, batch))
                assert len(record.failure_buckets) <= count
                assert len(record.rate_buckets) <= count
                rows = await db.fetch(
                    f'SELECT kind, count(*) FROM "{postgres_schema}".breakers_buckets '
                    "WHERE name = $1 GROUP BY kind",
                    "svc",
                )
                per_kind = {row[0]: row[1] for row in rows}
                assert all(n <= count for n in per_kind.values()), (step, per_kind)
                peak = max(peak, sum(per_kind.values()))
            assert peak <= 2 * count
            assert peak > count  # both rings were in use: the bound was tested


# =========================================================================== breakers


def recorder(
    log: list[tuple[str, Transition]], who: str, done: anyio.Event, count: int
) -> Callable[[Transition], None]:
    def callback(transition: Transition) -> None:
        log.append((who, transition))
        if len(log) >= count:
            done.set()

    return callback


@both
@pytest.mark.parametrize("name", ["svc", "'); DROP TABLE x; --", "ünï ☃ 名前", ""], ids=repr)
async def test_failures_in_two_processes_add_up_to_one_trip(
    postgres_dsn: str, postgres_schema: str, db: Database, name: str
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (store_a, store_b):
        opened: list[tuple[str, Transition]] = []
        both_open = anyio.Event()
        a = Breaker(
            name,
            storage=store_a,
            consecutive_failures=3,
            on_open=recorder(opened, "a", both_open, 2),
        )
        b = Breaker(
            name,
            storage=store_b,
            consecutive_failures=3,
            on_open=recorder(opened, "b", both_open, 2),
        )
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                assert await a.call(succeed) == "ok"
                for breaker in (a, a, b):
                    with pytest.raises(Boom):
                        await breaker.call(fail)
                assert a.state is State.CLOSED
                assert b.state is State.CLOSED
                await a.sync()  # the fleet has 2 failures in a row: still closed
                assert a.state is State.CLOSED
                assert a.stats().consecutive_failures == 2
                await b.sync()  # the third: b trips and writes it
                assert b.state is State.OPEN
                await both_open.wait()  # a adopts what b notified
            assert a.state is State.OPEN
            with pytest.raises(CircuitOpenError) as rejected:
                await a.call(succeed)
            assert rejected.value.retry_after is not None
            assert 0 < rejected.value.retry_after <= 30.0
        assert sorted((who, t.won) for who, t in opened) == [("a", False), ("b", True)]
        for _, transition in opened:
            assert transition.breaker == name
            assert (transition.source, transition.target) == (State.CLOSED, State.OPEN)
            assert transition.reason is Reason.CONSECUTIVE_FAILURES
            assert transition.version == 1  # the fleet's version
        row = await db.row(postgres_schema, name)
        assert (row["status"], row["version"], row["trips"]) == ("open", 1, 1)
        stats_a, stats_b = a.stats(), b.stats()
        assert (stats_a.successes, stats_a.failures, stats_a.rejections) == (1, 2, 1)
        assert (stats_b.successes, stats_b.failures, stats_b.rejections) == (0, 1, 0)
        assert (stats_a.state, stats_a.trips) == (State.OPEN, 1)
        assert (stats_b.state, stats_b.trips) == (State.OPEN, 1)
        assert stats_a.storage_errors == stats_b.storage_errors == 0
        assert not stats_a.degraded


@both
async def test_two_breakers_tripping_at_once_have_exactly_one_winner(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (store_a, store_b):
        opened: list[tuple[str, Transition]] = []
        both_open = anyio.Event()
        a = Breaker(
            "svc",
            storage=store_a,
            consecutive_failures=2,
            on_open=recorder(opened, "a", both_open, 2),
        )
        b = Breaker(
            "svc",
            storage=store_b,
            consecutive_failures=2,
            on_open=recorder(opened, "b", both_open, 2),
        )
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                for breaker in (a, a, b, b):
                    with pytest.raises(Boom):
                        await breaker.call(fail)
                assert a.state is State.OPEN  # each tripped on its own counts
                assert b.state is State.OPEN
                async with anyio.create_task_group() as tg:
                    tg.start_soon(a.sync)
                    tg.start_soon(b.sync)
                await both_open.wait()
                for breaker in (a, b):
                    with pytest.raises(CircuitOpenError):
                        await breaker.call(succeed)
        assert sorted(t.won for _, t in opened) == [False, True]
        assert {t.version for _, t in opened} == {1}
        assert a.stats().trips == b.stats().trips == 1


@both
async def test_a_success_in_another_process_breaks_the_run_of_failures(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (store_a, store_b):
        a = Breaker("svc", storage=store_a, consecutive_failures=3)
        b = Breaker("svc", storage=store_b, consecutive_failures=3)
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                for _ in range(2):
                    with pytest.raises(Boom):
                        await a.call(fail)
                await a.sync()
                assert a.stats().consecutive_failures == 2
                assert await b.call(succeed) == "ok"
                await b.sync()
                await a.sync()  # a refresh: the fleet's run of failures was broken
                assert a.stats().consecutive_failures == 0
                with pytest.raises(Boom):
                    await a.call(fail)
                await a.sync()
                assert a.state is State.CLOSED
                assert a.stats().consecutive_failures == 1


@both
async def test_an_operators_force_open_and_force_close_are_adopted_elsewhere(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (store_a, store_b):
        log: list[tuple[str, Transition]] = []
        events = {
            (who, target): anyio.Event()
            for who in "ab"
            for target in (State.FORCED_OPEN, State.CLOSED)
        }

        def on_transition(who: str) -> Callable[[Transition], None]:
            def callback(transition: Transition) -> None:
                log.append((who, transition))
                events[who, transition.target].set()

            return callback

        a = Breaker("svc", storage=store_a, on_transition=on_transition("a"))
        b = Breaker("svc", storage=store_b, on_transition=on_transition("b"))
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                a.force_open()  # no sync(): a's runner writes it, b's storage hears of it
                assert a.state is State.FORCED_OPEN
                await events["b", State.FORCED_OPEN].wait()
                assert b.state is State.FORCED_OPEN
                with pytest.raises(CircuitOpenError) as rejected:
                    await b.call(succeed)
                assert rejected.value.retry_after is None
                assert rejected.value.state is State.FORCED_OPEN
                # (a announces once its write is acknowledged: b may hear of it first.)
                await events["a", State.FORCED_OPEN].wait()
                a.force_close()
                await events["b", State.CLOSED].wait()
                assert b.state is State.CLOSED
                assert await b.call(succeed) == "ok"
                await events["a", State.CLOSED].wait()
        seen = sorted(((who, t.target, t.reason, t.won) for who, t in log), key=str)
        assert seen == sorted(
            [
                ("a", State.FORCED_OPEN, Reason.FORCED_OPEN, True),
                ("b", State.FORCED_OPEN, Reason.FORCED_OPEN, False),
                ("a", State.CLOSED, Reason.FORCED_CLOSE, True),
                ("b", State.CLOSED, Reason.FORCED_CLOSE, False),
            ],
            key=str,
        )


@both
async def test_a_breaker_resumes_the_stored_state_when_its_runner_starts(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with storages(postgres_dsn, postgres_schema, count=1) as (storage,):
        won, _ = await storage.propose("svc", 0, proposal(State.OPEN, 1, open_for=30.0))
        assert won
        breaker = Breaker("svc", storage=storage)
        assert breaker.state is State.CLOSED  # nothing read before the runner starts
        async with running(breaker):
            assert breaker.state is State.OPEN
            with pytest.raises(CircuitOpenError) as rejected:
                await breaker.call(succeed)
            assert rejected.value.retry_after is not None
            assert 29.0 < rejected.value.retry_after <= 30.0


@both
async def test_the_fleet_admits_one_half_open_probe_after_reset_after(
    postgres_dsn: str, postgres_schema: str, clock: Any
) -> None:
    async with storages(postgres_dsn, postgres_schema) as (store_a, store_b):
        options: dict[str, Any] = {
            "consecutive_failures": 1,
            "reset_after": 10.0,
            "half_open_probes": 1,
            "clock": clock,
        }
        a = Breaker("svc", storage=store_a, **options)
        b = Breaker("svc", storage=store_b, **options)
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                with pytest.raises(Boom):
                    await a.call(fail)
                await a.sync()
                await b.sync()
                assert a.state is State.OPEN
                assert b.state is State.OPEN
                clock.advance(10.5)
                store_a.advance_clock(10.5)
                store_b.advance_clock(10.5)
                await one_probe_through(a, b)


async def one_probe_through(a: Breaker, b: Breaker) -> None:
    """Start one call in each breaker at once: the fleet lets exactly one through, and its
    success closes the circuit everywhere."""
    results: dict[str, str] = {}
    decided, release = anyio.Event(), anyio.Event()

    async def call(who: str, breaker: Breaker) -> None:
        try:
            async with breaker.guard():
                results[who] = "admitted"
                if len(results) == 2:
                    decided.set()
                await release.wait()
        except CircuitOpenError:
            results[who] = "rejected"
            if len(results) == 2:
                decided.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "a", a)
        tg.start_soon(call, "b", b)
        await decided.wait()
        assert sorted(results.values()) == ["admitted", "rejected"], results
        release.set()
    admitted = a if results["a"] == "admitted" else b
    rejected = b if admitted is a else a
    await admitted.sync()  # the probe's success closed it: write it
    assert admitted.state is State.CLOSED
    await rejected.sync()
    assert rejected.state is State.CLOSED
    assert (admitted.stats().successes, admitted.stats().rejections) == (1, 0)
    assert (rejected.stats().rejections, rejected.stats().cancelled) == (1, 0)


@both
async def test_an_operators_control_made_while_a_proposal_is_on_its_way_is_not_lost(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    async with storages(postgres_dsn, postgres_schema, count=1) as (storage,):
        breaker = Breaker("svc", storage=storage)
        async with running(breaker):
            with anyio.fail_after(LIMIT):
                assert await breaker.call(succeed) == "ok"
                await breaker.sync()  # the row exists, at version 0
                async with transaction(postgres_dsn) as execute:
                    # Another process writes a transition; until it commits it holds the row.
                    await execute(
                        f"UPDATE \"{postgres_schema}\".breakers SET status = 'open', "
                        "version = 1, trips = 1, reason = 'consecutive_failures', "
                        "opened_at = extract(epoch FROM clock_timestamp()), "
                        "retry_at = extract(epoch FROM clock_timestamp()) + 30, "
                        "origin = 'other' WHERE name = 'svc'"
                    )
                    breaker.force_open()
                    await anyio.wait_all_tasks_blocked()  # its runner is proposing it
                    breaker.force_close()  # the operator changes their mind, at once
                    assert breaker.state is State.CLOSED
                    await execute("COMMIT")
                    await breaker.sync()
                await breaker.sync()
                # The last control wins, here and in the storage.
                assert breaker.state is State.CLOSED
                assert (await db.row(postgres_schema, "svc"))["status"] == "closed"


@both
async def test_a_transition_written_but_unacknowledged_is_still_announced_as_won(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxy("forward", postgres_address(postgres_dsn)) as server:
            opened: list[tuple[str, Transition]] = []
            announced = anyio.Event()
            async with PostgresStorage(
                proxied(postgres_dsn, server),
                schema=postgres_schema,
                timeout=1.0,
                flush_interval=3600.0,
                refresh_interval=3600.0,
            ) as storage:
                # No runner: only sync() talks to the storage, so nothing retries behind
                # the test's back.
                breaker = Breaker(
                    "svc",
                    storage=storage,
                    consecutive_failures=1,
                    on_open=recorder(opened, "a", announced, 1),
                )
                assert await breaker.call(succeed) == "ok"
                await breaker.sync()
                # (asyncpg prepares a statement on its first use on a connection, one round
                # trip before it runs it: prepare the proposal's now.)
                assert (await storage.propose("warm-up", 0, proposal(State.OPEN, 1)))[0]
                with pytest.raises(Boom):
                    await breaker.call(fail)
                assert breaker.state is State.OPEN
                server.mode = "mute"
                with pytest.raises(StorageError):
                    await breaker.sync()
                row = await db.row(postgres_schema, "svc")
                assert (row["status"], row["version"]) == ("open", 1)  # it was written
                server.mode = "forward"
                await breaker.sync()
                await announced.wait()
                assert breaker.state is State.OPEN
        ((_, transition),) = opened
        assert transition.won


@both
async def test_a_flush_whose_answer_was_lost_counts_its_outcomes_once(
    postgres_dsn: str, postgres_schema: str, db: Database
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxy("forward", postgres_address(postgres_dsn)) as server:
            storage = PostgresStorage(
                proxied(postgres_dsn, server),
                schema=postgres_schema,
                timeout=1.0,
                flush_interval=3600.0,
                refresh_interval=3600.0,
            )
            async with storage:
                breaker = Breaker("svc", storage=storage, consecutive_failures=100)  # no runner
                assert await breaker.call(succeed) == "ok"
                await breaker.sync()  # (and the flush's statement is prepared)
                for _ in range(3):
                    with pytest.raises(Boom):
                        await breaker.call(fail)
                server.mode = "mute"
                with pytest.raises(StorageError):
                    await breaker.sync()
                row = await db.row(postgres_schema, "svc")
                assert row["consecutive_failures"] == 3  # it was counted
                assert breaker.stats().unflushed == 3  # sent, not acknowledged
                server.mode = "forward"
                await breaker.sync()
                stats = breaker.stats()
                assert (stats.delivered, stats.unflushed, stats.dropped) == (4, 0, 0)
        row = await db.row(postgres_schema, "svc")
        assert row["consecutive_failures"] == 3  # and counted once


# =========================================================================== unavailable server


@both
async def test_with_postgres_unreachable_a_breaker_decides_locally_and_never_raises_to_callers(
    clock: Any,
) -> None:
    rejections: list[Any] = []
    runner_ran_callback = anyio.Event()

    async def on_reject(rejection: Any) -> None:  # async: only the runner runs it
        rejections.append(rejection)
        runner_ran_callback.set()

    with anyio.fail_after(LIMIT):
        async with PostgresStorage(
            f"postgresql://postgres@127.0.0.1:{free_port()}/test", timeout=0.3, flush_interval=0
        ) as storage:  # opens although nothing listens there
            breaker = Breaker(
                "svc",
                storage=storage,
                consecutive_failures=3,
                reset_after=5,
                clock=clock,
                on_reject=on_reject,
            )
            async with running(breaker):  # the runner starts although the server is not there
                assert await breaker.call(succeed) == "ok"
                async with breaker.guard():
                    pass
                with breaker.guard():
                    pass
                for _ in range(3):
                    with pytest.raises(Boom):
                        async with breaker.guard():
                            raise Boom
                assert breaker.state is State.OPEN  # tripped on its own counts
                with pytest.raises(StorageError):
                    await breaker.sync()
                stats = breaker.stats()
                assert stats.degraded
                assert stats.storage_errors >= 1
                assert (stats.successes, stats.failures) == (3, 3)
                # The runner survived the failures: it still runs async callbacks.
                with pytest.raises(CircuitOpenError):
                    await breaker.call(succeed)
                await runner_ran_callback.wait()
                assert len(rejections) == 1
                # Half-open and recovery are local too: the local probe permit stands.
                clock.advance(5)
                assert await breaker.call(succeed) == "ok"
                assert breaker.state is State.CLOSED
                with pytest.raises(StorageError):
                    await breaker.sync()
                assert breaker.stats().successes == 4
            assert storage.errors >= 2
            with pytest.raises(StorageError):
                await storage.sweep()


@both
async def test_a_breaker_writes_what_it_decided_alone_once_postgres_answers_again(
    postgres_dsn: str, postgres_schema: str
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxy("refuse", postgres_address(postgres_dsn)) as server:
            opened: list[tuple[str, Transition]] = []
            announced = anyio.Event()
            async with PostgresStorage(
                proxied(postgres_dsn, server), schema=postgres_schema, timeout=2.0
            ) as storage:
                breaker = Breaker(
                    "svc",
                    storage=storage,
                    consecutive_failures=2,
                    on_open=recorder(opened, "a", announced, 1),
                )
                async with running(breaker):
                    for _ in range(2):
                        with pytest.raises(Boom):
                            await breaker.call(fail)
                    assert breaker.state is State.OPEN
                    with pytest.raises(StorageError):
                        await breaker.sync()
                    assert server.refused.is_set()
                    assert breaker.stats().degraded
                    server.mode = "forward"
                    await breaker.sync()
                    await announced.wait()
                    assert not breaker.stats().degraded
                    assert breaker.state is State.OPEN
            async with PostgresStorage(postgres_dsn, schema=postgres_schema) as direct:
                record = await direct.flush("svc", CONSECUTIVE, Batch(1))
        assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
        ((_, transition),) = opened
        assert transition.won
        assert transition.target is State.OPEN


@both
async def test_every_operation_on_a_server_that_never_answers_fails_within_the_timeout() -> None:
    timeout = 0.3
    with anyio.fail_after(LIMIT):
        async with proxy("blackhole") as server:
            async with PostgresStorage(server.dsn, timeout=timeout) as storage:  # opens
                operations: list[Callable[[], Awaitable[Any]]] = [
                    lambda: storage.flush("svc", CONSECUTIVE, Batch(0, "f")),
                    lambda: storage.propose("svc", 0, proposal(State.OPEN, 1)),
                    lambda: storage.acquire_probe("svc", 1, 1, 10.0, "t"),
                    storage.sweep,
                ]
                for operation in operations:
                    started = anyio.current_time()
                    with pytest.raises(StorageError):
                        await operation()
                    elapsed = anyio.current_time() - started
                    assert timeout * 0.5 <= elapsed <= timeout + 1.0
                assert server.accepted.is_set()
                assert storage.errors >= len(operations)
                breaker = Breaker("svc", storage=storage, consecutive_failures=1)
                async with running(breaker):
                    started = anyio.current_time()
                    with pytest.raises(StorageError):
                        await breaker.sync()
                    assert anyio.current_time() - started <= timeout + 1.0
                    assert await breaker.call(succeed) == "ok"
                    with pytest.raises(Boom):
                        await breaker.call(fail)
                    assert breaker.state is State.OPEN
                closing = anyio.current_time()
            # Closing does not wait on the silent server beyond the timeout either.
            assert anyio.current_time() - closing <= timeout + 1.0


@both
async def test_with_a_silent_server_every_operation_fails_within_the_timeout_even_queued(
    postgres_dsn: str, postgres_schema: str
) -> None:
    timeout = 0.4
    with anyio.fail_after(LIMIT):
        async with proxy("forward", postgres_address(postgres_dsn)) as server:
            storage = PostgresStorage(
                proxied(postgres_dsn, server),
                schema=postgres_schema,
                timeout=timeout,
                max_connections=2,  # one listens: every operation queues for the other
            )
            async with storage:
                await storage.wait_subscribed()
                await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
                server.mode = "mute"
                elapsed: list[float] = []

                async def operation() -> None:
                    started = anyio.current_time()
                    with pytest.raises(StorageError):
                        await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
                    elapsed.append(anyio.current_time() - started)

                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(operation)
                assert len(elapsed) == 5
                assert max(elapsed) <= timeout + 0.5, elapsed  # not one timeout per queued call


@both
async def test_wait_subscribed_waits_until_the_listen_is_in_place(
    postgres_dsn: str, postgres_schema: str
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            proxy("forward", postgres_address(postgres_dsn)) as server,
            storages(postgres_dsn, postgres_schema, count=1) as (writer,),
        ):
            server.drop = b'LISTEN "'
            async with PostgresStorage(
                proxied(postgres_dsn, server), schema=postgres_schema, timeout=0.3
            ) as storage:
                heard = anyio.Event()
                storage.watch("svc", lambda record: heard.set())
                record = await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
                assert record.consecutive_failures == 1  # the server answers, but no LISTEN
                with anyio.move_on_after(1.0) as waited:
                    await storage.wait_subscribed()
                assert waited.cancelled_caught, "subscribed, although LISTEN never arrived"
                server.drop = None
                await storage.wait_subscribed()
                await writer.propose("svc", 0, proposal(State.OPEN, 1))
                await heard.wait()


@both
async def test_failed_attempts_to_listen_give_their_connections_back(
    postgres_dsn: str, postgres_schema: str
) -> None:
    failed = 0
    enough = anyio.Event()

    class Failures(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal failed
            if "LISTEN" in record.getMessage():
                failed += 1
                if failed >= 4:
                    enough.set()

    handler = Failures(level=logging.WARNING)
    log = logging.getLogger("breaker_machines.storage.postgres")
    log.addHandler(handler)
    try:
        with anyio.fail_after(LIMIT):
            async with proxy("forward", postgres_address(postgres_dsn)) as server:
                server.drop = b'LISTEN "'  # every LISTEN hangs until the timeout
                async with PostgresStorage(
                    proxied(postgres_dsn, server),
                    schema=postgres_schema,
                    timeout=0.3,
                    max_connections=3,
                ) as storage:
                    await enough.wait()  # four attempts to listen failed
                    record = await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
                    assert record.consecutive_failures == 1
    finally:
        log.removeHandler(handler)


# =========================================================================== threads


@both
async def test_under_trio_the_storage_runs_its_driver_in_one_thread_of_its_own(
    anyio_backend: str, postgres_dsn: str, postgres_schema: str
) -> None:
    def bridges() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "breaker-machines-postgres"]

    extra = 1 if anyio_backend == "trio" else 0
    before = set(threading.enumerate())
    assert bridges() == []
    with anyio.fail_after(LIMIT):
        async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
            await storage.wait_subscribed()
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            await storage.propose("svc", 0, proposal(State.OPEN, 1))
            await storage.sweep()
            new = set(threading.enumerate()) - before
            assert len(bridges()) == extra
            assert new == set(bridges()), new
    assert bridges() == []
    assert set(threading.enumerate()) - before == set()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_pool_given_by_the_caller_is_used_and_left_open(
    postgres_dsn: str, postgres_schema: str
) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(postgres_dsn, min_size=0, max_size=3)
    try:
        storage = PostgresStorage(pool=pool, schema=postgres_schema)
        assert repr(storage) == f"<PostgresStorage pool {postgres_schema}.breakers>"
        async with storage:
            record = await storage.flush("svc", CONSECUTIVE, Batch(0, "ff"))
            assert record.consecutive_failures == 2
            await storage.wait_subscribed()
        assert not pool._closed
        assert await pool.fetchval(f'SELECT count(*) FROM "{postgres_schema}".breakers') == 1
    finally:
        await pool.close()
