"""A fleet of real OS processes sharing one breaker through PostgreSQL.

The PostgreSQL twin of ``test_redis_fleet.py``, with the same worker
(``tests/fleet_worker.py``, given ``"store": "postgres"``): each worker is a process of its
own running its breaker under asyncio or trio (the workers alternate) on a
``PostgresStorage`` in the test's fresh schema (the ``postgres_schema`` fixture; the workers
create the tables, and the schema is dropped afterwards), with its runner flushing while it
calls. The processes are started once for the module and run one scenario per test, each
in a fresh ``anyio.run`` with a storage and a breaker of its own.

Coordination stays on Redis, as in the Redis fleet (the workers already speak it): each
worker pushes on a ``ready`` list once its runner has adopted the stored state and pops a
``go`` token the parent pushes once all are ready; the probe scenario's dependency is a
Redis counter. So these tests need both servers. What they check is in PostgreSQL: the
shared record read back by a storage with ``create=False``, and the rows themselves.

Every wait is bounded: the workers' answers by queue timeouts, the barrier by blocking pops
with a timeout, each scenario by ``anyio.fail_after`` in the worker, the processes' exit by
``wait(timeout=)``. A broken fleet fails; it does not hang.
"""

from __future__ import annotations

import asyncio
import collections
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from breaker_machines import Policy, Reason, State
from breaker_machines.storage import Batch, PostgresStorage, Proposal, SharedRecord

WORKER = Path(__file__).with_name("fleet_worker.py")
PROCESSES = 8
BACKENDS = ("asyncio", "trio")
START_LIMIT = 90.0  # seconds for every process to import everything (a loaded 2-core box)
LIMIT = 30.0  # seconds any one scenario, or any one wait of it, may take
NAME = "payments api"  # a space: the row is keyed by the name as it is
TABLE = "breakers"  # PostgresStorage's default table


class Worker:
    """One worker process: send it a scenario, read its answer (both bounded)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.backend = BACKENDS[index % len(BACKENDS)]
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), self.backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=200)
        self.readers = [
            threading.Thread(target=target, daemon=True)
            for target in (self._read_stdout, self._read_stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def send(self, config: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({**config, "index": self.index}) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float, prefix: str | None = None) -> dict[str, Any]:
        """The next answer (to the scenario on ``prefix``: a late answer to an earlier,
        failed test is skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"worker {self.index} ({self.backend}) did not answer in time")
            if line is None:
                self.process.wait(timeout=LIMIT)
                pytest.fail(
                    f"worker {self.index} ({self.backend}) exited "
                    f"({self.process.returncode}):\n{''.join(self.stderr)}"
                )
            answer: dict[str, Any] = json.loads(line)
            if prefix is None or answer.get("prefix") == prefix:
                break
        if "error" in answer:
            pytest.fail(f"worker {self.index} ({self.backend}) failed:\n{answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=LIMIT)
        for reader in self.readers:  # they end at the pipes' end of file
            reader.join(timeout=LIMIT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="module")
def pool(postgres_dsn: str, redis_url: str) -> Iterator[list[Worker]]:
    """``PROCESSES`` worker processes, alternately asyncio and trio, each ready to serve."""
    workers: list[Worker] = []
    try:
        workers.extend(Worker(index) for index in range(PROCESSES))
        deadline = time.monotonic() + START_LIMIT
        for worker in workers:
            hello = worker.receive(deadline - time.monotonic())
            assert hello == {"hello": worker.backend}
        yield workers
    finally:
        for worker in workers:
            worker.close()


class Fleet:
    """Where one test's fleet meets: the PostgreSQL schema it shares a breaker in, and the
    Redis keys it coordinates on (``prefix`` also tags the workers' answers)."""

    def __init__(self, dsn: str, schema: str, redis_url: str, prefix: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.redis_url = redis_url
        self.prefix = prefix
        base = f"{prefix}:fleet-test"
        self.keys = {
            what: f"{base}:{what}" for what in ("ready", "go", "attempted", "release", "dependency")
        }

    def start(
        self,
        workers: list[Worker],
        *,
        scenario: str,
        calls: int = 0,
        policy: dict[str, Any],
        storage: dict[str, Any] | None = None,
    ) -> None:
        """Hand ``workers`` a scenario; return once all are ready (not yet released)."""
        import redis

        config = {
            "scenario": scenario,
            "store": "postgres",
            "dsn": self.dsn,
            "schema": self.schema,
            "url": self.redis_url,
            "prefix": self.prefix,
            "name": NAME,
            "calls": calls,
            "policy": policy,
            "storage": storage or {},
            "keys": self.keys,
            "limit": LIMIT,
        }
        for worker in workers:
            worker.send(config)
        with redis.Redis.from_url(self.redis_url) as client:
            for ready in range(len(workers)):
                if client.blpop([self.keys["ready"]], timeout=LIMIT) is None:
                    # A worker that failed has answered with its error: show it.
                    for worker in workers:
                        if not worker.lines.empty():
                            worker.receive(0, self.prefix)
                    pytest.fail(f"only {ready} of {len(workers)} workers ready within {LIMIT}s")

    def release(self, what: str, count: int) -> None:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            client.rpush(self.keys[what], *range(count))

    def results(self, workers: list[Worker]) -> list[dict[str, Any]]:
        """Every worker's answer to this fleet's scenario (bounded)."""
        deadline = time.monotonic() + LIMIT
        return [worker.receive(deadline - time.monotonic(), self.prefix) for worker in workers]

    def read_record(self, policy: dict[str, Any]) -> SharedRecord:
        """The shared record as a breaker reads it back (an empty flush: a refresh), by a
        storage that runs no DDL (``create=False``): the workers created the tables."""

        async def read() -> SharedRecord:
            storage = PostgresStorage(self.dsn, schema=self.schema, create=False, timeout=5)
            async with storage:
                return await storage.flush(NAME, Policy(**policy), Batch(0))

        return anyio.run(read, backend="asyncio")

    def rows(self) -> dict[str, Any]:
        """The stored rows themselves, by plain SQL."""
        import asyncpg

        table = f'"{self.schema}"."{TABLE}"'

        async def read() -> dict[str, Any]:
            connection = await asyncpg.connect(self.dsn, timeout=5)
            try:
                breakers = await connection.fetch(
                    f"SELECT name, status, version, trips, consecutive_failures FROM {table}"
                )
                window = await connection.fetchval(
                    f'SELECT coalesce(sum(calls), 0) FROM "{self.schema}"."{TABLE}_buckets" '
                    "WHERE name = $1 AND kind = 'f'",
                    NAME,
                )
                permits = await connection.fetchval(
                    f'SELECT count(*) FROM "{self.schema}"."{TABLE}_probes" WHERE name = $1',
                    NAME,
                )
            finally:
                await connection.close()
            return {
                "breakers": [dict(row) for row in breakers],
                "failure_window": int(window),
                "permits": int(permits),
            }

        return asyncio.run(read())


@pytest.fixture
def fleet(postgres_dsn: str, postgres_schema: str, redis_url: str, redis_prefix: str) -> Fleet:
    return Fleet(postgres_dsn, postgres_schema, redis_url, redis_prefix)


def show(answer: Any) -> str:
    """A worker's answer (or several), in full, for an assertion's message."""
    return json.dumps(answer)


def failures_in_window(record: SharedRecord) -> int:
    return sum(bucket[1] for bucket in record.failure_buckets)


# ---------------------------------------------------------------------------- counting


def test_failures_from_four_processes_add_up_exactly(pool: list[Worker], fleet: Fleet) -> None:
    """4 x 2,500 failures, flushed in batches of 100 while every process is calling."""
    policy = {"consecutive_failures": 1_000_000, "failures": 1_000_000, "within": 300}
    workers = pool[:4]
    fleet.start(workers, scenario="count", calls=2_500, policy=policy, storage={"flush_size": 100})
    fleet.release("go", len(workers))
    outcome = fleet.results(workers)

    assert sorted(r["backend"] for r in outcome) == ["asyncio", "asyncio", "trio", "trio"]
    for r in outcome:
        assert (r["failed"], r["rejected"]) == (2_500, 0), show(r)
        assert (r["final_state"], r["stored_version"]) == ("closed", 0), show(r)
        assert r["transitions"] == [], show(r)
        # Every outcome reached PostgreSQL: none dropped, none left behind, none of an old
        # generation, no storage error.
        assert (r["unflushed"], r["dropped"], r["stale"]) == (0, 0, 0), show(r)
        assert (r["storage_errors"], r["degraded"]) == (0, False), show(r)
    record = fleet.read_record(policy)
    assert (record.status, record.version, record.missing) == (State.CLOSED, 0, False)
    assert record.consecutive_failures == 10_000
    assert failures_in_window(record) == 10_000
    rows = fleet.rows()
    assert rows["breakers"] == [
        {
            "name": NAME,
            "status": "closed",
            "version": 0,
            "trips": 0,
            "consecutive_failures": 10_000,
        }
    ]
    assert rows["failure_window"] == 10_000


# ---------------------------------------------------------------------------- one trip


def test_the_circuit_opens_once_for_the_whole_fleet(pool: list[Worker], fleet: Fleet) -> None:
    """4 processes race past 100 consecutive failures: one trip, one winner, all OPEN.

    The batches wait for the flush interval (0.1 s), far longer than 100 calls take: every
    process trips on its own count and proposes the same transition, and the
    compare-and-set on the stored version (under the row lock) picks one winner.
    """
    policy = {"consecutive_failures": 100, "reset_after": 300}
    workers = pool[:4]
    fleet.start(workers, scenario="open", calls=2_500, policy=policy, storage={"flush_size": 1000})
    fleet.release("go", len(workers))
    outcome = fleet.results(workers)

    assert sorted(r["backend"] for r in outcome) == ["asyncio", "asyncio", "trio", "trio"]
    opens = [t for r in outcome for t in r["transitions"] if t["target"] == "open"]
    assert [t["won"] for t in opens].count(True) == 1, show(opens)
    for r in outcome:
        # Each process hears of the trip once: as its winner, or adopting it.
        pairs = [(t["source"], t["target"]) for t in r["transitions"]]
        assert pairs == [("closed", "open")], show(r)
        assert r["transitions"][0]["version"] == 1, show(r)
        assert (r["final_state"], r["stored_version"]) == ("open", 1), show(r)
        assert r["failed"] + r["rejected"] == 2_500, show(r)
        assert r["rejected"] > 0, show(r)
        assert (r["storage_errors"], r["degraded"]) == (0, False), show(r)
    winner = next(t for t in opens if t["won"])
    assert winner["reason"] == Reason.CONSECUTIVE_FAILURES.value
    record = fleet.read_record(policy)
    assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
    assert record.reason is Reason.CONSECUTIVE_FAILURES
    assert [(b["status"], b["version"], b["trips"]) for b in fleet.rows()["breakers"]] == [
        ("open", 1, 1)
    ]


def test_a_trip_no_process_could_decide_alone(pool: list[Worker], fleet: Fleet) -> None:
    """4 x 40 failures against a threshold of 100: only the fleet's count can trip it."""
    policy = {"consecutive_failures": 100, "reset_after": 300}
    workers = pool[:4]
    fleet.start(workers, scenario="open", calls=40, policy=policy, storage={"flush_size": 10})
    fleet.release("go", len(workers))
    outcome = fleet.results(workers)

    opens = [t for r in outcome for t in r["transitions"] if t["target"] == "open"]
    assert [t["won"] for t in opens].count(True) == 1, show(opens)
    for r in outcome:
        pairs = [(t["source"], t["target"]) for t in r["transitions"]]
        assert pairs == [("closed", "open")], show(r)
        assert (r["final_state"], r["stored_version"]) == ("open", 1), show(r)
        assert r["failed"] + r["rejected"] == 40, show(r)
        assert (r["storage_errors"], r["degraded"]) == (0, False), show(r)
    record = fleet.read_record(policy)
    assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)


# ---------------------------------------------------------------------------- half-open


def test_half_open_probes_are_limited_across_the_fleet(pool: list[Worker], fleet: Fleet) -> None:
    """8 processes call a HALF_OPEN circuit at once; the fleet lets 2 probes through."""
    import redis

    policy = {"consecutive_failures": 5, "reset_after": 300, "half_open_probes": 2}

    async def half_open() -> None:
        async with PostgresStorage(fleet.dsn, schema=fleet.schema, timeout=5) as storage:
            proposal = Proposal(State.HALF_OPEN, 1, 1, Reason.RESET_AFTER_ELAPSED, 300.0, None, "")
            won, record = await storage.propose(NAME, 0, proposal, force=True)
            assert won
            assert (record.status, record.version) == (State.HALF_OPEN, 1)

    anyio.run(half_open, backend="asyncio")  # also creates the tables
    workers = pool[:8]
    fleet.start(workers, scenario="probe", policy=policy)
    with redis.Redis.from_url(fleet.redis_url) as client:
        fleet.release("go", len(workers))
        # Every call is admitted (and now inside the dependency) or rejected: count them
        # while the admitted ones still hold their permits.
        attempts: list[str] = []
        for _ in workers:
            popped = client.blpop([fleet.keys["attempted"]], timeout=LIMIT)
            assert popped is not None, f"only {len(attempts)} of {len(workers)} calls resolved"
            attempts.append(popped[1].decode())
        reached = int(client.get(fleet.keys["dependency"]) or 0)
        permits = fleet.rows()["permits"]  # the fleet's permits, held right now
        fleet.release("release", len(workers))
    outcome = fleet.results(workers)

    assert sorted(r["backend"] for r in outcome) == ["asyncio"] * 4 + ["trio"] * 4
    assert all(r["initial_state"] == "half_open" for r in outcome), show(outcome)
    assert 1 <= reached <= 2, (reached, attempts)
    assert permits == reached, (permits, reached)
    assert attempts.count("admitted") == reached
    assert sum(r["admitted"] for r in outcome) == reached
    assert all(r["released"] for r in outcome if r["admitted"])
    assert all(r["storage_errors"] == 0 for r in outcome), show(outcome)
