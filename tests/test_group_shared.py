"""Groups across processes: a cascade decided in one process opens the dependents another
process holds, and a dependency's fleet-wide state holds a dependent's recovery there.

Two storages on the same server stand for two processes (each with a group of its own),
against Redis and PostgreSQL, under asyncio and trio. No runners: the test syncs by hand.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import anyio
import pytest
from tests.conftest import FakeClock, Opener
from tests.helpers import Boom, fail, succeed

from breaker_machines import (
    Breaker,
    BreakerGroup,
    Cascade,
    CircuitOpenError,
    State,
)

pytestmark = pytest.mark.anyio


MEMBERS: dict[str, dict[str, Any]] = {
    "db": {},
    "api": {"depends_on": ["db"]},
    "search": {},
    "edge": {"cascades_to": ["search"]},
}


async def sync_all(*groups: BreakerGroup) -> None:
    for group in groups:
        for breaker in group.breakers():
            await breaker.sync()


async def test_a_cascade_opens_the_dependents_of_another_process(
    open_storage: Opener, clock: FakeClock
) -> None:
    name = f"shop-{uuid.uuid4().hex[:8]}"
    seen_a: list[Cascade] = []
    seen_b: list[Cascade] = []
    options: dict[str, Any] = {"consecutive_failures": 1, "reset_after": 60.0, "clock": clock}
    async with open_storage() as store_a, open_storage() as store_b:
        a = BreakerGroup(name, MEMBERS, storage=store_a, on_cascade=seen_a.append, **options)
        b = BreakerGroup(name, MEMBERS, storage=store_b, on_cascade=seen_b.append, **options)
        lone = Breaker(f"{name}.search", storage=store_b, **options)  # no group at all
        await sync_all(a, b)
        await lone.sync()

        with pytest.raises(Boom):
            await a["edge"].call(fail)
        await a["edge"].sync()  # edge's OPEN is written: process a cascades...
        assert a["search"].state is State.FORCED_OPEN
        await a["search"].sync()  # ...and writes search's FORCED_OPEN
        await sync_all(b)
        await lone.sync()
        assert b["edge"].state is State.OPEN
        assert b["search"].state is State.FORCED_OPEN
        assert lone.state is State.FORCED_OPEN
        for breaker in (b["search"], lone):
            with pytest.raises(CircuitOpenError):
                await breaker.call(succeed)
        # The alert went out once for the fleet: from the process that decided the trip.
        assert [c.targets for c in seen_a] == [("search",)]
        assert seen_b == []

        a["edge"].reset()  # edge recovers in process a: what it forced is released
        await a["edge"].sync()  # (announced once written: then the group resets search)
        assert a["search"].state is State.CLOSED
        await sync_all(a)
        await sync_all(b)
        await lone.sync()
        assert b["search"].state is State.CLOSED
        assert lone.state is State.CLOSED
        assert await lone.call(succeed) == "ok"


async def test_recovery_waits_for_the_fleets_view_of_the_dependency(
    open_storage: Opener, clock: FakeClock
) -> None:
    name = f"shop-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"consecutive_failures": 1, "reset_after": 10.0, "clock": clock}
    async with open_storage() as store_a, open_storage() as store_b:
        a = BreakerGroup(name, MEMBERS, storage=store_a, **options)
        b = BreakerGroup(name, MEMBERS, storage=store_b, **options)
        await sync_all(a, b)
        with pytest.raises(Boom):
            await a["db"].call(fail)  # db trips in process a
        with pytest.raises(Boom):
            await b["api"].call(fail)  # api trips in process b
        await sync_all(a, b)
        assert b["db"].state is State.OPEN  # b sees db's trip through the storage
        a["db"].force_open()  # and db stays down (an operator holds it)
        await sync_all(a, b)
        clock.advance(10.5)
        for store in (store_a, store_b):
            store.advance_clock(10.5)
        with pytest.raises(CircuitOpenError) as held:
            await b["api"].call(succeed)  # due, but db is down for the fleet
        assert held.value.retry_after is None
        assert b["api"].state is State.OPEN
        a["db"].reset()  # db comes back in process a
        await sync_all(a, b)
        assert b["db"].state is State.CLOSED
        assert await b["api"].call(succeed) == "ok"  # now b's api probes
        await sync_all(b)
        assert b["api"].state is State.CLOSED


#: Another OS process: a lone breaker on the same storage, which tries one call.
OTHER_PROCESS = """
import sys, anyio
from breaker_machines import Breaker, CircuitOpenError
from breaker_machines.storage import PostgresStorage, RedisStorage

kind, where, place, name = sys.argv[1:5]

async def main():
    storage = (
        RedisStorage(where, prefix=place) if kind == "redis"
        else PostgresStorage(where, schema=place)
    )
    async with storage:
        breaker = Breaker(name, storage=storage)
        await breaker.sync()  # adopts the stored state
        async def call():
            return "admitted"
        try:
            print(breaker.state.value, await breaker.call(call))
        except CircuitOpenError:
            print(breaker.state.value, "rejected")

anyio.run(main)
"""


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_another_os_process_rejects_what_a_cascade_forced(
    kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "redis":
        from breaker_machines.storage import RedisStorage

        where = request.getfixturevalue("redis_url")
        place = request.getfixturevalue("redis_prefix")
        storage: Any = RedisStorage(where, prefix=place)
    else:
        from breaker_machines.storage import PostgresStorage

        where = request.getfixturevalue("postgres_dsn")
        place = request.getfixturevalue("postgres_schema")
        storage = PostgresStorage(where, schema=place)
    name = f"shop-{uuid.uuid4().hex[:8]}"

    async def other_process() -> str:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-c", OTHER_PROCESS, kind, where, place, f"{name}.search"]
            )
        return done.stdout.decode().strip()

    async with storage:
        group = BreakerGroup(name, MEMBERS, storage=storage, consecutive_failures=1)
        await sync_all(group)
        assert await other_process() == "closed admitted"
        with pytest.raises(Boom):
            await group["edge"].call(fail)
        await sync_all(group)  # edge's OPEN is written, then search's FORCED_OPEN
        await sync_all(group)
        assert group["search"].state is State.FORCED_OPEN
        assert await other_process() == "forced_open rejected"
        group["edge"].reset()
        await sync_all(group)
        await sync_all(group)
        assert await other_process() == "closed admitted"
