"""The Redis storage: its configuration, its keys, the shared-storage protocol on a real
server, breakers sharing one circuit through it, and what a breaker does when Redis is
unreachable or never answers.

Every async test runs under asyncio and trio. Nothing here sleeps to wait for something:
tests flush with ``await breaker.sync()``, wait on events that callbacks set, move the
storage's clock with ``advance_clock()``, and bound every wait with ``fail_after`` (the only
other timed waits check that something does *not* happen within a bound).

A loopback :class:`Proxy` in front of Redis plays the unreliable network: it refuses
connections, never answers, or lets requests through and drops the answers.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    Proposal,
    RedisStorage,
    SharedRecord,
    StorageError,
)

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


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A plain (blocking) redis-py client to look at what the storage wrote."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def server_now(raw: Any) -> float:
    seconds, micros = raw.time()
    return float(seconds) + micros / 1_000_000


def align(storage: RedisStorage, raw: Any, width: float = WIDE) -> None:
    """Move ``storage``'s clock to one second into a bucket of ``width`` seconds."""
    now = server_now(raw)
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
    url: str, prefix: str, count: int = 2, **options: Any
) -> AsyncIterator[list[RedisStorage]]:
    """``count`` storages on one prefix (think: processes), listening to pub/sub.

    Batches wait for ``sync()`` and idle breakers never refresh on their own, so only what
    a test does (or publishes) moves a breaker.
    """
    settings: dict[str, Any] = {
        "flush_interval": 3600.0,
        "refresh_interval": 3600.0,
        "timeout": 5.0,
        **options,
    }
    async with RedisStorage(url, prefix=prefix, **settings) as first:
        if count == 1:
            with anyio.fail_after(LIMIT):
                await first.wait_subscribed()
            yield [first]
            return
        async with storages(url, prefix, count - 1, **options) as rest:
            with anyio.fail_after(LIMIT):
                await first.wait_subscribed()
            yield [first, *rest]


class Proxy:
    """A loopback TCP server in front of Redis that the test switches between modes.

    ``refuse``: every connection is closed at once; ``blackhole``: accepted and never
    answered; ``forward``: relayed to Redis; ``mute``: what the client sends still reaches
    Redis, but Redis's answers are dropped (on connections already open). ``port`` is where
    it listens.
    """

    def __init__(self, target: tuple[str, int], mode: str) -> None:
        self.target = target
        self.mode = mode
        self.port = 0
        self.refused = anyio.Event()
        self.accepted = anyio.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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
                            if self.mode == "mute" and sink is client:
                                continue
                            await sink.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)


@asynccontextmanager
async def proxy(mode: str, target: tuple[str, int] = ("127.0.0.1", 6379)) -> AsyncIterator[Proxy]:
    server = Proxy(target, mode)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def redis_address(redis_url: str) -> tuple[str, int]:
    import urllib.parse

    parts = urllib.parse.urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


# =========================================================================== configuration

URL = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("args", "options", "field"),
    [
        ((), {}, "url"),  # neither url nor client
        ((URL,), {"client": object()}, "url"),  # both
        ((42,), {}, "url"),
        (("http://127.0.0.1:6379/0",), {}, "url"),
        (("127.0.0.1:6379",), {}, "url"),
        (("redis://",), {}, "url"),
        (("redis://:6379/0",), {}, "url"),
        (("redis://127.0.0.1:99999/0",), {}, "url"),
        (("redis://127.0.0.1:port/0",), {}, "url"),
        (("redis://127.0.0.1:-1/0",), {}, "url"),
        ((), {"client": object()}, "client"),
        ((), {"client": "redis://127.0.0.1:6379/0"}, "client"),
        ((URL,), {"prefix": ""}, "prefix"),
        ((URL,), {"prefix": "a{b"}, "prefix"),
        ((URL,), {"prefix": "a}b"}, "prefix"),
        ((URL,), {"prefix": "{}"}, "prefix"),
        ((URL,), {"prefix": 7}, "prefix"),
        ((URL,), {"prefix": None}, "prefix"),
        ((URL,), {"prefix": b"bytes"}, "prefix"),
        ((URL,), {"prefix": "line\nbreak"}, "prefix"),
        ((URL,), {"prefix": "p" * 201}, "prefix"),
        *[
            ((URL,), {field: value}, field)
            for field in ("ttl", "timeout", "refresh_interval")
            for value in (0, 0.0, -1, math.nan, math.inf, -math.inf, True, False, "1", None)
        ],
        *[
            ((URL,), {"flush_interval": value}, "flush_interval")
            for value in (-0.001, -1, math.nan, math.inf, True, "0", None)
        ],
        *[
            ((URL,), {"flush_size": value}, "flush_size")
            for value in (0, -1, True, 1.5, "10", None)
        ],
        *[
            ((URL,), {"max_connections": value}, "max_connections")
            for value in (1, 0, -3, True, 2.5, "16", None)
        ],
    ],
)
def test_a_bad_configuration_raises_config_error_naming_the_field(
    args: tuple[Any, ...], options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisStorage(*args, **options)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}=")


def test_a_sync_redis_client_is_refused() -> None:
    import redis

    client = redis.Redis()
    try:
        with pytest.raises(ConfigError) as caught:
            RedisStorage(client=client)
        assert caught.value.field == "client"
    finally:
        client.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost",
        "rediss://user:pw@cache.example.com:6380/2",
        "redis://[::1]:6379/0",
        "unix:///var/run/redis.sock",
    ],
)
def test_good_urls_are_accepted(url: str) -> None:
    storage = RedisStorage(url)
    assert storage.prefix == "breaker-machines"
    assert storage.channel == "breaker-machines:transitions"


def test_the_limits_of_each_option_are_accepted() -> None:
    storage = RedisStorage(
        URL,
        prefix="p" * 200,
        ttl=0.5,
        flush_interval=0,
        flush_size=1,
        refresh_interval=0.001,
        timeout=1e-3,
        max_connections=2,
    )
    assert storage.ttl == 0.5
    assert storage.flush_interval == 0.0
    assert storage.flush_size == 1
    assert storage.refresh_interval == 0.001
    assert storage.timeout == 0.001


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:secret@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://:secret@cache/0", "redis://:***@cache/0"),
        ("rediss://user:secret@cache/0", "rediss://user:***@cache/0"),
        ("redis://secret:secret@cache/0", "redis://secret:***@cache/0"),
    ],
)
def test_repr_redacts_the_password(url: str, shown: str) -> None:
    text = repr(RedisStorage(url, prefix="app"))
    assert text == f"<RedisStorage {shown} prefix='app'>"
    assert "secret@" not in text
    assert ":secret" not in text


def test_repr_redacts_a_password_given_in_the_query_string() -> None:
    assert "secret" not in repr(RedisStorage("redis://cache:6379/0?password=secret"))


@pytest.mark.parametrize("url", ["http://user:secret@cache/0", "redis://user:secret@cache:99999/0"])
def test_a_config_error_about_a_url_does_not_show_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisStorage(url)
    assert "secret" not in str(caught.value)


def test_repr_of_a_storage_on_a_client_names_no_url() -> None:
    import redis.asyncio

    client = redis.asyncio.Redis()
    assert repr(RedisStorage(client=client, prefix="app")) == "<RedisStorage client prefix='app'>"


# =========================================================================== keys

NAMES = [
    "svc",
    "with spaces",
    "a:b:c",
    "{braces}",
    "}{",
    "{a}{b}",
    "100% %20 %7B",
    "ünïcødé ☃ 名前 🚀",
    "e\u0301",  # decomposed é: a different name from the composed one
    "é",
    "tab\tnew\nline\x00nul",
    "x" * 100_000,
    "é" * 10_000,
]


def short(name: object) -> str:
    """A test id for a name that may be 100,000 characters long."""
    text = repr(name)
    return text if len(text) <= 30 else f"{text[:20]}...({len(text)} chars)"


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes: between the first ``{`` and the next ``}``."""
    start = key.index("{")
    end = key.index("}", start + 1)
    return key[start + 1 : end]


def check_keys(storage: RedisStorage, name: str) -> tuple[str, str, str, str]:
    keys = storage.keys(name)
    assert len(set(keys)) == 4
    tags = {hash_tag(key) for key in keys}
    assert len(tags) == 1
    assert all(tags)  # an empty tag ({}) would not pin the cluster slot
    for key in keys:
        assert key.startswith(f"{storage.prefix}:{{")
        assert key.count("{") == 1
        assert key.count("}") == 1
    return keys


@pytest.mark.parametrize("name", [*NAMES, "", "lone \ud800 surrogate"], ids=short)
def test_all_keys_of_a_name_share_one_hash_tag(name: str) -> None:
    check_keys(RedisStorage(URL, prefix="app:v1"), name)


@pytest.mark.parametrize(
    "name",
    [
        *NAMES,
        "",  # an empty hash tag would not pin the slot: the tag is never empty
    ],
    ids=short,
)
def test_all_keys_of_a_name_are_in_one_cluster_slot(name: str) -> None:
    from redis.crc import key_slot

    keys = RedisStorage(URL, prefix="app").keys(name)
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("a b", "a%20b"),
        ("{", "%7B"),
        ("a:b", "a%3Ab"),
        ("", "%"),
        ("é", "%C3%A9"),
        ("é", "e\u0301"),
        ("x}:state", "x"),
        ("a", "A"),
    ],
)
def test_lookalike_names_get_different_keys(one: str, other: str) -> None:
    storage = RedisStorage(URL)
    assert not set(storage.keys(one)) & set(storage.keys(other))


@given(st.text(), st.text())
def test_distinct_names_never_share_a_key(one: str, other: str) -> None:
    storage = RedisStorage(URL, prefix="p")
    keys_one = check_keys(storage, one)
    keys_other = check_keys(storage, other)
    if one == other:
        assert keys_one == keys_other
    else:
        assert not set(keys_one) & set(keys_other)
        assert hash_tag(keys_one[0]) != hash_tag(keys_other[0])


def test_the_prefix_starts_every_key_and_names_the_channel() -> None:
    storage = RedisStorage(URL, prefix="team:svc")
    assert all(key.startswith("team:svc:{") for key in storage.keys("x"))
    assert storage.channel == "team:svc:transitions"
    assert not set(storage.keys("x")) & set(RedisStorage(URL, prefix="team").keys("x"))


# =========================================================================== the protocol

CONSECUTIVE = Policy(consecutive_failures=100)
IN_WINDOW = Policy(failures=1000, within=10 * WIDE)  # 10 buckets of WIDE seconds
BY_CALLS = Policy(failure_rate=0.5, window_calls=10, minimum_calls=5)  # 10 buckets of 1 call
BY_PAIRS = Policy(failure_rate=0.5, window_calls=10, minimum_calls=5, buckets=5)  # 5 x 2 calls
BY_TIME = Policy(failure_rate=0.5, slow_call_rate=0.5, slow_call_duration=1.0, window=10 * WIDE)


@both
async def test_a_flush_adds_up_consecutive_failures(redis_url: str, redis_prefix: str) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            expected = [("fffsf", 1), ("ff", 3), ("FF", 5), ("", 5), ("S", 0), ("fs", 0)]
            for outcomes, failures in expected:
                record = await storage.flush("svc", CONSECUTIVE, Batch(0, outcomes))
                assert record.consecutive_failures == failures, outcomes
                assert (record.status, record.version, record.missing) == (
                    State.CLOSED,
                    0,
                    False,
                )


@both
async def test_a_refresh_of_a_name_never_written_is_missing_and_writes_nothing(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", CONSECUTIVE, Batch(0))
            assert record.missing
            assert (record.status, record.version, record.trips) == (State.CLOSED, 0, 0)
            assert raw.exists(*storage.keys("svc")) == 0
            await storage.flush("svc", CONSECUTIVE, Batch(0, "s"))
            assert not (await storage.flush("svc", CONSECUTIVE, Batch(0))).missing


@both
async def test_the_failure_window_counts_failures_per_time_bucket(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        align(storage, raw)
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
            # Buckets that left the window were deleted from the hash.
            window = raw.hgetall(storage.keys("svc")[1])
            assert list(window.values()) == ["1"]


@both
async def test_a_count_based_rate_window_splits_at_the_bucket_size(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
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
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", BY_PAIRS, Batch(0, "f" * 20 + "s" * 5))
            # 25 calls in buckets of 2: buckets 0..12; the window holds 8..12 (9 calls).
            assert record.rate_head == 12
            assert len(record.rate_buckets) == 5
            assert total(record.rate_buckets) == (9, 4, 0)
            assert record.rate_buckets[0] == (1, 0, 0)
            fields = raw.hkeys(storage.keys("svc")[1])
            assert sorted(int(f.split(":")[1]) for f in fields if f.startswith("c:")) == [
                8,
                9,
                10,
                11,
                12,
            ]


@both
async def test_a_large_batch_over_many_buckets_is_counted_in_one_flush(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    one_per_bucket = Policy(failure_rate=0.5, window_calls=1000, buckets=1000, minimum_calls=10)
    # (A generous timeout: a script this size keeps Redis busy for a noticeable moment.)
    async with RedisStorage(redis_url, prefix=redis_prefix, timeout=LIMIT) as storage:
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", one_per_bucket, Batch(0, "fs" * 1500))
            assert (record.rate_head, len(record.rate_buckets)) == (2999, 1000)
            assert total(record.rate_buckets) == (1000, 500, 0)
            assert record.consecutive_failures == 0
            # calls of the last 1000 buckets, failures of the 500 that failed: no more.
            assert raw.hlen(storage.keys("svc")[1]) == 1500
            record = await storage.flush("svc", one_per_bucket, Batch(0, "F" * 20_000))
            assert (record.rate_head, len(record.rate_buckets)) == (22_999, 1000)
            assert total(record.rate_buckets) == (1000, 1000, 1000)
            assert record.consecutive_failures == 20_000
            assert raw.hlen(storage.keys("svc")[1]) == 3000


@both
async def test_a_time_based_rate_window_counts_calls_failures_and_slow_calls(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        align(storage, raw)
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", BY_TIME, Batch(0, "fFsSs"))
            assert record.rate_buckets == ((5, 2, 2),)
            storage.advance_clock(WIDE)
            record = await storage.flush("svc", BY_TIME, Batch(0, "S"))
            assert record.rate_buckets == ((1, 0, 1), (5, 2, 2))


@both
async def test_a_batch_of_another_version_is_not_counted(redis_url: str, redis_prefix: str) -> None:
    policy = Policy(consecutive_failures=100, failures=100, within=10 * WIDE)
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            assert (await storage.flush("svc", policy, Batch(1, "fff"))).missing  # a future one
            won, _ = await storage.propose("svc", 0, proposal(State.OPEN, 1))
            assert won
            record = await storage.flush("svc", policy, Batch(0, "fff"))  # an old one
            assert (record.version, record.consecutive_failures) == (1, 0)
            assert record.failure_buckets == ()
            record = await storage.flush("svc", policy, Batch(1, "fff"))  # OPEN counts nothing
            assert (record.version, record.consecutive_failures) == (1, 0)
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
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            won, record = await storage.propose("svc", 0, proposal(State.OPEN, 1, origin="one"))
            assert won
            assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
            assert record.reason is Reason.CONSECUTIVE_FAILURES
            assert record.origin == "one"
            assert not record.missing

            # Another process proposing on the version it last saw loses...
            won, record = await storage.propose("svc", 0, proposal(State.OPEN, 1, origin="two"))
            assert not won
            # ... and is told what is stored.
            assert (record.status, record.version, record.origin) == (State.OPEN, 1, "one")
            won, record = await storage.propose("svc", 7, proposal(State.CLOSED, 8))
            assert not won
            assert record.version == 1

            won, record = await storage.propose(
                "svc", 1, proposal(State.HALF_OPEN, 2, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert won
            assert (record.status, record.version) == (State.HALF_OPEN, 2)
            assert record.reason is Reason.RESET_AFTER_ELAPSED


@both
async def test_a_forced_proposal_wins_with_a_version_past_the_stored_one(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            await storage.propose("svc", 0, proposal(State.OPEN, 1))
            forced = proposal(State.FORCED_OPEN, 1, trips=0, reason=Reason.FORCED_OPEN)
            won, record = await storage.propose("svc", 0, forced, force=True)
            assert won
            assert (record.status, record.version) == (State.FORCED_OPEN, 2)  # stored + 1
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
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    policy = Policy(
        consecutive_failures=100,
        failures=100,
        within=10 * WIDE,
        failure_rate=0.9,
        window_calls=10,
        minimum_calls=10,
    )
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        state_key, window_key, probes_key, _ = storage.keys("svc")
        with anyio.fail_after(LIMIT):
            record = await storage.flush("svc", policy, Batch(0, "sfff"))
            assert record.consecutive_failures == 3
            assert record.failure_buckets
            assert record.rate_buckets
            assert raw.exists(window_key)
            won, record = await storage.propose(
                "svc", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert won
            assert not raw.exists(window_key)
            record = await storage.flush("svc", policy, Batch(1))
            assert (record.consecutive_failures, record.rate_head) == (0, 0)
            assert (record.failure_buckets, record.rate_buckets) == ((), ())

            assert (await storage.acquire_probe("svc", 1, 5, 60.0, "p1"))[0]
            assert (await storage.acquire_probe("svc", 1, 5, 60.0, "p2"))[0]
            record = await storage.flush("svc", policy, Batch(1, "", (("p1", True),)))
            assert (record.half_open_successes, record.probes) == (1, 1)

            won, record = await storage.propose(
                "svc", 1, proposal(State.OPEN, 2, trips=2, reason=Reason.PROBE_FAILED)
            )
            assert won
            assert (record.half_open_successes, record.probes) == (0, 0)
            assert not raw.exists(probes_key)
            assert raw.hget(state_key, "hos") == "0"


@both
async def test_a_written_transition_is_published_to_every_storage_on_the_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    async with storages(redis_url, redis_prefix) as (writer, reader):
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
            # A lost compare-and-set publishes nothing.
            won, _ = await writer.propose("svc", 0, proposal(State.OPEN, 1, origin="loser"))
            assert not won
            await arrived["svc"].wait()
            await writer.propose("gone", 0, proposal(State.OPEN, 1, origin="writer"))
            # Messages arrive in order: once "other" is here, nothing else is coming.
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
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
        with anyio.fail_after(LIMIT):
            won, record = await storage.acquire_probe("svc", 0, 2, 10.0, "closed")
            assert not won
            assert record.status is State.CLOSED
            await storage.propose("svc", 0, proposal(State.OPEN, 1))
            assert not (await storage.acquire_probe("svc", 1, 2, 10.0, "open"))[0]
            await storage.propose(
                "svc", 1, proposal(State.HALF_OPEN, 2, reason=Reason.RESET_AFTER_ELAPSED)
            )
            for version in (0, 1, 3):
                won, record = await storage.acquire_probe("svc", version, 2, 10.0, "stale")
                assert not won
                assert (record.status, record.version) == (State.HALF_OPEN, 2)
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
            won, record = await storage.acquire_probe("svc", 2, 2, 10.0, "t3")
            assert won
            assert record.probes == 1


@both
async def test_a_released_permit_counts_a_success_only_while_half_open_at_its_version(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
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

            # CLOSED at the batch's version: a permit (planted by hand) counts nothing.
            await storage.propose("svc", 1, proposal(State.CLOSED, 2))
            raw.zadd(storage.keys("svc")[2], {"planted": 1e12})
            record = await release(2, ("planted", True))
            assert record.half_open_successes == 0
            assert record.probes == 0
            assert raw.hget(storage.keys("svc")[0], "hos") == "0"


@both
async def test_keys_expire_after_the_ttl_unless_a_process_uses_them(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    policy = Policy(failures=100, within=10 * WIDE)
    async with RedisStorage(redis_url, prefix=redis_prefix, ttl=100) as storage:
        state_key, window_key, probes_key, _ = storage.keys("svc")
        with anyio.fail_after(LIMIT):
            await storage.flush("svc", policy, Batch(0, "ff"))
            for key in (state_key, window_key):
                assert 0 < raw.pttl(key) <= 100_000
            # A refresh (a process still watching the breaker) keeps the record alive.
            raw.persist(state_key)
            await storage.flush("svc", policy, Batch(0))
            assert 0 < raw.pttl(state_key) <= 100_000
            raw.persist(state_key)
            raw.persist(window_key)
            await storage.flush("svc", policy, Batch(0, "s"))
            for key in (state_key, window_key):
                assert 0 < raw.pttl(key) <= 100_000
            raw.persist(state_key)
            await storage.propose(
                "svc", 0, proposal(State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED)
            )
            assert 0 < raw.pttl(state_key) <= 100_000
            raw.persist(state_key)
            assert (await storage.acquire_probe("svc", 1, 1, 5.0, "t"))[0]
            for key in (state_key, probes_key):
                assert 0 < raw.pttl(key) <= 100_000
            # A refresh of a name nobody wrote creates nothing to expire.
            await storage.flush("unknown", policy, Batch(0))
            assert raw.exists(*storage.keys("unknown")) == 0


@both
async def test_a_record_past_its_ttl_is_missing_and_a_breaker_writes_its_state_back(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with storages(redis_url, redis_prefix, count=1, ttl=100) as (storage,):
        breaker = Breaker("svc", storage=storage, consecutive_failures=1)
        async with running(breaker):
            with anyio.fail_after(LIMIT):
                with pytest.raises(Boom):
                    await breaker.call(fail)
                await breaker.sync()
                assert raw.hget(storage.keys("svc")[0], "status") == "open"
                raw.delete(*storage.keys("svc"))  # expired (or the server restarted empty)
                await breaker.sync()  # reads "missing": the breaker re-seeds the record
                stored = raw.hgetall(storage.keys("svc")[0])
                assert stored["status"] == "open"
                assert int(stored["version"]) >= 1
                assert 0 < raw.pttl(storage.keys("svc")[0]) <= 100_000
                assert breaker.state is State.OPEN


@both
async def test_times_are_the_servers_and_travel_as_durations(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with storages(redis_url, redis_prefix) as (one, other):
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
            stored = raw.hgetall(one.keys("svc")[0])
            now = server_now(raw)
            assert abs(float(stored["retry_at"]) - (now + 30.0)) < 1.0
            assert abs(float(stored["opened_at"]) - (now - 5.0)) < 1.0
            one.advance_clock(10.0)  # only this storage's clock moves
            record = await one.flush("svc", CONSECUTIVE, Batch(1))
            assert record.retry_in is not None
            assert 19.0 < record.retry_in <= 20.0
            record = await other.flush("svc", CONSECUTIVE, Batch(1))
            assert record.retry_in is not None
            assert 29.0 < record.retry_in <= 30.0


@both
async def test_operations_on_a_closed_storage_raise_storage_error(
    redis_url: str, redis_prefix: str
) -> None:
    storage = RedisStorage(redis_url, prefix=redis_prefix)
    async with storage:
        with pytest.raises(RuntimeError, match="already open"):
            await storage.__aenter__()
        with anyio.fail_after(LIMIT):
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
    operations: list[Callable[[], Awaitable[Any]]] = [
        lambda: storage.flush("svc", CONSECUTIVE, Batch(0, "f")),
        lambda: storage.propose("svc", 0, proposal(State.OPEN, 1)),
        lambda: storage.acquire_probe("svc", 1, 1, 10.0, "t"),
        lambda: storage.delete("svc"),
    ]
    for operation in operations:
        with pytest.raises(StorageError, match="not open"):
            await operation()


@both
async def test_operations_on_a_storage_never_opened_raise_storage_error(
    redis_url: str, redis_prefix: str
) -> None:
    storage = RedisStorage(redis_url, prefix=redis_prefix)
    with pytest.raises(StorageError, match="not open"):
        await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))


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
@pytest.mark.parametrize("name", ["svc", "a b {c}:d }{", "ünï ☃ %41 名前", ""], ids=short)
async def test_failures_in_two_processes_add_up_to_one_trip(
    redis_url: str, redis_prefix: str, raw: Any, name: str
) -> None:
    async with storages(redis_url, redis_prefix) as (store_a, store_b):
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
                await both_open.wait()  # a adopts what b published
            assert a.state is State.OPEN
            with pytest.raises(CircuitOpenError) as rejected:
                await a.call(succeed)
            assert rejected.value.retry_after is not None
            assert 0 < rejected.value.retry_after <= 30.0
        # b's flush counted the third failure: b decided the trip and wrote it; a adopted it
        # (the order of the two callbacks is the pub/sub's, not fixed).
        assert sorted((who, t.won) for who, t in opened) == [("a", False), ("b", True)]
        for _, transition in opened:
            assert transition.breaker == name
            assert (transition.source, transition.target) == (State.CLOSED, State.OPEN)
            assert transition.reason is Reason.CONSECUTIVE_FAILURES
            assert transition.version == 1  # the fleet's version
        assert raw.hget(store_a.keys(name)[0], "status") == "open"
        assert raw.hget(store_a.keys(name)[0], "name") == name
        # Each process counts its own calls; the state is the fleet's.
        stats_a, stats_b = a.stats(), b.stats()
        assert (stats_a.successes, stats_a.failures, stats_a.rejections) == (1, 2, 1)
        assert (stats_b.successes, stats_b.failures, stats_b.rejections) == (0, 1, 0)
        assert (stats_a.state, stats_a.trips) == (State.OPEN, 1)
        assert (stats_b.state, stats_b.trips) == (State.OPEN, 1)
        assert stats_a.storage_errors == stats_b.storage_errors == 0
        assert not stats_a.degraded


@both
async def test_a_success_in_another_process_breaks_the_run_of_failures(
    redis_url: str, redis_prefix: str
) -> None:
    async with storages(redis_url, redis_prefix) as (store_a, store_b):
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
    redis_url: str, redis_prefix: str
) -> None:
    async with storages(redis_url, redis_prefix) as (store_a, store_b):
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
                a.force_close()
                await events["b", State.CLOSED].wait()
                assert b.state is State.CLOSED
                assert await b.call(succeed) == "ok"
                # Leave once a has its answer too: no write is in flight when the runners
                # stop (see test_a_write_whose_answer_was_lost_*).
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
    redis_url: str, redis_prefix: str
) -> None:
    async with storages(redis_url, redis_prefix, count=1) as (storage,):
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
async def test_the_fleet_admits_one_half_open_probe_by_forced_half_open(
    redis_url: str, redis_prefix: str
) -> None:
    async with storages(redis_url, redis_prefix) as (store_a, store_b):
        a = Breaker("svc", storage=store_a, half_open_probes=1)
        b = Breaker("svc", storage=store_b, half_open_probes=1)
        async with running(a, b):
            with anyio.fail_after(LIMIT):
                half_open = proposal(
                    State.HALF_OPEN, 1, reason=Reason.RESET_AFTER_ELAPSED, origin="operator"
                )
                won, _ = await store_a.propose("svc", 0, half_open, force=True)
                assert won
                await a.sync()
                await b.sync()
                assert a.state is State.HALF_OPEN
                assert b.state is State.HALF_OPEN
                await one_probe_through(a, b)


@both
async def test_the_fleet_admits_one_half_open_probe_after_reset_after(
    redis_url: str, redis_prefix: str, clock: Any
) -> None:
    async with storages(redis_url, redis_prefix) as (store_a, store_b):
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
    # The refused probe is a rejection, not a call.
    assert (rejected.stats().rejections, rejected.stats().cancelled) == (1, 0)


# =========================================================================== unavailable Redis


@both
async def test_with_redis_unreachable_a_breaker_decides_locally_and_never_raises_to_callers(
    clock: Any,
) -> None:
    rejections: list[Any] = []
    runner_ran_callback = anyio.Event()

    async def on_reject(rejection: Any) -> None:  # async: only the runner runs it
        rejections.append(rejection)
        runner_ran_callback.set()

    with anyio.fail_after(LIMIT):
        async with RedisStorage(
            f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, flush_interval=0
        ) as storage:
            breaker = Breaker(
                "svc",
                storage=storage,
                consecutive_failures=3,
                reset_after=5,
                clock=clock,
                on_reject=on_reject,
            )
            async with running(breaker):  # the runner starts although Redis is not there
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


@both
async def test_a_breaker_writes_what_it_decided_alone_once_redis_answers_again(
    redis_url: str, redis_prefix: str
) -> None:
    with anyio.fail_after(LIMIT):
        async with proxy("refuse", redis_address(redis_url)) as server:
            opened: list[tuple[str, Transition]] = []
            announced = anyio.Event()
            async with RedisStorage(server.url, prefix=redis_prefix, timeout=1.0) as storage:
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
                    assert breaker.stats().degraded
                    server.mode = "forward"
                    await breaker.sync()
                    await announced.wait()
                    assert not breaker.stats().degraded
                    assert breaker.state is State.OPEN
            async with RedisStorage(redis_url, prefix=redis_prefix) as direct:
                record = await direct.flush("svc", CONSECUTIVE, Batch(1))
        assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
        ((_, transition),) = opened
        assert transition.won
        assert transition.target is State.OPEN


@both
async def test_a_write_whose_answer_was_lost_is_still_announced_won_by_its_writer(
    redis_url: str, redis_prefix: str
) -> None:
    log: list[tuple[str, Transition]] = []
    adopted = anyio.Event()
    with anyio.fail_after(LIMIT):
        async with (
            proxy("forward", redis_address(redis_url)) as server,
            storages(server.url, redis_prefix, count=1, timeout=0.3) as (store_a,),
            storages(redis_url, redis_prefix, count=1) as (store_b,),
        ):
            a = Breaker(
                "svc",
                storage=store_a,
                consecutive_failures=1,
                on_open=recorder(log, "a", anyio.Event(), 99),
            )
            b = Breaker(
                "svc",
                storage=store_b,
                consecutive_failures=1,
                on_open=recorder(log, "b", adopted, 1),
            )
            async with running(a, b):
                await a.sync()  # a's connections are open
                server.mode = "mute"  # from now on a's writes land but a hears nothing back
                with pytest.raises(Boom):
                    await a.call(fail)
                await adopted.wait()  # a's trip was written: b adopted it
                with pytest.raises(StorageError):
                    await a.sync()
                server.mode = "forward"
                await a.sync()
                assert a.state is State.OPEN
        assert sorted((who, t.version, t.won) for who, t in log) == [
            ("a", 1, True),
            ("b", 1, False),
        ]


@both
async def test_a_forced_write_whose_answer_was_lost_is_written_once(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    log: list[tuple[str, Transition]] = []
    adopted = anyio.Event()
    with anyio.fail_after(LIMIT):
        async with (
            proxy("forward", redis_address(redis_url)) as server,
            storages(server.url, redis_prefix, count=1, timeout=0.3) as (store_a,),
            storages(redis_url, redis_prefix, count=1) as (store_b,),
        ):
            a = Breaker("svc", storage=store_a, on_transition=recorder(log, "a", anyio.Event(), 99))
            b = Breaker("svc", storage=store_b, on_transition=recorder(log, "b", adopted, 1))
            async with running(a, b):
                await a.sync()
                server.mode = "mute"
                a.force_open()
                await adopted.wait()
                with pytest.raises(StorageError):
                    await a.sync()
                server.mode = "forward"
                await a.sync()
                await b.sync()  # adopts whatever a wrote since
        assert raw.hget(store_a.keys("svc")[0], "version") == "1"
        assert sorted((who, t.target, t.version, t.won) for who, t in log) == [
            ("a", State.FORCED_OPEN, 1, True),
            ("b", State.FORCED_OPEN, 1, False),
        ]


@both
async def test_a_flush_whose_answer_was_lost_counts_its_outcomes_once(
    redis_url: str, redis_prefix: str
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            proxy("forward", redis_address(redis_url)) as server,
            storages(server.url, redis_prefix, count=1, timeout=0.3) as (store_a,),
            storages(redis_url, redis_prefix, count=1) as (direct,),
        ):
            a = Breaker("svc", storage=store_a, consecutive_failures=100)
            async with running(a):
                await a.sync()  # a's connections are open
                for _ in range(3):
                    with pytest.raises(Boom):
                        await a.call(fail)
                server.mode = "mute"  # the flush reaches Redis, its answer does not come back
                with pytest.raises(StorageError):
                    await a.sync()
                counted = await direct.flush("svc", CONSECUTIVE, Batch(0))
                assert counted.consecutive_failures == 3  # Redis did count the batch
                assert a.stats().unflushed == 3  # sent, not acknowledged
                server.mode = "forward"
                await a.sync()
                stats = a.stats()
                assert (stats.delivered, stats.unflushed, stats.dropped) == (3, 0, 0)
            record = await direct.flush("svc", CONSECUTIVE, Batch(0))
        assert record.consecutive_failures == 3


@both
async def test_every_operation_on_a_server_that_never_answers_fails_within_the_timeout() -> None:
    timeout = 0.3
    with anyio.fail_after(LIMIT):
        async with (
            proxy("blackhole") as server,
            RedisStorage(server.url, timeout=timeout) as storage,
        ):
            operations: list[Callable[[], Awaitable[Any]]] = [
                lambda: storage.flush("svc", CONSECUTIVE, Batch(0, "f")),
                lambda: storage.propose("svc", 0, proposal(State.OPEN, 1)),
                lambda: storage.acquire_probe("svc", 1, 1, 10.0, "t"),
                lambda: storage.delete("svc"),
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


@both
async def test_wait_subscribed_returns_once_subscribed_even_after_a_failed_attempt(
    redis_url: str, redis_prefix: str
) -> None:
    async with proxy("refuse", redis_address(redis_url)) as server:
        storage = RedisStorage(server.url, prefix=redis_prefix, timeout=1.0)
        subscribed, heard = anyio.Event(), anyio.Event()
        storage.watch("svc", lambda record: heard.set())

        async def waiter() -> None:
            await storage.wait_subscribed()
            subscribed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()  # waiting before the storage even opens
            async with storage, storages(redis_url, redis_prefix, count=1) as (direct,):
                with anyio.fail_after(LIMIT):
                    await server.refused.wait()  # the first attempt to subscribe failed
                    server.mode = "forward"
                    # Publish until the storage hears it: then it has subscribed.
                    for version in range(1, 10_000):
                        forced = proposal(State.FORCED_OPEN, version, reason=Reason.FORCED_OPEN)
                        await direct.propose("svc", 0, forced, force=True)
                        with anyio.move_on_after(0.05):
                            await heard.wait()
                        if heard.is_set():
                            break
                for _ in range(100):
                    await anyio.lowlevel.checkpoint()
                assert subscribed.is_set(), "wait_subscribed() still waits after subscribing"
            tg.cancel_scope.cancel()


@both
async def test_a_reopened_storage_is_not_subscribed_until_it_subscribes_again(
    redis_url: str, redis_prefix: str
) -> None:
    async with proxy("forward", redis_address(redis_url)) as server:
        storage = RedisStorage(server.url, prefix=redis_prefix, timeout=0.5)
        async with storage:
            with anyio.fail_after(LIMIT):
                await storage.wait_subscribed()
        server.mode = "blackhole"
        with anyio.fail_after(LIMIT):
            async with storage:
                with anyio.move_on_after(0.5) as waited:
                    await storage.wait_subscribed()
                assert waited.cancelled_caught, "subscribed although no server answers"


@both
async def test_a_name_that_is_not_valid_unicode_is_refused_for_a_shared_breaker(
    redis_url: str, redis_prefix: str
) -> None:
    name = "bad \ud800 name"  # a lone surrogate: no UTF-8 encoding exists
    async with storages(redis_url, redis_prefix, count=1) as (storage,):
        with anyio.fail_after(LIMIT):
            with suppress(StorageError):  # the only error an operation may raise
                await storage.flush(name, CONSECUTIVE, Batch(0, "f"))
            with pytest.raises(ConfigError, match="name"):
                Breaker(name, storage=storage, consecutive_failures=1)
    Breaker(name, consecutive_failures=1)  # memory storage takes any string


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_callers_client_with_no_socket_timeout_is_bounded_by_the_storage_timeout() -> None:
    import redis.asyncio

    timeout = 0.3
    with anyio.fail_after(LIMIT):
        async with proxy("blackhole") as server:
            client = redis.asyncio.Redis.from_url(server.url)  # no socket timeouts at all
            try:
                async with RedisStorage(client=client, timeout=timeout) as storage:
                    started = anyio.current_time()
                    with pytest.raises(StorageError, match="no answer within"):
                        await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
                    assert anyio.current_time() - started <= timeout + 1.0
            finally:
                await client.aclose()


# =========================================================================== threads


@both
async def test_under_trio_the_storage_runs_its_client_in_one_thread_of_its_own(
    anyio_backend: str, redis_url: str, redis_prefix: str
) -> None:
    # Thread pools (anyio's, trio's, asyncio's default executor) start and retire idle
    # threads on their own schedule: they are not the storage's.
    pools = ("AnyIO worker thread", "Trio thread", "asyncio_", "ThreadPoolExecutor")

    def started_since(before: set[threading.Thread]) -> list[str]:
        new = set(threading.enumerate()) - before
        return sorted(t.name for t in new if not t.name.startswith(pools))

    before = set(threading.enumerate())
    with anyio.fail_after(LIMIT):
        async with RedisStorage(redis_url, prefix=redis_prefix) as storage:
            await storage.wait_subscribed()
            await storage.flush("svc", CONSECUTIVE, Batch(0, "f"))
            expected = ["breaker-machines-redis"] if anyio_backend == "trio" else []
            assert started_since(before) == expected
            bridges = [t for t in threading.enumerate() if t.name == "breaker-machines-redis"]
            assert len(bridges) == len(expected)
            assert all(not t.daemon for t in bridges)
    assert started_since(before) == []
    assert not any(t.is_alive() for t in bridges)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_given_by_the_caller_is_used_and_left_open(
    redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with RedisStorage(client=client, prefix=redis_prefix) as storage:
            record = await storage.flush("svc", CONSECUTIVE, Batch(0, "ff"))
            assert record.consecutive_failures == 2
        assert await client.ping()
        assert await client.exists(storage.keys("svc")[0]) == 1
    finally:
        await client.aclose()
