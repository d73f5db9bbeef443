"""One process of a fleet sharing a breaker through Redis or PostgreSQL (run by
``test_redis_fleet.py`` and ``test_postgres_fleet.py``).

``python tests/fleet_worker.py BACKEND`` imports everything, prints ``{"hello": BACKEND}``,
then reads one JSON config per line on stdin and answers each with one JSON line of
results on stdout, running the scenario in ``anyio.run(main, config, backend=BACKEND)``: a
fresh event loop, storage and breaker per scenario, one process for several scenarios (an
import of redis-py alone costs about a second of CPU here). Logs go to stderr. The worker
exits when stdin closes.

A config: ``scenario`` (``count``, ``open`` or ``probe``), ``index``, ``url``,
``prefix``, ``name``, ``calls``, ``policy`` (Breaker keywords), ``storage`` (RedisStorage
keywords), ``keys`` (the coordination keys below) and ``limit`` (seconds the scenario may
take, waits included). With ``"store": "postgres"`` the breaker's storage is a
PostgresStorage on ``dsn`` and ``schema`` instead (``storage`` then holds PostgresStorage
keywords); ``url`` and ``prefix`` still name the Redis server and keys the coordination
uses, and ``prefix`` still tags the answer.

Coordination is by Redis lists, with blocking pops (never sleeps): the worker pushes its
index on ``keys.ready`` once its breaker's runner has adopted the stored state, then pops
one token from ``keys.go`` (the parent pushes one per worker when all are ready). In the
``probe`` scenario a call that got through increments ``keys.dependency`` and then waits
for a token on ``keys.release``; every worker pushes on ``keys.attempted`` once its call
was admitted or rejected.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
import traceback
from typing import Any

import anyio
import anyio.lowlevel

import redis
from breaker_machines import Breaker, CircuitOpenError, State, Transition, running
from breaker_machines.storage import PostgresStorage, RedisStorage


class Boom(Exception):
    """The dependency failed."""


async def blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A call of the sync Redis client, in a worker thread (works under asyncio and trio)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def shared_storage(config: dict[str, Any]) -> RedisStorage | PostgresStorage:
    """The storage the scenario's breaker shares: Redis (the default) or PostgreSQL."""
    if config.get("store", "redis") == "postgres":
        return PostgresStorage(config["dsn"], schema=config["schema"], **config["storage"])
    return RedisStorage(config["url"], prefix=config["prefix"], **config["storage"])


async def main(config: dict[str, Any]) -> dict[str, Any]:
    limit = float(config["limit"])
    keys = config["keys"]
    scenario = config["scenario"]
    opened = anyio.Event()
    transitions: list[dict[str, Any]] = []

    def on_transition(t: Transition) -> None:
        transitions.append(
            {
                "source": t.source.value,
                "target": t.target.value,
                "reason": t.reason.value,
                "version": t.version,
                "won": t.won,
            }
        )
        if t.target is State.OPEN:
            opened.set()

    result: dict[str, Any] = {"index": config["index"], "backend": config["backend"]}
    clock = time.monotonic
    marks = {"main": clock()}
    client = redis.Redis.from_url(config["url"])
    try:
        with anyio.fail_after(limit):
            async with shared_storage(config) as storage:
                await storage.wait_subscribed()  # adoption by pub/sub is part of the test
                breaker = Breaker(
                    config["name"],
                    storage=storage,
                    on_transition=on_transition,
                    **config["policy"],
                )
                async with running(breaker):
                    result["initial_state"] = breaker.state.value
                    marks["ready"] = clock()
                    await blocking(client.rpush, keys["ready"], config["index"])
                    if await blocking(client.blpop, [keys["go"]], timeout=limit) is None:
                        raise TimeoutError("no start signal")
                    marks["go"] = clock()
                    if scenario == "probe":
                        result.update(await probe(breaker, client, keys, limit))
                    else:
                        result.update(await fail_many(breaker, int(config["calls"])))
                    marks["called"] = clock()
                    await breaker.sync()
                    if scenario == "open" and breaker.state is not State.OPEN:
                        await opened.wait()  # adopted by pub/sub (bounded by fail_after)
                    stats = breaker.stats()
                    result["final_state"] = stats.state.value
                    assert breaker._replica is not None
                    result["stored_version"] = breaker._replica.stored  # the fleet's version
                    result["failures"] = stats.failures
                    result["rejections"] = stats.rejections
                    result["unflushed"] = stats.unflushed
                    result["stale"] = stats.stale
                    result["dropped"] = stats.dropped
                    result["degraded"] = stats.degraded
                    marks["synced"] = clock()
                result["storage_errors"] = storage.errors
            marks["closed"] = clock()
    finally:
        client.close()
    result["transitions"] = transitions
    result["seconds"] = {k: round(v - marks["main"], 3) for k, v in marks.items()}
    return result


async def fail_many(breaker: Breaker, calls: int) -> dict[str, Any]:
    """``calls`` failing calls, yielding now and then so the runner flushes meanwhile."""
    failed = rejected = 0
    for i in range(calls):
        try:
            with breaker.guard():
                raise Boom
        except Boom:
            failed += 1
        except CircuitOpenError:
            rejected += 1
        if i % 25 == 24:
            await anyio.lowlevel.checkpoint()
    return {"failed": failed, "rejected": rejected}


async def probe(
    breaker: Breaker, client: redis.Redis, keys: dict[str, str], limit: float
) -> dict[str, Any]:
    """One call while HALF_OPEN; an admitted call holds its permit until released."""
    admitted = False
    released = False
    try:
        async with breaker.guard():
            admitted = True
            await blocking(client.incr, keys["dependency"])
            await blocking(client.rpush, keys["attempted"], "admitted")
            released = await blocking(client.blpop, [keys["release"]], timeout=limit) is not None
    except CircuitOpenError:
        await blocking(client.rpush, keys["attempted"], "rejected")
    return {"admitted": admitted, "released": released}


def serve(backend: str) -> None:
    import redis.asyncio  # noqa: F401  # imported before the hello: scenarios time only themselves

    with contextlib.suppress(ImportError):  # the PostgreSQL driver, for ``"store": "postgres"``
        import asyncpg  # noqa: F401

    if backend == "trio":
        import trio  # noqa: F401

    print(json.dumps({"hello": backend}), flush=True)
    for line in sys.stdin:
        config = {**json.loads(line), "backend": backend}
        try:
            outcome = anyio.run(main, config, backend=backend)
        except Exception:
            outcome = {"error": traceback.format_exc()}
        outcome["prefix"] = config["prefix"]  # which scenario this answers
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1])
