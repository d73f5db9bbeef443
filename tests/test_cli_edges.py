"""The operator commands' less travelled paths, end to end (``python -m breaker_machines``
as a subprocess, against the real Redis and PostgreSQL servers), and the renderer's
human-readable forms in process.

Commands: ``status`` of names not stored and of half-written records, controls that change
nothing or replace a record the core refuses (text and JSON), a missing driver or trio,
``--verbose``, Ctrl-C while the storage does not answer, a reader that went away
(``| head``), and ``watch`` on transitions of unknown, new and re-created breakers.

Nothing sleeps: every wait is on a line the command prints, a connection it makes or its
exit, bounded by ``fail_after`` / a subprocess timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import anyio
import anyio.abc
import pytest
from tests.helpers import CLI_LIMIT as LIMIT
from tests.helpers import clean_env, line, watching

from breaker_machines import Reason, State
from breaker_machines._cli import render
from breaker_machines.storage import PostgresStorage, RedisStorage
from breaker_machines.storage.shared import CorruptRecordError, SharedRecord, StoredBreaker


def command(prelude: str | None = None) -> list[str]:
    """The command line; ``prelude`` runs first in the command's process (e.g. to make an
    optional dependency unimportable, as when it is not installed)."""
    if prelude is None:
        return [sys.executable, "-m", "breaker_machines"]
    main = "from breaker_machines.__main__ import main; sys.exit(main())"
    return [sys.executable, "-c", f"import sys; {prelude}; {main}"]


def run_cli(*args: str, prelude: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(prelude), *args],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
        env=clean_env(),
    )


@pytest.fixture
def redis_where(redis_url: str, redis_prefix: str) -> list[str]:
    return ["--redis", redis_url, "--prefix", redis_prefix]


@pytest.fixture
def client(redis_url: str) -> Any:
    """A plain Redis client, to write what a damaged or half-written store holds."""
    import redis

    connection = redis.Redis.from_url(redis_url)  # pyright: ignore[reportUnknownMemberType]
    yield connection
    connection.close()


def record_key(redis_url: str, prefix: str, name: str) -> str:
    return RedisStorage(redis_url, prefix=prefix).keys(name)[0]


# --------------------------------------------------------------------------- status


def test_status_of_names_not_stored_lists_each(redis_where: list[str]) -> None:
    done = run_cli("status", *redis_where, "nobody", "other", "nobody")
    assert done.returncode == 2
    assert done.stdout == "nobody: not stored\nother: not stored\n"
    assert done.stderr == ""


def test_status_leaves_out_a_record_without_a_version(
    redis_url: str, redis_prefix: str, redis_where: list[str], client: Any
) -> None:
    # A half-written key (no version): listed by the scan, read back as missing.
    client.hset(record_key(redis_url, redis_prefix, "ghost"), mapping={"status": "open"})
    everything = run_cli("status", "--json", *redis_where)
    assert everything.returncode == 0, everything.stderr
    document = json.loads(everything.stdout)
    assert document["breakers"] == []
    assert document["missing"] == []  # not asked for by name: simply not listed
    assert document["corrupt"] == []
    table = run_cli("status", *redis_where)
    assert table.returncode == 0, table.stderr
    assert table.stdout == "no breakers stored\n"
    asked = run_cli("status", *redis_where, "ghost")
    assert asked.returncode == 2
    assert asked.stdout == "ghost: not stored\n"


# --------------------------------------------------------------------------- controls


def test_a_control_that_changes_nothing_says_so(redis_where: list[str]) -> None:
    done = run_cli("close", "svc", "--create", *redis_where)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "svc: already closed; nothing written\n"
    listed = run_cli("status", *redis_where)
    assert listed.stdout == "no breakers stored\n"  # nothing was written


def test_a_control_replacing_a_corrupt_record_says_so_in_text(
    redis_url: str, redis_prefix: str, redis_where: list[str], client: Any
) -> None:
    client.hset(
        record_key(redis_url, redis_prefix, "svc"), mapping={"status": "open", "version": "x"}
    )
    done = run_cli("open", "svc", *redis_where)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("svc: replaced a record that did not validate: redis read: ")
    assert "not a number: x" in first
    assert second == "svc: ? -> forced_open (forced_open), version 1; published"
    after = json.loads(run_cli("status", "--json", *redis_where).stdout)
    assert [(b["name"], b["state"], b["version"]) for b in after["breakers"]] == [
        ("svc", "forced_open", 1)
    ]


def test_a_record_the_core_refuses_is_replaced_by_a_control(
    redis_url: str, redis_prefix: str, redis_where: list[str], client: Any
) -> None:
    # Readable, but an OPEN circuit without a retry time: the core refuses to adopt it.
    client.hset(
        record_key(redis_url, redis_prefix, "svc"),
        mapping={"status": "open", "version": "3", "trips": "1"},
    )
    listed = json.loads(run_cli("status", "--json", *redis_where).stdout)
    (svc,) = listed["breakers"]
    assert (svc["state"], svc["version"], svc["retry_in"]) == ("open", 3, None)
    done = run_cli("close", "svc", "--json", *redis_where)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["replaced"] == (
        "stored record refused by the core (a remote OPEN state must have retry_at)"
    )
    assert answer["changed"] is True  # closing a fresh circuit changes nothing: reset instead
    assert answer["transition"] == {
        "source": "open",
        "target": "closed",
        "reason": "reset",
        "version": 4,
    }
    assert answer["breaker"]["state"] == "closed"
    text = run_cli("open", "svc", *redis_where)  # a valid record now: nothing replaced
    assert text.stdout == "svc: closed -> forced_open (forced_open), version 5; published\n"


# --------------------------------------------------------------------------- environment


def test_a_storage_driver_that_is_not_installed_is_one_line_and_status_1(
    redis_where: list[str],
) -> None:
    done = run_cli("status", *redis_where, prelude="sys.modules['redis.asyncio'] = None")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("breaker-machines status: storage=<RedisStorage ")
    assert done.stderr.endswith("needs redis-py: pip install 'breaker-machines[redis]'\n")
    assert len(done.stderr.splitlines()) == 1


def test_backend_trio_without_trio_is_a_usage_error(redis_where: list[str]) -> None:
    done = run_cli(
        "status", *redis_where, "--backend", "trio", prelude="sys.modules['trio'] = None"
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        "breaker-machines status: error: --backend trio needs trio: "
        "pip install 'breaker-machines[trio]'" in done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_while_the_storage_does_not_answer_exits_130(backend: str) -> None:
    # The same on every Python: under asyncio on 3.10 an interrupt left to the event loop
    # comes out as a CancelledError (exit 1, with a traceback); the command handles SIGINT.
    with socket.socket() as server:  # accepts the connection, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(LIMIT)
        port = server.getsockname()[1]
        process = subprocess.Popen(
            [
                *command(),
                *("status", "--redis", f"redis://127.0.0.1:{port}/0", "--timeout", "60"),
                *("--backend", backend),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            connection, _ = server.accept()  # the command is waiting for Redis now
            with connection:
                process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=LIMIT)
        finally:
            if process.returncode is None:
                process.kill()
                process.communicate()
    assert process.returncode == 130
    assert out == ""
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "code"),
    [(["status"], 1), (["status", "--json"], 1), (["watch", "--count", "1"], 0)],
)
def test_a_reader_that_went_away_ends_the_command_quietly(
    redis_where: list[str], args: list[str], code: int
) -> None:
    read, write = os.pipe()
    os.close(read)  # `... | head -0`: whatever the command prints has nowhere to go
    try:
        done = subprocess.run(
            [*command(), *args, *redis_where],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=LIMIT,
            check=False,
            env=clean_env(),
        )
    finally:
        os.close(write)
    assert done.returncode == code
    assert done.stderr == ""


# --------------------------------------------------------------------------- watch


async def cli(*args: str) -> None:
    with anyio.fail_after(LIMIT):
        done = await anyio.run_process([*command(), *args], check=False, env=clean_env())
    assert done.returncode == 0, done.stderr.decode()


async def stderr_of(process: anyio.abc.Process) -> str:
    assert process.stderr is not None
    with anyio.fail_after(LIMIT):
        chunks = [chunk async for chunk in process.stderr]
    return b"".join(chunks).decode()


@pytest.mark.anyio
async def test_watch_names_the_source_only_of_a_newer_version(
    redis_url: str, redis_prefix: str, redis_where: list[str], client: Any
) -> None:
    await cli("open", "svc", "--create", *redis_where)  # stored: forced_open, version 1
    client.hset(record_key(redis_url, redis_prefix, "ghost"), mapping={"status": "open"})
    async with watching("--count", "3", *redis_where, stderr=subprocess.PIPE) as (process, out):
        assert "subscribed to redis at" in await line(out)

        await cli("close", "svc", *redis_where)
        closing = await line(out)
        assert closing.endswith("  svc  forced_open -> closed  forced_close  v2")

        await cli("open", "new", "--create", *redis_where)  # not stored when watch started
        assert (await line(out)).endswith("  new  ? -> forced_open  forced_open  v1")

        # svc's keys expire (deleted here), then it is written afresh: version 1 again,
        # older than the version 2 the watch knows: no source is claimed for it.
        client.delete(*RedisStorage(redis_url, prefix=redis_prefix).keys("svc"))
        await cli("open", "svc", "--create", *redis_where)
        assert (await line(out)).endswith("  svc  ? -> forced_open  forced_open  v1")
        with anyio.fail_after(LIMIT):
            assert await process.wait() == 0  # --count 3 reached
        assert await stderr_of(process) == ""


def notify(dsn: str, channel: str, *payloads: str) -> None:
    """NOTIFY ``payloads`` on ``channel``, in order (asyncpg, on a loop of its own)."""
    import asyncio

    import asyncpg

    async def send() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            for payload in payloads:
                await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
        finally:
            await connection.close()

    asyncio.run(send())


@pytest.mark.anyio
async def test_watch_prints_a_transition_of_a_breaker_no_longer_stored(
    postgres_dsn: str, postgres_schema: str
) -> None:
    async with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        with anyio.fail_after(LIMIT):
            assert await storage.breaker_names() == []  # creates the tables (the command
        channel = storage.channel  # never does)
    where = ["--postgres", postgres_dsn, "--schema", postgres_schema]
    key = hashlib.md5(b"gone").hexdigest()  # the storage's key for a name
    transition = {
        "status": "open",
        "version": 1,
        "trips": 1,
        "reason": "consecutive_failures",
        "retry_in": 42.0,
        "key": key,
    }
    watch = watching("--verbose", "--count", "1", *where, stderr=subprocess.PIPE)
    async with watch as (process, out):
        assert "subscribed to postgres at" in await line(out)
        await anyio.to_thread.run_sync(
            notify, postgres_dsn, channel, '{"key": 5}', json.dumps(transition)
        )
        printed = await line(out)
        assert printed.endswith(
            f"  <unknown breaker, key {key}>  ? -> open  consecutive_failures  v1  (retry in 42s)"
        )
        with anyio.fail_after(LIMIT):
            assert await process.wait() == 0
        errors = await stderr_of(process)
    # --verbose: the storage's warning about the malformed notification, on stderr.
    assert (
        f"WARNING breaker_machines.storage.postgres: ignored a malformed notification on "
        f"{channel}: '{{\"key\": 5}}'" in errors
    )


# --------------------------------------------------------------------------- render


def record(status: State, **fields: Any) -> SharedRecord:
    settings: dict[str, Any] = {
        "version": 3,
        "trips": 1,
        "reason": Reason.CONSECUTIVE_FAILURES,
        "opened_ago": None,
        "retry_in": None,
    }
    settings.update(fields)
    return SharedRecord(status=status, **settings)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1.0, "0.0s"),
        (4.24, "4.2s"),
        (37.4, "37s"),
        (119.4, "119s"),
        (120.0, "2m00s"),
        (725.0, "12m05s"),
        (7199.0, "119m59s"),
        (7200.0, "2h00m"),
        (12_000.0, "3h20m"),
        (90_061.0, "25h01m"),
    ],
)
def test_durations_for_people(seconds: float, text: str) -> None:
    assert render.duration(seconds) == text


def test_the_status_table_says_what_each_state_waits_for() -> None:
    found = [
        StoredBreaker("held", record(State.FORCED_OPEN, reason=Reason.FORCED_OPEN, opened_ago=5.0)),
        StoredBreaker(
            "probing", record(State.HALF_OPEN, probes=1, half_open_successes=2, opened_ago=125.0)
        ),
        StoredBreaker("due", record(State.OPEN, retry_in=-0.5, opened_ago=8000.0)),
        StoredBreaker("waiting", record(State.OPEN, retry_in=150.0, opened_ago=3.0)),
        StoredBreaker(
            "busy",
            record(State.CLOSED, reason=None, consecutive_failures=2),
            window_failures=4,
            rate_calls=10,
            rate_failures=3,
            rate_slow=1,
        ),
    ]
    corrupt = [("bad", CorruptRecordError("redis: malformed record"))]
    header, *rows = render.status_table(found, corrupt).splitlines()
    assert header.split() == [
        *("NAME", "STATE", "VERSION", "TRIPS", "FAILURES", "WINDOW", "RETRY"),
        *("LAST", "REASON"),
    ]
    by_name = {row.split()[0]: " ".join(row.split()) for row in rows}
    assert by_name["held"] == (
        "held forced_open 3 1 0 0 failed until closed forced_open (opened 5.0s ago)"
    )
    assert by_name["probing"] == (
        "probing half_open 3 1 0 0 failed probing (1 out, 2 ok) consecutive_failures "
        "(opened 2m05s ago)"
    )
    assert by_name["due"] == (
        "due open 3 1 0 0 failed retry due consecutive_failures (opened 2h13m ago)"
    )
    assert by_name["waiting"] == (
        "waiting open 3 1 0 0 failed retry in 2m30s consecutive_failures (opened 3.0s ago)"
    )
    assert by_name["busy"] == "busy closed 3 1 2 4 failed, 3/10 calls failed, 1 slow - -"
    assert by_name["bad"] == "bad CORRUPT - - - - - redis: malformed record"


def test_a_transition_line_shows_when_an_open_circuit_retries() -> None:
    opened = record(State.OPEN, version=7, retry_in=3725.0)
    line_text = render.transition_line(0.0, "svc", "k", State.CLOSED, opened)
    assert line_text == (
        "1970-01-01T00:00:00.000Z  svc  closed -> open  consecutive_failures  v7  (retry in 62m05s)"
    )
    forced = record(State.FORCED_OPEN, reason=None, retry_in=None)
    assert render.transition_line(1.5, None, "k1", None, forced) == (
        "1970-01-01T00:00:01.500Z  <unknown breaker, key k1>  ? -> forced_open  -  v3"
    )
