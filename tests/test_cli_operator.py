"""The operator commands end to end: ``status``, ``open``/``close``/``reset``, ``watch``,
run as subprocesses (``python -m breaker_machines`` and the ``breaker-machines`` script)
against the real Redis and PostgreSQL servers, with real breakers running in the test
process (under asyncio and trio).

Nothing sleeps: a test waits on events its breakers' ``on_transition`` set, or on lines
the command prints, every wait bounded by ``fail_after``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest
from tests.helpers import CLI_LIMIT as LIMIT
from tests.helpers import SCRIPT, clean_env, line, watching

from breaker_machines import Breaker, Reason, State, Transition, running
from breaker_machines.storage import PostgresStorage, RedisStorage, SharedStorage

WIDE = 1000.0  # a window so wide no bucket boundary passes during a test


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


async def succeed() -> str:
    return "ok"


def state(breaker: Breaker) -> State:
    """The breaker's state, read afresh (no narrowing across awaits)."""
    return breaker.state


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Target:
    """One storage under test: how the test process opens it, how the CLI names it."""

    kind: str
    url: str
    place: str  # the Redis prefix or the PostgreSQL schema

    @property
    def args(self) -> list[str]:
        if self.kind == "redis":
            return ["--redis", self.url, "--prefix", self.place]
        return ["--postgres", self.url, "--schema", self.place]

    def storage(self) -> RedisStorage | PostgresStorage:
        settings: dict[str, Any] = {
            "flush_interval": 3600.0,  # outcomes wait for sync()
            "refresh_interval": 3600.0,  # only what is published moves a breaker
            "timeout": 5.0,
        }
        if self.kind == "redis":
            return RedisStorage(self.url, prefix=self.place, **settings)
        return PostgresStorage(self.url, schema=self.place, **settings)


@pytest.fixture(params=["redis", "postgres"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each end-to-end test runs once per storage (and once per anyio backend)."""
    if request.param == "redis":
        return Target(
            "redis",
            request.getfixturevalue("redis_url"),
            request.getfixturevalue("redis_prefix"),
        )
    return Target(
        "postgres",
        request.getfixturevalue("postgres_dsn"),
        request.getfixturevalue("postgres_schema"),
    )


@asynccontextmanager
async def opened(target: Target) -> AsyncGenerator[SharedStorage, None]:
    """The storage open and listening (the schema created, for PostgreSQL)."""
    async with target.storage() as storage:
        with anyio.fail_after(LIMIT):
            await storage.wait_subscribed()
        yield storage


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def cli(*args: str, script: bool = False, env: dict[str, str] | None = None) -> Result:
    """Run the command line to its end (``python -m breaker_machines``, or the script)."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "breaker_machines"]
    with anyio.fail_after(LIMIT):
        done = await anyio.run_process(
            [*command, *args], check=False, env=clean_env() if env is None else env
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


@dataclass
class Seen:
    """A breaker's on_transition: every transition, and a way to wait for one."""

    log: list[Transition] = field(default_factory=list[Transition])
    waiters: list[tuple[State, Reason, anyio.Event]] = field(
        default_factory=list[tuple[State, Reason, anyio.Event]]
    )

    def __call__(self, transition: Transition) -> None:
        self.log.append(transition)
        for target, reason, event in self.waiters:
            if transition.target is target and transition.reason is reason:
                event.set()

    def expect(self, target: State, reason: Reason) -> anyio.Event:
        """An event set by the next transition to ``target`` for ``reason``."""
        event = anyio.Event()
        self.waiters.append((target, reason, event))
        return event


# --------------------------------------------------------------------------- status


@pytest.mark.anyio
async def test_status_json_shows_a_tripped_breaker_open_with_its_counts(target: Target) -> None:
    async with opened(target) as storage:
        tripped = Breaker("payments", storage=storage, consecutive_failures=3)
        counting = Breaker(
            "search",
            storage=storage,
            consecutive_failures=50,
            failures=50,
            within=WIDE,
            failure_rate=0.9,
            window=WIDE,
            minimum_calls=100,
        )
        async with running(tripped, counting):
            with anyio.fail_after(LIMIT):
                for _ in range(3):
                    with pytest.raises(Boom):
                        await tripped.call(fail)
                for outcome in (fail, succeed, fail, fail):
                    with pytest.raises(Boom) if outcome is fail else _nothing():
                        await counting.call(outcome)
                await tripped.sync()
                await counting.sync()
                assert tripped.state is State.OPEN

            everything = await cli("status", "--json", *target.args)
            assert everything.code == 0, everything.err
            document = everything.json()
            assert document["storage"]["kind"] == target.kind
            assert document["missing"] == []
            assert document["corrupt"] == []
            by_name = {b["name"]: b for b in document["breakers"]}
            assert sorted(by_name) == ["payments", "search"]
            payments = by_name["payments"]
            assert payments["state"] == "open"
            assert payments["version"] == 1
            assert payments["trips"] == 1
            assert payments["reason"] == "consecutive_failures"
            assert 0 < payments["retry_in"] <= 30
            assert 0 <= payments["opened_ago"] < LIMIT
            assert payments["consecutive_failures"] == 0  # a transition starts afresh
            search = by_name["search"]
            assert search["state"] == "closed"
            assert search["version"] == 0
            assert search["consecutive_failures"] == 2
            assert search["failure_window"] == {"failures": 3}
            assert search["rate_window"] == {"calls": 4, "failures": 3, "slow": 0}
            assert search["retry_in"] is None
            assert search["expires_in"] > 0

            only = await cli("status", "--json", *target.args, "search", "nobody")
            assert only.code == 2  # a name asked for is not stored
            assert [b["name"] for b in only.json()["breakers"]] == ["search"]
            assert only.json()["missing"] == ["nobody"]

            table = await cli("status", *target.args, "--backend", "trio")
            assert table.code == 0, table.err
            lines = table.out.splitlines()
            assert "NAME" in lines[0]
            assert "STATE" in lines[0]
            row = next(line for line in lines if line.startswith("payments"))
            assert " open " in row
            assert "retry in" in row
            assert "consecutive_failures" in row


class _nothing:
    """``pytest.raises`` for the calls that do not raise."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------- controls


@pytest.mark.anyio
async def test_open_close_reset_reach_a_running_breaker_at_once(target: Target) -> None:
    async with opened(target) as storage:
        seen = Seen()
        breaker = Breaker("svc", storage=storage, consecutive_failures=1, on_transition=seen)
        async with running(breaker):
            unknown = await cli("open", "svc", *target.args)
            assert unknown.code == 2
            assert "no breaker named 'svc'" in unknown.err
            assert "Traceback" not in unknown.err
            assert state(breaker) is State.CLOSED

            forced = seen.expect(State.FORCED_OPEN, Reason.FORCED_OPEN)
            opened_it = await cli("open", "svc", "--create", "--json", *target.args)
            assert opened_it.code == 0, opened_it.err
            with anyio.fail_after(LIMIT):
                await forced.wait()
            assert state(breaker) is State.FORCED_OPEN
            answer = opened_it.json()
            assert answer["changed"] is True
            assert answer["transition"] == {
                "source": "closed",
                "target": "forced_open",
                "reason": "forced_open",
                "version": 1,
            }
            assert answer["breaker"]["state"] == "forced_open"
            assert answer["breaker"]["version"] == 1

            closed = seen.expect(State.CLOSED, Reason.FORCED_CLOSE)
            closing = await cli("close", "svc", *target.args)
            assert closing.code == 0, closing.err
            assert "forced_open -> closed" in closing.out
            with anyio.fail_after(LIMIT):
                await closed.wait()
            assert state(breaker) is State.CLOSED
            assert await breaker.call(succeed) == "ok"

            again = await cli("close", "svc", "--json", *target.args)  # a no-op, as in an app
            assert again.code == 0, again.err
            assert again.json()["changed"] is False
            assert again.json()["transition"] is None
            assert again.json()["breaker"]["version"] == 2

            tripped = seen.expect(State.OPEN, Reason.CONSECUTIVE_FAILURES)
            with anyio.fail_after(LIMIT):
                with pytest.raises(Boom):
                    await breaker.call(fail)
                await breaker.sync()
                await tripped.wait()
            reset = seen.expect(State.CLOSED, Reason.RESET)
            resetting = await cli("reset", "svc", *target.args, "--backend", "trio")
            assert resetting.code == 0, resetting.err
            assert "open -> closed (reset)" in resetting.out
            with anyio.fail_after(LIMIT):
                await reset.wait()
            assert state(breaker) is State.CLOSED
            assert breaker.snapshot.trips == 0  # reset clears the backoff

        heard = [(t.target, t.reason, t.won) for t in seen.log]
        assert heard == [
            (State.FORCED_OPEN, Reason.FORCED_OPEN, False),  # adopted from the CLI's write
            (State.CLOSED, Reason.FORCED_CLOSE, False),
            (State.OPEN, Reason.CONSECUTIVE_FAILURES, True),  # decided (and written) here
            (State.CLOSED, Reason.RESET, False),
        ]


@pytest.mark.anyio
async def test_a_control_through_the_installed_script(target: Target) -> None:
    async with opened(target) as storage:
        seen = Seen()
        breaker = Breaker("svc", storage=storage, on_transition=seen)
        async with running(breaker):
            with anyio.fail_after(LIMIT):
                await breaker.call(succeed)
                await breaker.sync()  # counted outcomes store the breaker (version 0)
            listed = await cli("status", *target.args, script=True)
            assert listed.code == 0, listed.err
            assert "svc" in listed.out
            assert "closed" in listed.out
            forced = seen.expect(State.FORCED_OPEN, Reason.FORCED_OPEN)
            opening = await cli("open", "svc", *target.args, script=True)
            assert opening.code == 0, opening.err
            assert "svc: closed -> forced_open" in opening.out
            with anyio.fail_after(LIMIT):
                await forced.wait()
            assert state(breaker) is State.FORCED_OPEN


# --------------------------------------------------------------------------- watch


@pytest.mark.anyio
async def test_watch_json_prints_subscribed_then_each_transition(target: Target) -> None:
    async with opened(target) as storage:
        seen = Seen()
        breaker = Breaker("svc", storage=storage, consecutive_failures=2, on_transition=seen)
        async with running(breaker):
            with anyio.fail_after(LIMIT):
                await breaker.call(succeed)
                await breaker.sync()  # stored (closed, version 0) before the watch starts
            async with watching("--json", "--count", "3", *target.args) as (process, out):
                subscribed = json.loads(await line(out))
                assert subscribed["event"] == "subscribed"
                assert subscribed["gap"] is False
                assert subscribed["storage"]["kind"] == target.kind

                tripped = seen.expect(State.OPEN, Reason.CONSECUTIVE_FAILURES)
                with anyio.fail_after(LIMIT):
                    for _ in range(2):
                        with pytest.raises(Boom):
                            await breaker.call(fail)
                    await breaker.sync()
                    await tripped.wait()  # written: the next control is a transition of its own
                forced = seen.expect(State.FORCED_OPEN, Reason.FORCED_OPEN)
                breaker.force_open()
                with anyio.fail_after(LIMIT):
                    await forced.wait()
                resetting = await cli("reset", "svc", *target.args)  # another process's write
                assert resetting.code == 0, resetting.err

                events = [json.loads(await line(out)) for _ in range(3)]
                with anyio.fail_after(LIMIT):
                    assert await process.wait() == 0  # --count 3 reached
        assert [
            (e["event"], e["name"], e["source"], e["target"], e["reason"], e["version"])
            for e in events
        ] == [
            ("transition", "svc", "closed", "open", "consecutive_failures", 1),
            ("transition", "svc", "open", "forced_open", "forced_open", 2),
            ("transition", "svc", "forced_open", "closed", "reset", 3),
        ]
        assert events[0]["trips"] == 1
        assert 0 < events[0]["retry_in"] <= 30
        assert events[2]["origin"].startswith("breaker-machines-cli-")


@pytest.mark.anyio
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_watch_prints_lines_and_stops_cleanly_on_a_signal(
    target: Target, stop: signal.Signals
) -> None:
    async with opened(target) as storage:
        breaker = Breaker("svc", storage=storage)
        async with running(breaker):
            with anyio.fail_after(LIMIT):
                await breaker.call(succeed)
                await breaker.sync()
            async with watching(*target.args, script=True) as (process, out):
                assert "subscribed" in await line(out)
                opening = await cli("open", "svc", *target.args)
                assert opening.code == 0, opening.err
                text = await line(out)
                assert "svc" in text
                assert "closed -> forced_open" in text
                assert "v1" in text
                process.send_signal(stop)
                with anyio.fail_after(LIMIT):
                    assert await process.wait() == 0


# --------------------------------------------------------------------------- errors


def run_sync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "breaker_machines", *args],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
        env=clean_env() if env is None else env,
    )


@pytest.mark.parametrize("command", [["status"], ["open", "svc"], ["watch"]])
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_an_unreachable_server_is_one_line_and_status_1(kind: str, command: Sequence[str]) -> None:
    port = free_port()
    where = (
        ["--redis", f"redis://127.0.0.1:{port}/0"]
        if kind == "redis"
        else ["--postgres", f"postgresql://postgres@127.0.0.1:{port}/test"]
    )
    done = run_sync(*command, *where, "--timeout", "2")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"breaker-machines {command[0]}: {kind} at ")
    assert str(port) in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--redis", "http://localhost"], "--redis: url='http://localhost'"),
        (["status", "--postgres", "mysql://x/y"], "--postgres: dsn='mysql://x/y'"),
        (["status", "--redis", "redis://h", "--postgres", "postgresql://h/d"], "name one storage"),
        (["status", "--redis", "redis://h", "--schema", "s"], "--schema and --table"),
        (["status", "--postgres", "postgresql://h/d", "--prefix", "p"], "--prefix is for"),
        (["status", "--redis", "redis://h", "--prefix", "a{b}"], "prefix"),
        (["status", "--postgres", "postgresql://h/d", "--table", "x;y"], "table"),
        (["status", "--redis", "redis://h", "--timeout", "0"], "--timeout"),
        (["watch", "--redis", "redis://h", "--count", "0"], "--count"),
        (["open", "--redis", "redis://h"], "NAME"),
        (["open", "x" * 2001, "--postgres", "postgresql://h/d"], "over 2,000 bytes"),
        (["status"], "name a storage"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    done = run_sync(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_storage_may_come_from_the_environment(redis_url: str, redis_prefix: str) -> None:
    done = run_sync(
        "status",
        "--json",
        "--prefix",
        redis_prefix,
        env=clean_env(BREAKER_MACHINES_REDIS_URL=redis_url),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout
    assert json.loads(done.stdout)["breakers"] == []
    both = clean_env(
        BREAKER_MACHINES_REDIS_URL=redis_url,
        BREAKER_MACHINES_POSTGRES_DSN="postgresql://postgres@127.0.0.1/test",
    )
    ambiguous = run_sync("status", env=both)
    assert ambiguous.returncode == 2
    assert "pass --redis or --postgres" in ambiguous.stderr
    chosen = run_sync("status", "--redis", redis_url, "--prefix", redis_prefix, env=both)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout == "no breakers stored\n"


def test_a_missing_postgres_table_is_reported_not_created(
    postgres_dsn: str, postgres_schema: str
) -> None:
    done = run_sync("status", "--postgres", postgres_dsn, "--schema", postgres_schema)
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert "ddl" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_corrupt_record_is_listed_and_a_control_replaces_it(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    storage = RedisStorage(redis_url, prefix=redis_prefix)
    client = redis.Redis.from_url(redis_url)  # pyright: ignore[reportUnknownMemberType]
    try:
        client.hset(storage.keys("svc")[0], mapping={"status": "open", "version": "x"})
    finally:
        client.close()
    where = ["--redis", redis_url, "--prefix", redis_prefix]
    listed = run_sync("status", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["breakers"] == []
    assert [c["name"] for c in document["corrupt"]] == ["svc"]
    table = run_sync("status", *where)
    assert "CORRUPT" in table.stdout
    closing = run_sync("close", "svc", "--json", *where)  # a no-op on a fresh circuit...
    assert closing.returncode == 0, closing.stderr
    answer = json.loads(closing.stdout)
    assert answer["changed"] is True  # ...so the bad record is reset instead
    assert answer["replaced"]
    assert answer["transition"]["source"] is None
    assert answer["transition"]["reason"] == "reset"
    assert answer["breaker"]["state"] == "closed"
    assert answer["breaker"]["version"] >= 1
