"""PostgreSQL storage: one breaker shared by many processes, on asyncpg.

Each operation of the shared-storage protocol is one statement: ``SELECT fn(...)`` of a
PL/pgSQL function (:mod:`._postgres_sql`) that locks the breaker's row, does its work and
returns the record as JSON. Transitions are announced with ``NOTIFY`` on one channel per
table; the storage keeps one connection listening while it is open.

Under asyncio asyncpg runs on the caller's event loop; under trio it runs on the asyncio
loop in one thread of the storage's own (:mod:`._bridge`), like the Redis storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, TypeVar, cast

import anyio
import anyio.abc

from .._core.errors import ConfigError
from .._core.policy import Policy
from . import _postgres_sql
from ._bridge import DirectExecutor, Executor, executor_for_current_loop
from ._records import parse_inspection, parse_record
from ._urls import check_postgres_dsn, check_url, hidden, redacted
from .shared import (
    Batch,
    CorruptRecordError,
    KeyWatcher,
    Proposal,
    SharedRecord,
    SharedStorage,
    StorageError,
    StoredBreaker,
    Watcher,
    jittered,
)

__all__ = ["PostgresStorage"]

logger: logging.Logger = logging.getLogger("breaker_machines.storage.postgres")

T = TypeVar("T")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_SCHEMES = ("postgres", "postgresql")
# invalid_schema_name, undefined_table, undefined_function: check (and create) it again
_SCHEMA_GONE = frozenset({"3F000", "42P01", "42883"})
# invalid_text_representation, invalid_parameter_value, numeric_value_out_of_range
_CORRUPT = frozenset({"22P02", "22023", "22003"})


def check_identifier(field: str, value: object) -> str:
    """Return ``value`` if it is a safe SQL identifier, else raise ConfigError for ``field``."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigError(
            field,
            value,
            "must be an SQL identifier: a letter or _, then up to 39 letters, digits or _",
        )
    return value


def _seconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number of seconds")
    if not 0.0 < value <= 1e12:  # also refuses NaN, inf and ints too large for a float
        raise ConfigError(field, value, "must be a number of seconds > 0 and at most 1e12")
    return float(value)


def _key(name: str) -> str:
    """What a notification carries instead of the name (NOTIFY payloads are bounded)."""
    return hashlib.md5(name.encode("utf-8", "surrogatepass")).hexdigest()


class PostgresStorage(SharedStorage):
    """Breaker state in PostgreSQL, shared by every process that uses the same table.

    ``PostgresStorage(dsn="postgresql://user@host/db")`` creates and owns an asyncpg pool;
    ``PostgresStorage(pool=my_pool)`` uses yours (under asyncio only) and leaves it open.
    Open it with ``async with storage:`` in the task that will close it.

    ``schema`` and ``table`` name where the state lives (the storage also creates
    ``<table>_buckets``, ``<table>_probes``, ``<table>_meta`` and a few functions named
    ``<table>_...``). With ``create=True`` (the default) they are created on first use if
    missing; with ``create=False`` the storage runs no DDL and expects them to exist: get
    the SQL from :meth:`ddl` (or ``python -m breaker_machines ddl``) and apply it yourself.
    ``ttl``, ``flush_interval``, ``flush_size``, ``refresh_interval`` and ``timeout`` mean
    what they mean for the Redis storage; ``sweep_interval`` is how often expired breakers
    are deleted.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Any = None,
        schema: str = "breaker_machines",
        table: str = "breakers",
        create: bool = True,
        ttl: float = 86_400.0,
        flush_interval: float = 0.1,
        flush_size: int = 10_000,
        refresh_interval: float = 2.0,
        timeout: float = 2.0,
        sweep_interval: float = 300.0,
        max_connections: int = 10,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise ConfigError("dsn", hidden(dsn), "give either dsn= or pool=, not both or neither")
        if dsn is not None:
            example = "postgresql://user@host/db"
            check_url("dsn", dsn, _SCHEMES, example, require_host=False, multi_host=True)
            check_postgres_dsn(dsn)
        if pool is not None:
            try:
                import asyncpg
            except ImportError:  # pragma: no cover - asyncpg is needed to have a pool at all
                raise ConfigError("pool", pool, "needs asyncpg installed") from None
            if not isinstance(pool, asyncpg.Pool):
                raise ConfigError("pool", pool, "must be an asyncpg.Pool")
        if not isinstance(create, bool):
            raise ConfigError("create", create, "must be True or False")
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 2
        ):
            raise ConfigError("max_connections", max_connections, "must be an integer >= 2")
        self._dsn = dsn
        self._pool: Any = pool
        self._owns_pool = pool is None
        self.schema: str = check_identifier("schema", schema)
        if schema.startswith("pg_"):
            raise ConfigError("schema", schema, "must not start with pg_ (reserved by PostgreSQL)")
        self.table: str = check_identifier("table", table)
        if table.endswith(("_meta", "_buckets", "_probes")):
            # <table>_meta etc. are the storage's own tables: "t" and "t_meta" would clash.
            raise ConfigError("table", table, "must not end in _meta, _buckets or _probes")
        self.create = create
        self.ttl: float = _seconds("ttl", ttl)
        self.sweep_interval: float = _seconds("sweep_interval", sweep_interval)
        self._configure(
            flush_interval=flush_interval,
            flush_size=flush_size,
            refresh_interval=refresh_interval,
            timeout=timeout,
        )
        self._max_connections = max_connections
        self.channel: str = f"{schema}.{table}"
        if len(self.channel.encode()) > 63:  # PostgreSQL truncates identifiers at 63 bytes
            raise ConfigError(
                "table", table, f"schema and table names together exceed 62 characters ({schema})"
            )
        names = _postgres_sql.names(schema, table)
        prefix = f"{names['schema']}."
        self._flush_sql = (
            f"SELECT {prefix}{names['flush']}"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
        self._propose_sql = (
            f"SELECT {prefix}{names['propose']}"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
        self._acquire_sql = f"SELECT {prefix}{names['acquire']}($1, $2, $3, $4, $5, $6, $7)"
        self._sweep_sql = f"SELECT {prefix}{names['sweep']}($1, $2)"
        self._version_sql = (
            f"SELECT value FROM {prefix}{names['meta']} WHERE key = 'schema_version'"
        )
        # The read side of operator tools (plain statements: no function of the schema,
        # so they work on a schema made by any release with this table layout).
        table_ref = f"{prefix}{names['table']}"
        buckets_ref = f"{prefix}{names['buckets']}"
        probes_ref = f"{prefix}{names['probes']}"
        self._names_sql = (
            f"SELECT coalesce(jsonb_agg(name ORDER BY name), '[]'::jsonb)::text FROM {table_ref}"
        )
        self._name_of_sql = (
            f"SELECT coalesce((SELECT to_jsonb(name) FROM {table_ref} WHERE md5(name) = $1 "
            "LIMIT 1), 'null'::jsonb)::text"
        )
        self._inspect_sql = f"""
            SELECT (CASE WHEN t.name IS NULL THEN jsonb_build_object(
                'status', 'closed', 'version', 0, 'trips', 0, 'reason', '', 'missing', 1)
            ELSE jsonb_build_object(
                'status', t.status, 'version', t.version, 'trips', t.trips,
                'reason', t.reason, 'cf', t.consecutive_failures,
                'hos', t.half_open_successes, 'rhead', t.rate_head, 'origin', t.origin,
                'missing', 0, 'opened_ago', c.now_ - t.opened_at,
                'retry_in', t.retry_at - c.now_, 'expires_in', t.expires_at - c.now_,
                'probes', (SELECT count(*) FROM {probes_ref} p
                           WHERE p.name = t.name AND p.lease_until > c.now_),
                'totals', (SELECT jsonb_build_array(
                        coalesce(sum(b.failures) FILTER (WHERE b.kind = 'f'), 0),
                        coalesce(sum(b.calls) FILTER (WHERE b.kind = 'r'), 0),
                        coalesce(sum(b.failures) FILTER (WHERE b.kind = 'r'), 0),
                        coalesce(sum(b.slow) FILTER (WHERE b.kind = 'r'), 0))
                    FROM {buckets_ref} b WHERE b.name = t.name))
            END)::text
            FROM (SELECT extract(epoch FROM clock_timestamp()) + $2 AS now_) AS c
            LEFT JOIN {table_ref} AS t ON t.name = $1"""
        self._executor: Executor | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._watchers: dict[str, list[tuple[str, Watcher]]] = {}
        self._all_watchers: list[KeyWatcher] = []
        self._ready = False
        self._shift = 0.0
        self._subscribed = anyio.Event()
        self.errors: int = 0
        """Operations that failed (unreachable, timed out, bad data) since the storage was built."""
        self.statements: int = 0
        """Statements sent (one per operation): what the benchmark counts."""

    def __repr__(self) -> str:
        where = redacted(self._dsn) if self._dsn is not None else "pool"
        return f"<PostgresStorage {where} {self.schema}.{self.table}>"

    def check_name(self, name: str) -> None:
        """A name PostgreSQL can store as a key: no NUL character, at most 2,000 bytes."""
        if "\x00" in name:
            raise ConfigError("name", name, "must not contain NUL to be stored in PostgreSQL")
        if len(name.encode("utf-8", "surrogatepass")) > 2000:
            raise ConfigError("name", name[:40] + "...", "is over 2,000 bytes (PostgreSQL keys)")

    def ddl(self) -> str:
        """The SQL that creates this storage's schema, tables and functions (idempotent)."""
        return _postgres_sql.ddl(self.schema, self.table)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> PostgresStorage:
        if self._executor is not None:
            raise RuntimeError(f"{self!r} is already open")
        try:
            import asyncpg  # noqa: F401  # pyright: ignore[reportUnusedImport]
        except ImportError:
            raise ConfigError(
                "storage", self, "needs asyncpg: pip install 'breaker-machines[postgres]'"
            ) from None
        executor = executor_for_current_loop("breaker-machines-postgres")
        if not self._owns_pool and not isinstance(executor, DirectExecutor):
            await executor.aclose()
            raise ConfigError(
                "pool",
                self._pool,
                "belongs to one asyncio loop: under trio pass dsn= instead",
            )
        self._executor = executor
        try:
            if self._pool is None:
                self._pool = await executor.run(self._connect)
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
            self._task_group = task_group
            task_group.start_soon(self._listen)
            task_group.start_soon(self._sweep_now_and_then)
        except BaseException:
            await self._close_pool()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        self._subscribed = anyio.Event()
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            await self._close_pool()

    async def _close_pool(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            if self._owns_pool and self._pool is not None:
                pool, self._pool = self._pool, None
                with anyio.move_on_after(self.timeout, shield=True):
                    await executor.run(pool.close)
                if not pool._closed:  # pyright: ignore[reportUnknownMemberType]
                    pool.terminate()
        except Exception:
            logger.warning("closing the PostgreSQL pool failed", exc_info=True)
        finally:
            with anyio.CancelScope(shield=True):
                await executor.aclose()

    async def _connect(self) -> Any:
        import asyncpg

        # min_size=0: no connection until the first operation, so an unreachable server
        # at start-up is a failed operation (retried), not a failed start.
        return await asyncpg.create_pool(  # pyright: ignore[reportUnknownMemberType]
            self._dsn,
            min_size=0,
            max_size=self._max_connections,
            timeout=self.timeout,
            command_timeout=self.timeout,
            reset=_keep_session,
        )

    # ------------------------------------------------------------------ operations

    async def _run(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        executor = self._executor
        if executor is None:
            raise StorageError(f"{self!r} is not open (use `async with storage:`)")
        try:
            with anyio.fail_after(self.timeout):
                return await executor.run(fn, *args)
        except TimeoutError:
            self.errors += 1
            raise StorageError(f"postgres {what}: no answer within {self.timeout}s") from None
        except StorageError:
            self.errors += 1
            raise
        except ConfigError:
            raise
        except Exception as error:
            self.errors += 1
            sqlstate = getattr(error, "sqlstate", None)
            if sqlstate in _SCHEMA_GONE:
                self._ready = False  # the server lost the schema (restored, restarted empty)
            if sqlstate in _CORRUPT:  # stored data a function cannot read (batches)
                raise CorruptRecordError(f"postgres {what}: {error}") from None
            raise StorageError(f"postgres {what}: {type(error).__name__}: {error}") from error

    async def _ensure_schema(self) -> None:
        """Create the schema once (with ``create=True``), or check that it is there."""
        if self._ready:
            return
        pool = self._pool
        ddl = self.ddl()
        lock_key = f"breaker_machines:{self.schema}"  # CREATE SCHEMA races across tables too
        version_sql = self._version_sql
        create = self.create

        meta = f"{_postgres_sql.quote(self.schema)}.{_postgres_sql.quote(self.table + '_meta')}"

        async def read_version(connection: Any) -> str | None:
            if await connection.fetchval("SELECT to_regclass($1)", meta) is None:
                return None
            return cast("str | None", await connection.fetchval(version_sql))

        async def ensure() -> str | None:
            async with _connection(pool) as connection, connection.transaction():
                # One process at a time; the DDL runs only where the schema is missing, so
                # a schema another release made is never touched, only refused.
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key)
                version = await read_version(connection)
                if version is None and create:
                    await connection.execute(ddl)
                    version = await read_version(connection)
                return version

        version = await self._run("schema", ensure)
        if version is None or version != str(_postgres_sql.SCHEMA_VERSION):
            self.errors += 1
        if version is None:
            raise StorageError(
                f"postgres: {self.schema}.{self.table} does not exist and create=False: "
                "apply PostgresStorage.ddl() (or `python -m breaker_machines ddl`) first"
            )
        if version != str(_postgres_sql.SCHEMA_VERSION):
            raise StorageError(
                f"postgres: {self.schema}.{self.table} has schema version {version}; this "
                f"release uses {_postgres_sql.SCHEMA_VERSION}"
            )
        self._ready = True

    async def _call(self, what: str, sql: str, *args: Any) -> Any:
        await self._ensure_schema()
        pool = self._pool

        async def fetch() -> Any:
            return await _fetchval(pool, sql, *args)

        self.statements += 1
        raw = await self._run(what, fetch)
        try:
            return json.loads(raw)
        except (TypeError, ValueError) as error:
            self.errors += 1
            raise StorageError(f"postgres {what}: unreadable answer {raw!r}") from error

    async def flush(self, name: str, policy: Policy, batch: Batch) -> SharedRecord:
        """Add ``batch`` to the shared windows and read the record back (one statement)."""
        answer = await self._call(
            "flush",
            self._flush_sql,
            name,
            self._shift,
            self.ttl,
            batch.version,
            batch.outcomes,
            policy.within_width,
            policy.rate_width,
            policy.rate_bucket_calls,
            policy.bucket_count,
            [token for token, _ in batch.probes],
            [ok for _, ok in batch.probes],
            batch.origin,
            batch.seq,
        )
        return self._record(answer, policy)

    async def propose(
        self, name: str, expected: int, proposal: Proposal, *, force: bool = False
    ) -> tuple[bool, SharedRecord]:
        """``UPDATE ... WHERE version = expected`` (or forced), then ``NOTIFY``."""
        answer = await self._call(
            "propose",
            self._propose_sql,
            name,
            self._shift,
            self.ttl,
            expected,
            force,
            proposal.status.value,
            proposal.version,
            proposal.trips,
            proposal.reason.value,
            proposal.opened_ago,
            proposal.open_for,
            proposal.origin,
            self.channel,
        )
        return self._verdict(answer)

    async def acquire_probe(
        self, name: str, version: int, limit: int, lease: float, token: str
    ) -> tuple[bool, SharedRecord]:
        """Take a fleet-wide half-open permit (a row with a lease end)."""
        answer = await self._call(
            "acquire", self._acquire_sql, name, self._shift, self.ttl, version, limit, lease, token
        )
        return self._verdict(answer)

    async def sweep(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` breakers whose TTL ran out; return how many went."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2_147_483_647:
            raise ConfigError("limit", limit, "must be an integer from 1 to 2147483647")
        await self._ensure_schema()
        pool = self._pool
        sql = self._sweep_sql
        shift = self._shift

        async def sweep() -> Any:
            return await _fetchval(pool, sql, shift, limit)

        self.statements += 1
        return int(await self._run("sweep", sweep))

    def _verdict(self, answer: Any) -> tuple[bool, SharedRecord]:
        if not isinstance(answer, list):
            self.errors += 1
            raise StorageError(f"postgres: unreadable answer {answer!r}")
        pair = cast("list[Any]", answer)  # type: ignore[redundant-cast]
        if len(pair) != 2 or pair[0] not in (0, 1):
            self.errors += 1
            raise StorageError(f"postgres: unreadable answer {answer!r}")
        return pair[0] == 1, self._record(pair[1], None)

    def _record(self, raw: Any, policy: Policy | None) -> SharedRecord:
        try:
            return parse_record(raw, policy)
        except (KeyError, TypeError, ValueError) as error:
            self.errors += 1
            raise CorruptRecordError(f"postgres: malformed record {raw!r} ({error})") from None

    # ------------------------------------------------------------------ push

    def watch(self, name: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` with each transition notified for ``name``."""
        key = _key(name)
        self._watchers.setdefault(key, []).append((name, watcher))
        entry = (name, watcher)

        def stop() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None and entry in watchers:
                watchers.remove(entry)
                if not watchers:
                    del self._watchers[key]

        return stop

    async def _listen(self) -> None:
        """Hold one connection in LISTEN while open; reconnect (with backoff) on errors."""
        delay = 0.05
        while True:
            try:
                await self._ensure_schema()
                inbox = await self._run("listen", self._start_listening)
                self._subscribed.set()
                self._missed()  # what was notified while not listening: breakers refresh
                delay = 0.05
                try:
                    while True:
                        assert self._executor is not None
                        payload = await self._executor.run(inbox.next)
                        self._deliver(payload)
                finally:
                    if self._executor is not None:
                        with anyio.move_on_after(self.timeout, shield=True), suppress(Exception):
                            await self._executor.run(inbox.close)
            except Exception:
                logger.warning(
                    "PostgreSQL LISTEN on %s failed; retrying in %.2fs",
                    self.channel,
                    delay,
                    exc_info=True,
                )
            if self._subscribed.is_set():  # waiters of an unset event keep waiting on it
                self._subscribed = anyio.Event()
            await anyio.sleep(jittered(delay))
            delay = min(delay * 2, 5.0)

    async def _start_listening(self) -> _Inbox:
        """On the driver's loop: a dedicated connection listening on the channel."""
        connection = await self._pool.acquire()
        inbox = _Inbox(self._pool, connection, self.channel)
        try:
            await connection.add_listener(self.channel, inbox.receive)
        except BaseException:
            await inbox.close()  # give the connection back, or each failure leaks one
            raise
        return inbox

    def _deliver(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            key = data["key"]
            if not isinstance(key, str):
                raise TypeError("key is not a string")
            record = parse_record(data, None)
        except Exception:
            logger.warning("ignored a malformed notification on %s: %r", self.channel, payload)
            return
        for name, watcher in list(self._watchers.get(key, ())):
            try:
                watcher(record)
            except Exception:
                logger.exception("a watcher of %r raised", name)
        for every in list(self._all_watchers):
            try:
                every(key, record)
            except Exception:
                logger.exception("a watcher of every breaker raised (at key %s)", key)

    def watch_all(self, watcher: KeyWatcher) -> Callable[[], None]:
        """Call ``watcher`` with ``(key, record)`` for each transition notified for any
        breaker of this table. A notification carries the MD5 of the name, not the name
        (payloads are bounded): :meth:`name_of` turns the key into the name."""
        self._all_watchers.append(watcher)

        def stop() -> None:
            if watcher in self._all_watchers:
                self._all_watchers.remove(watcher)

        return stop

    async def name_of(self, key: str) -> str | None:
        """The name of the stored breaker whose notifications carry ``key`` (the MD5 of
        its name), or ``None`` (one statement; scans the table)."""
        answer = await self._call("name_of", self._name_of_sql, key)
        if answer is not None and not isinstance(answer, str):
            self.errors += 1
            raise StorageError(f"postgres name_of: unreadable answer {answer!r}")
        return answer

    async def breaker_names(self) -> list[str]:
        """The names of the breakers stored in this table, sorted (one statement)."""
        answer = await self._call("names", self._names_sql)
        if not isinstance(answer, list) or not all(isinstance(n, str) for n in answer):  # pyright: ignore[reportUnknownVariableType]
            self.errors += 1
            raise StorageError(f"postgres names: unreadable answer {answer!r}")
        return cast("list[str]", answer)

    async def inspect(self, name: str) -> StoredBreaker:
        """Read breaker ``name`` as stored (one statement; writes nothing)."""
        raw = await self._call("inspect", self._inspect_sql, name, self._shift)
        try:
            return parse_inspection(name, raw)
        except (KeyError, TypeError, ValueError) as error:
            self.errors += 1
            raise CorruptRecordError(f"postgres: malformed record {raw!r} ({error})") from None

    async def wait_subscribed(self) -> None:
        """Wait until the storage listens for notified transitions (tests, start-up)."""
        await self._subscribed.wait()

    async def _sweep_now_and_then(self) -> None:
        while True:
            with suppress(StorageError):
                await self.sweep()
            await anyio.sleep(self.sweep_interval)

    # ------------------------------------------------------------------ testing, tools

    def advance_clock(self, seconds: float) -> None:
        """Testing only: the functions add ``seconds`` more to the server's clock."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ConfigError("seconds", seconds, "must be a finite number")
        if not math.isfinite(seconds):
            raise ConfigError("seconds", seconds, "must be a finite number")
        self._shift += float(seconds)


async def _keep_session(connection: Any) -> None:
    """The pool's reset: none. The storage leaves no session state behind (its advisory
    lock is per transaction; its LISTEN connection is closed, never returned), and the
    default reset is a round trip at every release, which on a server that stopped
    answering fails later, in a task asyncpg shields, where nobody can catch it."""


@asynccontextmanager
async def _connection(pool: Any) -> AsyncGenerator[Any, None]:
    """A connection from ``pool`` that is closed, not reset, when the work on it is cut off
    (by the storage's timeout, a cancellation, a dead server). Resetting a connection whose
    server does not answer waits, in a task asyncpg shields, and fails later where nobody
    can catch it; and one released inside a transaction is reset with a warning on stderr
    ("Resetting connection with an active transaction")."""
    import asyncpg

    connection = await pool.acquire()
    try:
        yield connection
    except BaseException as error:
        if not isinstance(error, asyncpg.PostgresError):
            connection.terminate()
        raise
    finally:
        await pool.release(connection)


async def _fetchval(pool: Any, sql: str, *args: Any) -> Any:
    """``pool.fetchval``, on a connection closed if the statement is cut off."""
    async with _connection(pool) as connection:
        return await connection.fetchval(sql, *args)


class _Inbox:
    """Notifications of one LISTEN connection, queued on the driver's loop."""

    def __init__(self, pool: Any, connection: Any, channel: str) -> None:
        self._pool = pool
        self._connection = connection
        self._channel = channel
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def receive(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._queue.put_nowait(payload)

    async def next(self) -> str:
        """The next payload; raises ConnectionError when the connection is gone."""
        while True:
            try:
                return await asyncio.wait_for(self._queue.get(), 1.0)
            except asyncio.TimeoutError:
                try:
                    closed = self._connection.is_closed()
                except Exception:  # asyncpg released a connection whose server died
                    closed = True
                if closed:
                    raise ConnectionError("the LISTEN connection was closed") from None

    async def close(self) -> None:
        # Closed, not reset: the listener ends when its connection failed, and resetting a
        # connection whose server does not answer fails later in a task asyncpg shields.
        with suppress(Exception):
            self._connection.terminate()
        with suppress(Exception):
            await self._pool.release(self._connection)
