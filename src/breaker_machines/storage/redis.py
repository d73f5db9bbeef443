"""Redis storage: one breaker shared by many processes, on redis-py's ``redis.asyncio``.

Each operation of the shared-storage protocol is one Lua script (one round trip, atomic
on the server): see :mod:`._redis_scripts`. Transitions are published on one channel per
key prefix; the storage listens to it while it is open and hands each message to the
breakers of this process that watch that name.

Under asyncio the client runs on the caller's event loop. redis-py does not run under
trio, so there the storage runs its client on an asyncio loop in one thread of its own
(:mod:`._bridge`), started when the storage opens and stopped when it closes.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.abc

from .._core.errors import ConfigError
from .._core.policy import Policy
from . import _redis_scripts
from ._bridge import Executor, executor_for_current_loop
from ._records import parse_inspection, parse_record
from ._urls import check_redis_url, check_url, hidden, redacted
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

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisStorage"]

logger: logging.Logger = logging.getLogger("breaker_machines.storage.redis")

T = TypeVar("T")

_SCHEMES = ("redis", "rediss", "unix")


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError("prefix", prefix, "must be a non-empty string")
    if "{" in prefix or "}" in prefix:
        raise ConfigError("prefix", prefix, "must not contain { or } (they make cluster hash tags)")
    if len(prefix) > 200 or not prefix.isprintable():
        raise ConfigError("prefix", prefix, "must be at most 200 printable characters")
    return prefix


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _seconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number of seconds")
    if not 0.0 < value <= 1e12:  # also refuses NaN, inf and ints too large for a float
        raise ConfigError(field, value, "must be a number of seconds > 0 and at most 1e12")
    return float(value)


class RedisStorage(SharedStorage):
    """Breaker state in Redis, shared by every process that uses the same ``prefix``.

    ``RedisStorage(url="redis://host:6379/0")`` (``rediss://`` for TLS; user and password
    in the URL for ACLs) creates and owns a connection pool;
    ``RedisStorage(client=my_redis)`` uses your ``redis.asyncio.Redis`` and leaves it open.
    Open it with ``async with storage:`` in the task that will close it.

    ``prefix`` starts every key; all keys of one breaker share a cluster hash tag. Keys of
    a breaker nobody writes to expire after ``ttl`` seconds. ``flush_interval`` and
    ``flush_size`` bound how long and how many outcomes a breaker batches before one
    flush (``flush_interval=0``: every outcome is written through); ``refresh_interval``
    is the backstop to published transitions; ``timeout`` bounds every operation.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        prefix: str = "breaker-machines",
        ttl: float = 86_400.0,
        flush_interval: float = 0.1,
        flush_size: int = 10_000,
        refresh_interval: float = 2.0,
        timeout: float = 1.0,
        max_connections: int = 16,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigError(
                "url", hidden(url), "give either url= or client=, not both or neither"
            )
        if url is not None:
            check_url("url", url, _SCHEMES, "redis://host:6379/0")
            check_redis_url(url)
        if client is not None:
            try:
                import redis.asyncio as aioredis
            except ImportError:  # pragma: no cover - redis is needed to have a client at all
                raise ConfigError("client", client, "needs redis-py installed") from None
            if not isinstance(client, aioredis.Redis):
                raise ConfigError("client", client, "must be a redis.asyncio.Redis")
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 2
        ):
            raise ConfigError("max_connections", max_connections, "must be an integer >= 2")
        self._url = url
        self._client: Any = client
        self._owns_client = client is None
        self.prefix: str = _check_prefix(prefix)
        self.ttl: float = _seconds("ttl", ttl)
        self._configure(
            flush_interval=flush_interval,
            flush_size=flush_size,
            refresh_interval=refresh_interval,
            timeout=timeout,
        )
        self._max_connections = max_connections
        self.channel: str = f"{self.prefix}:transitions"
        self._executor: Executor | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scripts: dict[str, Any] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._all_watchers: list[KeyWatcher] = []
        self._shift = 0.0
        self._subscribed = anyio.Event()
        self.errors: int = 0
        """Operations that failed (unreachable, timed out, bad data) since the storage was built."""

    def __repr__(self) -> str:
        where = redacted(self._url) if self._url is not None else "client"
        return f"<RedisStorage {where} prefix={self.prefix!r}>"

    # ------------------------------------------------------------------ keys

    def keys(self, name: str) -> tuple[str, str, str, str]:
        """The record, window, permit and applied-batch keys of breaker ``name``.

        The name is percent-encoded inside one hash tag: any string is a valid name (spaces,
        colons, braces, non-ASCII), two names never share a key, and all keys of one
        breaker live in one cluster slot.
        """
        # "~" first: the tag is never empty (an empty tag would not pin the slot).
        tag = "~" + urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
        base = f"{self.prefix}:{{{tag}}}"
        return f"{base}:state", f"{base}:window", f"{base}:probes", f"{base}:batches"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> RedisStorage:
        if self._executor is not None:
            raise RuntimeError(f"{self!r} is already open")
        try:
            import redis.asyncio  # noqa: F401  # pyright: ignore[reportUnusedImport]
        except ImportError:
            raise ConfigError(
                "storage", self, "needs redis-py: pip install 'breaker-machines[redis]'"
            ) from None
        executor = executor_for_current_loop("breaker-machines-redis")
        self._executor = executor
        try:
            if self._client is None:
                self._client = await executor.run(self._connect)
            for key, text in (
                ("flush", _redis_scripts.FLUSH),
                ("propose", _redis_scripts.PROPOSE),
                ("acquire", _redis_scripts.ACQUIRE),
                ("read", _redis_scripts.READ),
            ):
                self._scripts[key] = self._client.register_script(text)
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
            self._task_group = task_group
            task_group.start_soon(self._listen)
        except BaseException:
            await self._close_client()
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
            await self._close_client()

    async def _close_client(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            if self._owns_client and self._client is not None:
                client, self._client = self._client, None
                with anyio.move_on_after(self.timeout, shield=True):
                    await executor.run(client.aclose)
        except Exception:
            logger.warning("closing the Redis client failed", exc_info=True)
        finally:
            with anyio.CancelScope(shield=True):
                await executor.aclose()

    async def _connect(self) -> Any:
        import redis.asyncio as aioredis

        assert self._url is not None
        options: dict[str, Any] = {}
        try:  # redis-py >= 7
            from redis.maint_notifications import MaintNotificationsConfig
        except ImportError:  # pragma: no cover - older redis-py checks idle connections anyway
            pass
        else:
            # With maintenance notifications on ("auto", the default), the pool no longer
            # checks an idle connection before use: after a server restart each pooled
            # connection would fail one operation. This storage wants that check.
            options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        # A blocking pool: with every connection busy, an operation waits for one (within
        # its timeout) instead of failing at once with MaxConnectionsError.
        pool = aioredis.BlockingConnectionPool.from_url(  # pyright: ignore[reportUnknownMemberType]
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            max_connections=self._max_connections,
            timeout=self.timeout,
            health_check_interval=30,
            **options,
        )
        client = aioredis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # the client owns the pool: aclose() closes it
        return client

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
            raise StorageError(f"redis {what}: no answer within {self.timeout}s") from None
        except StorageError:
            self.errors += 1
            raise
        except Exception as error:
            self.errors += 1
            if "BM_CORRUPT" in str(error):  # a script found stored data that is not valid
                raise CorruptRecordError(f"redis {what}: {error}") from None
            raise StorageError(f"redis {what}: {type(error).__name__}: {error}") from error

    async def _script(self, key: str, name: str, args: list[Any]) -> Any:
        script = self._scripts.get(key)
        if script is None or self._executor is None:
            raise StorageError(f"{self!r} is not open (use `async with storage:`)")
        keys = list(self.keys(name))

        async def call() -> Any:
            return await script(keys=keys, args=args)

        raw = await self._run(key, call)
        try:
            return json.loads(raw)
        except (TypeError, ValueError) as error:
            self.errors += 1
            raise StorageError(f"redis {key}: unreadable answer {raw!r}") from error

    def _common(self) -> list[Any]:
        return [repr(self._shift), str(max(1, int(self.ttl * 1000)))]

    async def flush(self, name: str, policy: Policy, batch: Batch) -> SharedRecord:
        """Add ``batch`` to the shared windows and read the record back (one script)."""
        args = [
            *self._common(),
            str(batch.version),
            batch.outcomes,
            repr(policy.within_width),
            repr(policy.rate_width),
            str(policy.rate_bucket_calls),
            str(policy.bucket_count),
            json.dumps([[token, 1 if ok else 0] for token, ok in batch.probes]),
            name,
            batch.origin,
            str(batch.seq),
        ]
        return self._record(await self._script("flush", name, args), policy)

    async def propose(
        self, name: str, expected: int, proposal: Proposal, *, force: bool = False
    ) -> tuple[bool, SharedRecord]:
        """Compare-and-set ``proposal`` on ``expected`` (or force it) and publish it."""
        args = [
            *self._common(),
            str(expected),
            "1" if force else "0",
            proposal.status.value,
            str(proposal.version),
            str(proposal.trips),
            proposal.reason.value,
            "" if proposal.opened_ago is None else repr(proposal.opened_ago),
            "" if proposal.open_for is None else repr(proposal.open_for),
            proposal.origin,
            name,
            self.channel,
        ]
        answer = await self._script("propose", name, args)
        return self._verdict(answer)

    async def acquire_probe(
        self, name: str, version: int, limit: int, lease: float, token: str
    ) -> tuple[bool, SharedRecord]:
        """Take a fleet-wide half-open permit (a member of a sorted set scored by lease end)."""
        args = [*self._common(), str(version), str(limit), repr(lease), token]
        answer = await self._script("acquire", name, args)
        return self._verdict(answer)

    def _verdict(self, answer: Any) -> tuple[bool, SharedRecord]:
        if not isinstance(answer, list):
            self.errors += 1
            raise StorageError(f"redis: unreadable answer {answer!r}")
        pair = cast("list[Any]", answer)  # type: ignore[redundant-cast]
        if len(pair) != 2 or pair[0] not in (0, 1):
            self.errors += 1
            raise StorageError(f"redis: unreadable answer {answer!r}")
        return pair[0] == 1, self._record(pair[1], None)

    def _record(self, raw: Any, policy: Policy | None) -> SharedRecord:
        """Validate what Redis sent back; a malformed record is an error, never trusted."""
        try:
            return parse_record(raw, policy)
        except (KeyError, TypeError, ValueError) as error:
            self.errors += 1
            raise CorruptRecordError(f"redis: malformed record {raw!r} ({error})") from None

    # ------------------------------------------------------------------ push

    def watch(self, name: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` with each transition published for ``name``."""
        self._watchers.setdefault(name, []).append(watcher)

        def stop() -> None:
            watchers = self._watchers.get(name)
            if watchers is not None and watcher in watchers:
                watchers.remove(watcher)
                if not watchers:
                    del self._watchers[name]

        return stop

    async def _listen(self) -> None:
        """Receive published transitions while the storage is open; reconnect on errors."""
        delay = 0.05
        while True:
            pubsub = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await self._run("subscribe", pubsub.subscribe, self.channel)
                self._subscribed.set()
                self._missed()  # what was published while unsubscribed: breakers refresh
                delay = 0.05
                while True:
                    assert self._executor is not None
                    message = await self._executor.run(pubsub.get_message, timeout=1.0)
                    if message is not None:
                        self._deliver(message)
            except Exception:
                logger.warning(
                    "Redis pub/sub on %s failed; retrying in %.2fs",
                    self.channel,
                    delay,
                    exc_info=True,
                )
            finally:
                if pubsub is not None and self._executor is not None:
                    with anyio.move_on_after(self.timeout, shield=True), suppress(Exception):
                        await self._executor.run(pubsub.aclose)
            if self._subscribed.is_set():  # waiters of an unset event keep waiting on it
                self._subscribed = anyio.Event()
            await anyio.sleep(jittered(delay))
            delay = min(delay * 2, 5.0)

    def _deliver(self, message: Any) -> None:
        try:
            data = json.loads(message["data"])
            name = data["name"]
            if not isinstance(name, str):
                raise TypeError("name is not a string")
            record = parse_record(data, None)
        except Exception:
            logger.warning("ignored a malformed message on %s: %r", self.channel, message)
            return
        for watcher in list(self._watchers.get(name, ())):
            try:
                watcher(record)
            except Exception:
                logger.exception("a watcher of %r raised", name)
        for every in list(self._all_watchers):
            try:
                every(name, record)
            except Exception:
                logger.exception("a watcher of every breaker raised (at %r)", name)

    def watch_all(self, watcher: KeyWatcher) -> Callable[[], None]:
        """Call ``watcher`` with ``(name, record)`` for each transition published for any
        breaker of this prefix (on Redis a breaker's key is its name)."""
        self._all_watchers.append(watcher)

        def stop() -> None:
            if watcher in self._all_watchers:
                self._all_watchers.remove(watcher)

        return stop

    async def wait_subscribed(self) -> None:
        """Wait until the storage listens for published transitions (tests, start-up)."""
        await self._subscribed.wait()

    # ------------------------------------------------------------------ testing, tools

    def advance_clock(self, seconds: float) -> None:
        """Testing only: the scripts add ``seconds`` more to Redis's ``TIME``."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
        ):
            raise ConfigError("seconds", seconds, "must be a finite number")
        self._shift += float(seconds)

    async def breaker_names(self) -> list[str]:
        """The names of the breakers stored under this prefix, sorted (``SCAN``, a few
        hundred keys per round trip; each bounded by ``timeout``)."""
        client = self._client
        pattern = _glob_escape(self.prefix) + ":{~*}:state"
        found: set[str] = set()
        cursor: Any = 0

        async def scan(at: Any) -> Any:
            return await client.scan(cursor=at, match=pattern, count=500)

        while True:
            cursor, keys = await self._run("scan", scan, cursor)
            for key in keys:
                name = self._name_of_key(key)
                if name is not None:
                    found.add(name)
            if int(cursor) == 0:
                return sorted(found)

    def _name_of_key(self, key: Any) -> str | None:
        """The name whose record key is ``key`` (None: a key this storage did not make)."""
        text = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else str(key)
        head = f"{self.prefix}:{{~"
        if not (text.startswith(head) and text.endswith("}:state")):
            return None
        tag = text[len(head) : -len("}:state")]
        try:
            name = urllib.parse.unquote_to_bytes(tag).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
        return name if self.keys(name)[0] == text else None

    async def inspect(self, name: str) -> StoredBreaker:
        """Read breaker ``name`` as stored (one script; writes nothing)."""
        raw = await self._script("read", name, [repr(self._shift)])
        try:
            return parse_inspection(name, raw)
        except (KeyError, TypeError, ValueError) as error:
            self.errors += 1
            raise CorruptRecordError(f"redis: malformed record {raw!r} ({error})") from None

    async def delete(self, name: str) -> None:
        """Remove every key of breaker ``name``."""
        client = self._client

        async def delete() -> Any:
            return await client.delete(*self.keys(name))

        await self._run("delete", delete)

    @staticmethod
    def new_origin() -> str:
        """A fresh identifier for one breaker object's writes."""
        return uuid.uuid4().hex
