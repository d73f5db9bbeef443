"""Validation wherever a user hands the library something.

Every bad value raises a :class:`ConfigError` whose ``field`` names the option and whose
message starts with ``field=value``; never an assert, a TypeError from deep inside, or an
error at the first call. Passwords never show, in an error or a repr. And any string is a
valid breaker name: hostile names trip, are read back by another storage instance and
never collide, on the real Redis and PostgreSQL servers too.

Tables are parametrised by ``(options, field)``. A value that must be made per test (a
coroutine object: it would warn if never awaited) is given as :class:`Fresh`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread
import pytest

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    CircuitOpenError,
    ConfigError,
    MemoryStorage,
    Policy,
    State,
    ThreadedBreaker,
    running,
)
from breaker_machines.__main__ import main
from breaker_machines.storage import Batch, PostgresStorage, RedisStorage, SharedStorage

LIMIT = 20
REDIS = "redis://127.0.0.1:6379/0"
DSN = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "s3cr3t-pw"


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


async def succeed() -> str:
    return "ok"


async def async_fn(value: object = None) -> None:
    pass


async def async_gen(value: object = None) -> Any:
    yield value


def sync_gen(value: object = None) -> Any:
    yield value


class AsyncCallable:
    async def __call__(self, value: object = None) -> None:
        pass


class Fresh:
    """A value made anew for each test (and cleaned up after it)."""

    def __init__(self, label: str, make: Callable[[], Any]) -> None:
        self.label = label
        self.make = make

    def __repr__(self) -> str:
        return self.label


COROUTINE = Fresh("<coroutine object>", async_fn)


@contextmanager
def realized(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``options`` with every :class:`Fresh` value made; coroutines closed afterwards."""
    made = {
        key: value.make() if isinstance(value, Fresh) else value for key, value in options.items()
    }
    try:
        yield made
    finally:
        for value in made.values():
            for item in value if isinstance(value, list) else [value]:
                if inspect.iscoroutine(item):
                    item.close()


def check(caught: pytest.ExceptionInfo[ConfigError], field: str) -> None:
    """The house rule: the error names the field, in ``.field`` and first in the message."""
    error = caught.value
    assert type(error) is ConfigError
    assert error.field == field, str(error)
    assert str(error).startswith(f"{field}="), str(error)
    assert error.reason


def ids(case: Any) -> str:
    text = repr(case)
    return text if len(text) <= 60 else text[:57] + "..."


# =========================================================================== Policy

NOT_COUNTS: list[Any] = [0, -1, True, False, 1.5, 2.0, "3", b"3", math.nan, math.inf]
NOT_COUNTS += [2**31, 10**400, Decimal(3)]
NOT_DURATIONS: list[Any] = [0, 0.0, -0.0, -1, -1e-300, math.nan, math.inf, -math.inf]
NOT_DURATIONS += [True, False, "1", b"1", 10**400, 1j, Decimal("1.5")]
NOT_RATES: list[Any] = [0, 0.0, -0.1, 1.0000001, 2, math.nan, math.inf, True, "0.5"]
NOT_RATES += [10**400, Decimal("0.5")]

RATE = {"failure_rate": 0.5}

POLICY_CASES: list[tuple[dict[str, Any], str]] = [
    *[({"consecutive_failures": v}, "consecutive_failures") for v in NOT_COUNTS],
    *[({"failures": v, "within": 10.0}, "failures") for v in NOT_COUNTS],
    *[({"failures": 3, "within": v}, "within") for v in NOT_DURATIONS],
    ({"failures": 3}, "within"),
    ({"within": 10.0}, "failures"),
    ({"failures": 3, "within": 5e-6}, "within"),  # ten buckets of half a microsecond
    *[({"failure_rate": v}, "failure_rate") for v in NOT_RATES],
    *[({"slow_call_rate": v, "slow_call_duration": 1.0}, "slow_call_rate") for v in NOT_RATES],
    *[
        ({"slow_call_rate": 0.5, "slow_call_duration": v}, "slow_call_duration")
        for v in NOT_DURATIONS
    ],
    ({"slow_call_rate": 0.5}, "slow_call_duration"),
    ({"slow_call_duration": 1.0}, "slow_call_rate"),
    *[({**RATE, "minimum_calls": v}, "minimum_calls") for v in [*NOT_COUNTS, None]],
    ({**RATE, "window_calls": 10, "minimum_calls": 11}, "minimum_calls"),
    *[({**RATE, "window": v}, "window") for v in NOT_DURATIONS],
    ({"window": 10.0}, "window"),
    ({**RATE, "window": 5e-6}, "window"),
    *[({**RATE, "window_calls": v}, "window_calls") for v in NOT_COUNTS],
    ({"window_calls": 100}, "window_calls"),
    ({**RATE, "window": 10.0, "window_calls": 100}, "window_calls"),
    ({**RATE, "window_calls": 1_000_000_007}, "window_calls"),  # a prime: no bucket size
    *[({"buckets": v}, "buckets") for v in NOT_COUNTS],
    ({**RATE, "buckets": 1001}, "buckets"),
    ({**RATE, "window_calls": 100, "buckets": 7}, "buckets"),
    *[({"reset_after": v}, "reset_after") for v in NOT_DURATIONS],
    ({"reset_after": 1.5e308, "jitter": 0.5}, "reset_after"),  # the open time would be inf
    *[
        ({"backoff": v, "max_reset_after": 60.0}, "backoff")
        for v in [0.5, 0, -2.0, math.nan, math.inf, True, "2", None, 10**400]
    ],
    ({"backoff": 2.0}, "max_reset_after"),
    *[({"backoff": 2.0, "max_reset_after": v}, "max_reset_after") for v in NOT_DURATIONS],
    ({"reset_after": 30.0, "max_reset_after": 29.9}, "max_reset_after"),
    ({"backoff": 2.0, "max_reset_after": 1e308, "jitter": 0.9}, "max_reset_after"),
    *[
        ({"jitter": v}, "jitter")
        for v in [-0.1, 1.0, 1.5, math.nan, math.inf, True, "0.1", None, 10**400]
    ],
    *[({"half_open_probes": v}, "half_open_probes") for v in [*NOT_COUNTS, None]],
    *[({"success_threshold": v}, "success_threshold") for v in [*NOT_COUNTS, None]],
    *[({"probe_lease": v}, "probe_lease") for v in [*NOT_DURATIONS, None]],
]


@pytest.mark.parametrize(("options", "field"), POLICY_CASES, ids=ids)
def test_a_bad_policy_raises_a_config_error_naming_the_field(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Policy(**options)
    check(caught, field)


@pytest.mark.parametrize(("options", "field"), POLICY_CASES, ids=ids)
def test_the_same_bad_policy_options_given_to_a_breaker_name_the_same_field(
    options: dict[str, Any], field: str
) -> None:
    if "probe_lease" in options and options["probe_lease"] is None:
        # Not bad for a breaker: it derives the lease (twice its timeout, else 60 s).
        for runtime in (Breaker, ThreadedBreaker):
            assert runtime("svc", **options).policy.probe_lease == 60.0
        assert Breaker("svc", **options, timeout=2.0).policy.probe_lease == 4.0
        return
    for runtime in (Breaker, ThreadedBreaker):
        with pytest.raises(ConfigError) as caught:
            runtime("svc", **options)
        check(caught, field)


def test_every_policy_field_is_in_the_table() -> None:
    fields = set(inspect.signature(Policy).parameters)
    assert fields == {field for _, field in POLICY_CASES}


def test_the_limits_of_a_policy_are_accepted() -> None:
    most = 2**31 - 1
    Policy(
        consecutive_failures=most,
        failures=most,
        within=1e-5,  # ten buckets of a microsecond
        minimum_calls=most,
        failure_rate=1.0,
        slow_call_rate=5e-324,
        slow_call_duration=5e-324,
        window=1e-5,
        half_open_probes=most,
        success_threshold=most,
        probe_lease=1e308,
        reset_after=1e300,
        jitter=0.999,
    )
    Policy(failure_rate=0.5, window_calls=1000, buckets=1000, minimum_calls=1000)
    Policy(reset_after=1, backoff=10**6, max_reset_after=10**300)  # ints are numbers too


# =========================================================================== Breaker options

BOTH = (Breaker, ThreadedBreaker)
ASYNC_ONLY = (Breaker,)
THREADED_ONLY = (ThreadedBreaker,)


class Case:
    def __init__(
        self, options: dict[str, Any], field: str, runtimes: tuple[type, ...] = BOTH
    ) -> None:
        self.options = options
        self.field = field
        self.runtimes = runtimes

    def __repr__(self) -> str:
        names = "".join("A" if r is Breaker else "T" for r in self.runtimes)
        return f"{names}:{self.options!r}"


CALLBACKS = [p for p in inspect.signature(Breaker).parameters if p.startswith("on_")]

BAD_CALLBACKS: list[Any] = [3, "print", b"x", lambda a, b: None, COROUTINE, sync_gen, async_gen]
BAD_CALLBACKS += [[print, 3], {print}, (print, None)]

NOT_FUNCTIONS: list[Any] = [1, "f", b"f", COROUTINE, sync_gen, async_gen]

BREAKER_CASES: list[Case] = [
    *[Case({"name": v}, "name") for v in [b"svc", None, 1, ["svc"], ("svc",)]],
    *[Case({"timeout": v}, "timeout", ASYNC_ONLY) for v in NOT_DURATIONS],
    *[Case({"timeout": v}, "timeout", THREADED_ONLY) for v in [1, 0.5, 10**400, "1"]],
    *[Case({"max_concurrent": v}, "max_concurrent") for v in [0, -1, True, 1.5, "2", math.nan]],
    *[
        Case({"max_concurrent": 2, "bulkhead_wait": v}, "bulkhead_wait")
        for v in [-1, -1e-9, math.nan, math.inf, True, "1", 10**400, None]
    ],
    Case({"bulkhead_wait": 1.0}, "bulkhead_wait"),  # no bulkhead to wait for
    *[
        Case({"ignored_counts_as_success": v}, "ignored_counts_as_success")
        for v in ["no", 1, 0, None, []]
    ],
    *[Case({"policy": v}, "policy") for v in [{}, "strict", Policy, 5]],
    *[
        Case({"policy": Policy(), option: value}, option)
        for option, value in [
            ("failures", 3),
            ("within", 10.0),
            ("consecutive_failures", 3),
            ("failure_rate", 0.5),
            ("window_calls", 10),
            ("probe_lease", 5.0),
            ("reset_after", 5.0),
            ("reset_after", 30),  # 30 (an int) is not the default 30.0: given, not ignored
            ("backoff", 2.0),
            ("jitter", 0.1),
            ("minimum_calls", 5),
            ("half_open_probes", 2),
            ("half_open_probes", True),
            ("success_threshold", 3),
        ]
    ],
    *[Case({"storage": v}, "storage") for v in [object(), MemoryStorage, "memory", {}]],
    *[Case({"clock": v}, "clock") for v in NOT_FUNCTIONS],
    Case({"clock": lambda now: now}, "clock"),
    Case({"clock": async_fn}, "clock"),
    *[Case({"random": v}, "random") for v in NOT_FUNCTIONS],
    Case({"random": lambda seed: 0.5}, "random"),
    Case({"random": AsyncCallable()}, "random"),
    *[Case({"failure_if": v}, "failure_if") for v in [*NOT_FUNCTIONS, True]],
    Case({"failure_if": lambda: True}, "failure_if"),
    Case({"failure_if": lambda a, b: True}, "failure_if"),
    Case({"failure_if": async_fn}, "failure_if"),
    *[
        Case({rule: v}, rule)
        for rule in ("record", "ignore")
        for v in [
            3,
            "ValueError",
            int,  # a class, callable, but not an exception class
            str,
            ValueError(),  # an instance, not the class
            [ValueError, 3],
            {ValueError, "x"},
            [[ValueError]],
            lambda: True,
            lambda a, b: True,
            async_fn,
            COROUTINE,
            sync_gen,
        ]
    ],
    *[Case({"record": v}, "record") for v in [KeyboardInterrupt, SystemExit, GeneratorExit]],
    Case({"record": asyncio.CancelledError}, "record"),
    *[Case({"fallback": v}, "fallback") for v in [[], lambda: 1, lambda a, b: 1, COROUTINE]],
    *[Case({"fallback": v}, "fallback") for v in [sync_gen, async_gen, ["ok", lambda: 1]]],
    Case({"fallback": async_fn}, "fallback", THREADED_ONLY),
    Case({"fallback": [lambda error: "x", AsyncCallable()]}, "fallback", THREADED_ONLY),
    *[Case({callback: v}, callback) for callback in CALLBACKS for v in BAD_CALLBACKS],
    *[
        Case({callback: v}, callback, THREADED_ONLY)
        for callback in CALLBACKS
        for v in [async_fn, AsyncCallable(), functools.partial(async_fn), [print, async_fn]]
    ],
    *[Case({"event_log": v}, "event_log") for v in [-1, True, 1.5, "50", None, math.nan]],
]
if "degraded_mode" in inspect.signature(Breaker).parameters:
    BREAKER_CASES += [Case({"degraded_mode": v}, "degraded_mode") for v in ["nope", None, 1]]


@pytest.mark.parametrize("case", BREAKER_CASES, ids=ids)
def test_a_bad_breaker_option_raises_a_config_error_naming_it(case: Case) -> None:
    options = dict(case.options)
    name = options.pop("name", "svc")
    for runtime in case.runtimes:
        with realized(options) as made, pytest.raises(ConfigError) as caught:
            runtime(name, **made)
        check(caught, case.field)


def test_every_breaker_keyword_is_in_a_table() -> None:
    keywords = set(inspect.signature(Breaker).parameters)
    covered = {case.field for case in BREAKER_CASES} | {field for _, field in POLICY_CASES}
    assert keywords - covered == set()


def test_a_policy_given_with_the_defaults_of_its_fields_beside_it_is_accepted() -> None:
    policy = Policy(consecutive_failures=2, reset_after=5.0)
    breaker = Breaker("svc", policy=policy, reset_after=30.0, half_open_probes=1, jitter=0.0)
    assert breaker.policy is policy


def test_options_at_their_limits_and_of_every_accepted_kind_are_accepted() -> None:
    class OnEvent:
        def __call__(self, event: object) -> None:
            pass

    for runtime in BOTH:
        runtime(
            "svc",
            record=[ValueError, lambda error: isinstance(error, KeyError), BaseException],
            ignore=frozenset({KeyboardInterrupt, asyncio.CancelledError}),  # never failures
            failure_if=lambda result: result is None,
            fallback=["a value", lambda error: "an answer", functools.partial(str)],
            clock=time.monotonic,  # a builtin: no signature to check, accepted
            random=__import__("random").random,
            on_open=print,
            on_close=OnEvent(),
            on_half_open=[lambda: None, lambda event: None],
            on_reject=(),
            on_transition=None,
            ignored_counts_as_success=True,
            max_concurrent=10**100,
            bulkhead_wait=0,
        )
    Breaker("svc", on_open=AsyncCallable(), fallback=[async_fn], timeout=1e-9)
    Breaker("svc", on_open=functools.partial(async_fn), max_concurrent=1, bulkhead_wait=1e9)


def test_the_decorators_refuse_what_they_cannot_guard() -> None:
    breaker = Breaker("svc")
    threaded = ThreadedBreaker("svc")
    for decorator in (breaker, threaded):
        for value in [3, "f", sync_gen, async_gen]:
            with pytest.raises(ConfigError) as caught:
                decorator(value)
            check(caught, "fn")
        coroutine = async_fn()
        try:
            with pytest.raises(ConfigError) as caught:
                decorator(coroutine)  # type: ignore[arg-type]
            check(caught, "fn")
            assert "coroutine" in caught.value.reason
        finally:
            coroutine.close()
    for value in [async_fn, AsyncCallable()]:
        with pytest.raises(ConfigError) as caught:
            threaded(value)
        check(caught, "fn")


@pytest.mark.anyio
@pytest.mark.parametrize("value", [ThreadedBreaker("svc"), "svc", None], ids=ids)
async def test_running_refuses_what_has_no_runner(value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        async with running(Breaker("ok"), value):
            pass
    check(caught, "breakers")


# =========================================================================== registry


@pytest.mark.parametrize(
    ("options", "field"),
    [
        *[({"prefix": v}, "prefix") for v in [1, None, b"p", ["p"]]],
        *[({"max_size": v}, "max_size") for v in [0, -1, True, 1.5, "3", None, math.nan]],
        *[
            ({"idle_after": v}, "idle_after")
            for v in [0, -1, math.nan, math.inf, True, "1", 10**400]
        ],
        *[({"clock": v}, "clock") for v in [5, "time", lambda now: now]],
        ({"name": "x"}, "name"),
        ({"reset_afterr": 5}, "reset_afterr"),
        ({"failure_rate": 3}, "failure_rate"),
        ({"on_open": 3}, "on_open"),
        ({"storage": "memory"}, "storage"),
    ],
    ids=ids,
)
def test_a_bad_registry_option_raises_a_config_error_naming_it(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        BreakerRegistry(**options)
    check(caught, field)


@pytest.mark.parametrize("key", [1, None, b"k", ("k",)], ids=ids)
def test_a_registry_key_must_be_a_string(key: Any) -> None:
    registry = BreakerRegistry("p:")
    with pytest.raises(ConfigError) as caught:
        registry.get(key)
    check(caught, "key")
    assert len(registry) == 0


# =========================================================================== testing


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"backend": "curio"}, "backend"),
        ({"backend": None}, "backend"),
        ({"storage_factory": 3}, "storage_factory"),
        ({"storage_factory": MemoryStorage()}, "storage_factory"),
        *[({"peers": v}, "peers") for v in [0, -1, True, "2", 1.5]],
        *[({o: None}, o) for o in ("clock", "storage", "record", "ignore", "name")],
        ({"reset_aftr": 1}, "reset_aftr"),
        ({"reset_after": -1}, "reset_after"),
        ({"on_open": 3}, "on_open"),
    ],
    ids=ids,
)
def test_a_bad_breaker_machine_option_raises_a_config_error_at_once(
    options: dict[str, Any], field: str
) -> None:
    pytest.importorskip("hypothesis")
    from breaker_machines.testing import breaker_machine

    with pytest.raises(ConfigError) as caught:
        breaker_machine(**options)
    check(caught, field)


# =========================================================================== the ddl command


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        *[
            (["--schema", v], "--schema")
            for v in ["x;y", 'a"b', "a b", "", "1abc", "é", "pg_x", "a" * 41, "a\nb", "*"]
        ],
        *[(["--table", v], "--table") for v in ["x;y", "t'", "a-b", "", "a" * 41, "{}"]],
        (["--schema", "s" * 31, "--table", "t" * 32], "--table"),  # too long together
    ],
    ids=ids,
)
def test_the_ddl_command_refuses_a_schema_or_table_the_storage_would_refuse(
    arguments: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ddl", *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert flag in error
    assert flag.lstrip("-") + "=" in error


# =========================================================================== RedisStorage

REDIS_URL_CASES: list[Any] = [
    None,
    b"redis://127.0.0.1/0",
    7,
    "",
    "127.0.0.1:6379",
    "http://127.0.0.1/0",
    "postgresql://127.0.0.1/0",
    "redis://",
    "redis:///0",
    "redis://:6379/0",
    "redis://127.0.0.1:0/0",
    "redis://127.0.0.1:65536/0",
    "redis://127.0.0.1:port/0",
    "redis://127.0.0.1:-1/0",
    "redis://127.0.0.1:6379:6380/0",
    "redis://[::1/0",
    "redis://127.0.0.1/abc",
    "redis://127.0.0.1/0/1",
    "redis://127.0.0.1/0?socket_timeout=soon",
    "redis://127.0.0.1/0?db=x",
    "redis://127.0.0.1/0?no_such_option=1",
    "redis://127.0.0.1/0?protocol=9",
    "rediss://127.0.0.1/0?ssl_cert_reqs=bogus",
    "redis://127.0.0.1 /0",
    "redis://127.0.0.1/0\n",
    "redis://127.0.0.1/0\x00",
    "redis://127.0.0.1/\ud800",
    "unix://",
    "unix://relative/redis.sock",
    "unix:///",
]


@pytest.mark.parametrize("url", REDIS_URL_CASES, ids=ids)
def test_a_bad_redis_url_raises_a_config_error(url: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisStorage(url)
    check(caught, "url")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        *[({"prefix": v}, "prefix") for v in ["", None, 7, b"p", "{", "}", "a{b}", "a\nb"]],
        *[({"prefix": v}, "prefix") for v in ["a\x00b", "p" * 201, "\ud800", "tab\t"]],
        *[({"ttl": v}, "ttl") for v in [0, -1, math.nan, math.inf, True, "1", None, 10**400, 1e13]],
        *[
            ({field: v}, field)
            for field in ("timeout", "refresh_interval")
            for v in [0, -1, math.nan, math.inf, True, "1", None]
        ],
        *[
            pytest.param({field: 10**400}, field)
            for field in ("flush_interval", "timeout", "refresh_interval")
        ],
        *[({"flush_interval": v}, "flush_interval") for v in [-1, math.nan, math.inf, True, "0"]],
        *[({"flush_size": v}, "flush_size") for v in [0, -1, True, 1.5, "10", None]],
        *[({"max_connections": v}, "max_connections") for v in [1, 0, True, 2.5, "16", None]],
        ({"client": object()}, "client"),
        ({"client": "redis://127.0.0.1"}, "client"),
    ],
    ids=ids,
)
def test_a_bad_redis_option_raises_a_config_error_naming_it(
    options: dict[str, Any], field: str
) -> None:
    url = None if "client" in options else REDIS
    with pytest.raises(ConfigError) as caught:
        RedisStorage(url, **options)
    check(caught, field)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1",
        "redis://127.0.0.1/",
        "redis://user:pw@127.0.0.1:6379/15",
        "rediss://cache.example.com:6380/0?ssl_cert_reqs=none",
        "redis://[::1]:6379/0",
        "redis://ünïcødé.example/0",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=2",
        "unix://user@/run/redis.sock",
        "redis://127.0.0.1/0?socket_keepalive=true&health_check_interval=5",
    ],
)
def test_good_redis_urls_are_accepted(url: str) -> None:
    RedisStorage(url)


# =========================================================================== PostgresStorage

PG_DSN_CASES: list[Any] = [
    None,
    b"postgresql://127.0.0.1/db",
    {"host": "127.0.0.1"},
    "",
    "host=127.0.0.1 dbname=test",
    "mysql://127.0.0.1/db",
    "redis://127.0.0.1/0",
    "postgresql://127.0.0.1:0/db",
    "postgresql://127.0.0.1:65536/db",
    "postgresql://127.0.0.1:port/db",
    "postgresql://127.0.0.1:5432:5433/db",
    "postgresql://h1:5432,h2:x/db",
    "postgresql://[::1/db",
    "postgresql://127.0.0.1/db?sslmode=bogus",
    "postgresql://127.0.0.1/db ",
    "postgresql://127.0.0.1/d\nb",
    "postgresql://127.0.0.1/\ud800",
]


@pytest.mark.parametrize("dsn", PG_DSN_CASES, ids=ids)
def test_a_bad_dsn_raises_a_config_error(dsn: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStorage(dsn)
    check(caught, "dsn")


BAD_IDENTIFIERS: list[Any] = ["", "1abc", 'a"b', "a;b", "a b", "a-b", "é", "a" * 41, "a\x00"]
BAD_IDENTIFIERS += ["a\nb", "x' OR 1=1", "{}", "*", None, 1, b"x", ["x"]]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        *[({"schema": v}, "schema") for v in [*BAD_IDENTIFIERS, "pg_catalog", "pg_x"]],
        *[({"table": v}, "table") for v in BAD_IDENTIFIERS],
        ({"schema": "s" * 40, "table": "t" * 23}, "table"),
        *[({"create": v}, "create") for v in [1, 0, "yes", "", None, 1.0]],
        *[
            ({field: v}, field)
            for field in ("ttl", "sweep_interval")
            for v in [0, -1, math.nan, math.inf, True, "1", None, 10**400, 1e13]
        ],
        *[
            ({field: v}, field)
            for field in ("timeout", "refresh_interval")
            for v in [0, -1, math.nan, math.inf, True, "1", None]
        ],
        *[
            pytest.param({field: 10**400}, field)
            for field in ("flush_interval", "timeout", "refresh_interval")
        ],
        *[({"flush_interval": v}, "flush_interval") for v in [-1, math.nan, math.inf, True, "0"]],
        *[({"flush_size": v}, "flush_size") for v in [0, -1, True, 1.5, "10", None]],
        *[({"max_connections": v}, "max_connections") for v in [1, 0, True, 2.5, "16", None]],
        ({"pool": object()}, "pool"),
        ({"pool": DSN}, "pool"),
    ],
    ids=ids,
)
def test_a_bad_postgres_option_raises_a_config_error_naming_it(
    options: dict[str, Any], field: str
) -> None:
    dsn = None if "pool" in options else DSN
    with pytest.raises(ConfigError) as caught:
        PostgresStorage(dsn, **options)
    check(caught, field)


@pytest.mark.parametrize(
    "dsn",
    [
        DSN,
        "postgres://127.0.0.1/test",
        "postgresql:///test",  # the default host (a local socket)
        "postgresql://user:pw@db.example.com:6543/app?sslmode=verify-full",
        "postgresql://h1:5432,h2:5433,[::1]:5434/app?target_session_attrs=read-write",
        "postgresql://[::1]:5432/db",
    ],
)
def test_good_dsns_are_accepted(dsn: str) -> None:
    PostgresStorage(dsn)


# =========================================================================== passwords

SECRET_URLS: list[tuple[Callable[..., Any], Any]] = [
    (RedisStorage, f"http://user:{SECRET}@cache/0"),
    (RedisStorage, f"redis://user:{SECRET}@cache:99999/0"),
    (RedisStorage, f"redis://user:{SECRET}@cache:0/0"),
    (RedisStorage, f"redis://user:{SECRET}/0"),  # no host: the password parses as a port
    (RedisStorage, f"redis://:{SECRET}@[::1/0"),
    (RedisStorage, f"redis://user:{SECRET}@cache/abc"),
    (RedisStorage, f"redis://user:{SECRET}@cache/0?socket_timeout=x"),
    (RedisStorage, f"redis://user:{SECRET}@cache/0?no_such_option=1"),
    (RedisStorage, f"redis://cache/0?password={SECRET}&socket_timeout=x"),
    (RedisStorage, f"redis://user:{SECRET}@ca che/0"),
    (RedisStorage, f"redis://user:{SECRET}@cache/0\n"),
    (RedisStorage, f"unix://user:{SECRET}@/run/redis.sock?x=1"),
    (RedisStorage, f"unix://:{SECRET}@host/redis.sock"),
    (RedisStorage, f"redis://user:{SECRET}@".encode()),
    (RedisStorage, {"password": SECRET}),
    (PostgresStorage, f"mysql://user:{SECRET}@db/app"),
    (PostgresStorage, f"postgresql://user:{SECRET}@db:5432:5433/app"),
    (PostgresStorage, f"postgresql://user:{SECRET}@h1:5432,h2:x/app"),
    (PostgresStorage, f"postgresql://user:{SECRET}@db/app?sslmode=bogus"),
    (PostgresStorage, f"postgresql://db/app?sslpassword={SECRET}&sslmode=bogus"),
    (PostgresStorage, f"mysql://db/app?password={SECRET}"),
    (PostgresStorage, f"host=db password={SECRET} dbname=app"),
    (PostgresStorage, f"host=db password='{SECRET} x' dbname=app"),
    (PostgresStorage, f"postgresql://user:{SECRET}@db/a pp"),
    (PostgresStorage, [f"postgresql://user:{SECRET}@db/app"]),
]


def assert_hidden(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, text
        assert "s3cr3t" not in text, text


@pytest.mark.parametrize(("storage", "url"), SECRET_URLS, ids=ids)
def test_a_config_error_about_a_url_never_shows_its_password(
    storage: Callable[..., Any], url: Any
) -> None:
    field = "url" if storage is RedisStorage else "dsn"
    with pytest.raises(ConfigError) as caught:
        storage(url)
    check(caught, field)
    error = caught.value
    assert_hidden(str(error), repr(error), repr(error.value), repr(error.args))


@pytest.mark.parametrize(
    ("storage", "url"),
    [
        (RedisStorage, f"redis://user:{SECRET}@cache/0"),
        (RedisStorage, f"redis://cache/0?password={SECRET}"),
        (PostgresStorage, f"postgresql://user:{SECRET}@db/app"),
        (PostgresStorage, f"postgresql://db/app?sslpassword={SECRET}"),
        (PostgresStorage, f"postgresql://db/app?password={SECRET}&sslmode=require"),
    ],
    ids=ids,
)
def test_neither_the_repr_nor_errors_about_a_storage_show_its_password(
    storage: Callable[..., Any], url: str
) -> None:
    shared = storage(url)
    assert_hidden(repr(shared))
    with pytest.raises(ConfigError) as caught:
        ThreadedBreaker("svc", storage=shared)  # shared storage needs the anyio Breaker
    assert_hidden(str(caught.value), repr(caught.value))
    with pytest.raises(ConfigError) as caught:
        storage(url, **({"client": object()} if storage is RedisStorage else {"pool": object()}))
    assert_hidden(str(caught.value), repr(caught.value))


# =========================================================================== hostile names

HOSTILE = [
    "a}b{c",
    "x' OR 1=1; DROP TABLE t; --",
    "]]..--[[",
    "name\nwith\r\nnewlines",
    "*",
    "ünï©ødé 🚀",
    "%41",
    "",
    "{}",
    "$1 %s \\ \" ' `",
    "KEYS * ; FLUSHALL",
    "'); SELECT pg_sleep(10); --",
    "tab\there",
    "~",
    "{}'\"%*é" * 237 + "abcd",  # 1,900 bytes (the storages take up to 2,000)
    "n" * 1900,
]
#: Neighbours of the hostile names that are never tripped: a collision would open them.
BYSTANDERS = ["A", "a", "a}b", "x", "%2541", "~~", "n" * 1899, "ünï©ødé", "\n"]


def test_any_string_is_a_valid_name_and_names_are_distinct_circuits_in_memory() -> None:
    storage = MemoryStorage()
    for runtime in BOTH:
        for name in HOSTILE:
            breaker = runtime(name, storage=storage, consecutive_failures=1)
            breaker.force_open()
            assert breaker.name == name
            assert runtime(name, storage=storage).state is State.FORCED_OPEN
        for name in BYSTANDERS:
            assert runtime(name, storage=storage).state is State.CLOSED
        for name in HOSTILE:
            runtime(name, storage=storage).reset()


@asynccontextmanager
async def opened(*storages: SharedStorage) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for storage in storages:
            await stack.enter_async_context(storage)
        for storage in storages:
            with anyio.fail_after(LIMIT):
                await storage.wait_subscribed()  # type: ignore[attr-defined]
        yield


async def trip_and_read_back(make: Callable[[], SharedStorage]) -> dict[str, Any]:
    """Trip every hostile name in one "process", check that another one adopts it and a
    third reads it back, and that no bystander was touched; returns the third's records."""
    policy = Policy(consecutive_failures=1, reset_after=3600.0)
    names = HOSTILE + BYSTANDERS
    writer, reader, third = make(), make(), make()
    async with opened(writer, reader):
        mine = {name: Breaker(name, storage=writer, policy=policy) for name in names}
        theirs = {name: Breaker(name, storage=reader, policy=policy) for name in names}
        async with running(*mine.values(), *theirs.values()):
            with anyio.fail_after(LIMIT):
                for name in HOSTILE:
                    with pytest.raises(Boom):
                        await mine[name].call(fail)
                    assert mine[name].state is State.OPEN, name
                for breaker in mine.values():
                    await breaker.sync()
                for breaker in theirs.values():
                    await breaker.sync()
                for name in HOSTILE:
                    assert theirs[name].state is State.OPEN, name
                    with pytest.raises(CircuitOpenError) as rejected:
                        await theirs[name].call(succeed)
                    assert rejected.value.name == name
                for name in BYSTANDERS:
                    assert theirs[name].state is State.CLOSED, name
                    assert mine[name].state is State.CLOSED, name
                    assert await theirs[name].call(succeed) == "ok"
                for breaker in theirs.values():
                    await breaker.sync()
    records: dict[str, Any] = {}
    async with third:
        with anyio.fail_after(LIMIT):
            for name in names:
                records[name] = await third.flush(name, policy, Batch(0))
    for name in HOSTILE:
        assert records[name].status is State.OPEN, name
        assert records[name].version == 1, name
        assert records[name].trips == 1, name
    for name in BYSTANDERS:
        assert records[name].status is State.CLOSED, name
        assert records[name].version == 0, name
        assert records[name].consecutive_failures == 0, name
    return records


@pytest.mark.anyio
async def test_hostile_names_trip_and_are_read_back_on_redis(
    redis_url: str, redis_prefix: str
) -> None:
    def make() -> RedisStorage:
        return RedisStorage(
            redis_url,
            prefix=redis_prefix,
            flush_interval=3600.0,
            refresh_interval=3600.0,
            timeout=5.0,
            # 25 breakers start at once: redis-py's asyncio pool raises MaxConnectionsError
            # rather than wait when its connections are all in use.
            max_connections=64,
        )

    await trip_and_read_back(make)

    def stored_names() -> dict[str, bytes | None]:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            storage = make()
            return {
                name: client.hget(storage.keys(name)[0], "name")  # type: ignore[misc]
                for name in HOSTILE
            }
        finally:
            client.close()

    stored = await anyio.to_thread.run_sync(stored_names)
    assert stored == {name: name.encode() for name in HOSTILE}


@pytest.mark.anyio
async def test_hostile_names_trip_and_are_read_back_on_postgres(
    postgres_dsn: str, postgres_schema: str
) -> None:
    def make() -> PostgresStorage:
        return PostgresStorage(
            postgres_dsn,
            schema=postgres_schema,
            flush_interval=3600.0,
            refresh_interval=3600.0,
            timeout=5.0,
        )

    await trip_and_read_back(make)

    async def rows() -> tuple[list[str], int]:
        import asyncpg

        connection = await asyncpg.connect(postgres_dsn)
        try:
            names = await connection.fetch(
                f'SELECT name FROM "{postgres_schema}".breakers WHERE status = $1', "open"
            )
            tables = await connection.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                postgres_schema,
            )
            return [row["name"] for row in names], tables
        finally:
            await connection.close()

    names, tables = await anyio.to_thread.run_sync(asyncio.run, rows())
    assert sorted(names) == sorted(HOSTILE)
    assert tables == 4  # nothing dropped, nothing made


@pytest.mark.parametrize(
    ("name", "storage"),
    [
        ("lone \ud800 surrogate", RedisStorage(REDIS)),
        ("lone \udfff surrogate", PostgresStorage(DSN)),
        ("nul\x00inside", PostgresStorage(DSN)),
        ("x" * 2001, PostgresStorage(DSN)),
        ("é" * 1001, PostgresStorage(DSN)),
    ],
    ids=ids,
)
def test_a_name_a_shared_storage_cannot_hold_is_refused_when_the_breaker_is_built(
    name: str, storage: SharedStorage
) -> None:
    with pytest.raises(ConfigError) as caught:
        Breaker(name, storage=storage)
    check(caught, "name")
    assert len(str(caught.value)) < 500  # a long name is not repeated whole
    Breaker(name)  # memory storage holds any string


@pytest.mark.parametrize("mode", ["reject", "admit"])
def test_a_degraded_mode_without_shared_storage_is_refused(mode: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Breaker("svc", degraded_mode=mode)  # type: ignore[arg-type]
    check(caught, "degraded_mode")
    Breaker("svc", degraded_mode="local")  # the default is fine anywhere
