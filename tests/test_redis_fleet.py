"""A fleet of real OS processes sharing one breaker through Redis.

Each worker is ``tests/fleet_worker.py`` in a process of its own, running its breaker under
asyncio or trio (the workers alternate), with its runner flushing while it calls. The
parent starts them together (every worker waits on a Redis list the parent fills once all
are ready), collects one JSON line from each, and checks what the fleet agreed on: the
counts in the shared record, a single winner of the trip, a fleet-wide probe limit.

Every wait is bounded: subprocesses by ``timeout=``, the barrier by blocking pops with a
timeout, each worker by ``anyio.fail_after``. A broken fleet fails; it does not hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from breaker_machines import Policy, Reason, State
from breaker_machines.storage import Batch, Proposal, RedisStorage, SharedRecord

WORKER = Path(__file__).with_name("fleet_worker.py")
LIMIT = 30.0  # seconds any one wait may take (a worker's whole run is bounded by it too)
BACKENDS = ("asyncio", "trio")
NAME = "payments api"  # a space: names are percent-encoded in the keys


def coordination_keys(prefix: str) -> dict[str, str]:
    base = f"{prefix}:fleet-test"
    return {
        what: f"{base}:{what}"
        for what in ("ready", "go", "attempted", "release", "dependency")
    }


@contextmanager
def fleet(
    redis_url: str,
    prefix: str,
    *,
    scenario: str,
    processes: int,
    calls: int = 0,
    policy: dict[str, Any],
    storage: dict[str, Any] | None = None,
) -> Iterator[tuple[list[subprocess.Popen[str]], dict[str, str]]]:
    """Start ``processes`` workers; yield them once every one is ready (not yet released)."""
    import redis

    keys = coordination_keys(prefix)
    workers: list[subprocess.Popen[str]] = []
    try:
        for index in range(processes):
            config = {
                "scenario": scenario,
                "backend": BACKENDS[index % len(BACKENDS)],
                "index": index,
                "url": redis_url,
                "prefix": prefix,
                "name": NAME,
                "calls": calls,
                "policy": policy,
                "storage": storage or {},
                "keys": keys,
                "limit": LIMIT,
            }
            workers.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps(config)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        with redis.Redis.from_url(redis_url) as client:
            deadline = time.monotonic() + LIMIT
            ready = 0
            while ready < processes:
                # Blocking pops of one second: a worker that dies before it is ready fails
                # the test at once instead of after the whole limit.
                if client.blpop([keys["ready"]], timeout=1) is not None:
                    ready += 1
                    continue
                dead = [w for w in workers if w.poll() is not None]
                if dead:
                    _, err = dead[0].communicate(timeout=LIMIT)
                    pytest.fail(f"a worker exited before it was ready:\n{err}")
                if time.monotonic() > deadline:
                    pytest.fail(f"only {ready} of {processes} workers ready within {LIMIT}s")
        yield workers, keys
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=LIMIT)


def release(redis_url: str, key: str, count: int) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.rpush(key, *range(count))


def results(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for every worker (bounded) and parse its JSON line."""
    deadline = time.monotonic() + LIMIT * 1.5
    parsed = []
    for worker in workers:
        out, err = worker.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert worker.returncode == 0, f"worker failed (exit {worker.returncode}):\n{err}"
        lines = out.strip().splitlines()
        assert lines, f"worker printed nothing:\n{err}"
        parsed.append(json.loads(lines[-1]))
    return parsed


def read_record(redis_url: str, prefix: str, policy: dict[str, Any]) -> SharedRecord:
    """The shared record as a breaker reads it back (an empty flush: a refresh)."""

    async def read() -> SharedRecord:
        async with RedisStorage(redis_url, prefix=prefix, timeout=5) as storage:
            return await storage.flush(NAME, Policy(**policy), Batch(0))

    return anyio.run(read, backend="asyncio")


def failures_in_window(record: SharedRecord) -> int:
    return sum(bucket[1] for bucket in record.failure_buckets)


# ---------------------------------------------------------------------------- counting


def test_failures_from_four_processes_add_up_exactly(redis_url: str, redis_prefix: str) -> None:
    """4 x 2,500 failures, flushed in batches of 100 while every process is calling."""
    policy = {"consecutive_failures": 1_000_000, "failures": 1_000_000, "within": 300}
    with fleet(
        redis_url,
        redis_prefix,
        scenario="count",
        processes=4,
        calls=2_500,
        policy=policy,
        storage={"flush_size": 100},
    ) as (workers, keys):
        release(redis_url, keys["go"], len(workers))
        outcome = results(workers)

    assert sorted(r["backend"] for r in outcome) == ["asyncio", "asyncio", "trio", "trio"]
    for r in outcome:
        assert (r["failed"], r["rejected"]) == (2_500, 0), r
        assert (r["final_state"], r["final_version"]) == ("closed", 0), r
        assert r["transitions"] == [], r
        assert r["storage_errors"] == 0, r
    record = read_record(redis_url, redis_prefix, policy)
    assert (record.status, record.version) == (State.CLOSED, 0)
    assert record.consecutive_failures == 10_000
    assert failures_in_window(record) == 10_000


# ---------------------------------------------------------------------------- one trip


def test_the_circuit_opens_once_for_the_whole_fleet(redis_url: str, redis_prefix: str) -> None:
    """4 processes race past 100 consecutive failures: one trip, one winner, all OPEN."""
    policy = {"consecutive_failures": 100, "reset_after": 300}
    with fleet(
        redis_url,
        redis_prefix,
        scenario="open",
        processes=4,
        calls=2_500,
        policy=policy,
        storage={"flush_size": 25},
    ) as (workers, keys):
        release(redis_url, keys["go"], len(workers))
        outcome = results(workers)

    opens = [
        t
        for r in outcome
        for t in r["transitions"]
        if (t["source"], t["target"]) == ("closed", "open")
    ]
    assert [t["won"] for t in opens].count(True) == 1, opens
    for r in outcome:
        # Each process hears of the trip once: as its winner, or adopting it.
        assert [t["target"] for t in r["transitions"]] == ["open"], r
        assert r["transitions"][0]["version"] == 1, r
        assert (r["final_state"], r["final_version"]) == ("open", 1), r
        assert r["failed"] + r["rejected"] == 2_500, r
        assert r["rejected"] > 0, r
        assert r["storage_errors"] == 0, r
    winner = next(t for t in opens if t["won"])
    assert winner["reason"] == Reason.CONSECUTIVE_FAILURES.value
    record = read_record(redis_url, redis_prefix, policy)
    assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)
    assert record.reason is Reason.CONSECUTIVE_FAILURES


def test_a_trip_no_process_could_decide_alone(redis_url: str, redis_prefix: str) -> None:
    """4 x 40 failures against a threshold of 100: only the fleet's count can trip it."""
    policy = {"consecutive_failures": 100, "reset_after": 300}
    with fleet(
        redis_url,
        redis_prefix,
        scenario="open",
        processes=4,
        calls=40,
        policy=policy,
        storage={"flush_size": 10},
    ) as (workers, keys):
        release(redis_url, keys["go"], len(workers))
        outcome = results(workers)

    opens = [t for r in outcome for t in r["transitions"] if t["target"] == "open"]
    assert [t["won"] for t in opens].count(True) == 1, opens
    for r in outcome:
        assert [t["target"] for t in r["transitions"]] == ["open"], r
        assert (r["final_state"], r["final_version"]) == ("open", 1), r
        assert r["failed"] + r["rejected"] == 40, r
    record = read_record(redis_url, redis_prefix, policy)
    assert (record.status, record.version, record.trips) == (State.OPEN, 1, 1)


# ---------------------------------------------------------------------------- half-open


def test_half_open_probes_are_limited_across_the_fleet(
    redis_url: str, redis_prefix: str
) -> None:
    """8 processes call a HALF_OPEN circuit at once; the fleet lets 2 probes through."""
    policy = {"consecutive_failures": 5, "reset_after": 300, "half_open_probes": 2}

    async def half_open() -> None:
        async with RedisStorage(redis_url, prefix=redis_prefix, timeout=5) as storage:
            proposal = Proposal(State.HALF_OPEN, 1, 1, Reason.RESET_AFTER_ELAPSED, 300.0, None, "")
            won, record = await storage.propose(NAME, 0, proposal, force=True)
            assert won
            assert (record.status, record.version) == (State.HALF_OPEN, 1)

    anyio.run(half_open, backend="asyncio")

    import redis

    with (
        fleet(redis_url, redis_prefix, scenario="probe", processes=8, policy=policy) as (
            workers,
            keys,
        ),
        redis.Redis.from_url(redis_url) as client,
    ):
        release(redis_url, keys["go"], len(workers))
        # Every call is admitted (and now inside the dependency) or rejected: count them
        # while the admitted ones still hold their permits.
        attempts = []
        for _ in workers:
            popped = client.blpop([keys["attempted"]], timeout=LIMIT)
            assert popped is not None, f"only {len(attempts)} of {len(workers)} calls resolved"
            attempts.append(popped[1].decode())
        reached = int(client.get(keys["dependency"]) or 0)
        release(redis_url, keys["release"], len(workers))
        outcome = results(workers)

    assert all(r["initial_state"] == "half_open" for r in outcome), outcome
    assert 1 <= reached <= 2, (reached, attempts)
    assert attempts.count("admitted") == reached
    assert sum(r["admitted"] for r in outcome) == reached
    assert all(r["released"] for r in outcome if r["admitted"])
    assert all(r["storage_errors"] == 0 for r in outcome), outcome
