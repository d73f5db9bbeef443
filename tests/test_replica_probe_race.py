"""The first half-open probe of a process whose OPEN -> HALF_OPEN write lost to another's.

Every process of a fleet reaches ``retry_at`` at about the same moment, so several decide
the same OPEN -> HALF_OPEN transition and race to write it; one compare-and-set wins and
the others adopt the winner's record: a new local generation, HALF_OPEN as well, with every
permit of the fleet still free. A guard admitted as a probe in the losing generation holds
a local permit that adoption voided. It must ask again in the generation now current, not
be refused as if the fleet's permits were all out (``CircuitOpenError`` with ``retry_after
= probe_lease``): that refusal was the rare flake of
``test_logging.py::test_the_fleet_refusing_a_probe``.

The racy orders are driven step by step (no runners, no sleeps), against Redis and
PostgreSQL, under asyncio and trio: the rival's write lands before this process's write
(decided by a guard, or by the runner's on-time tick), or the listener delivers the
rival's transition while this process's write is on its way. The fleet still admits one
probe at a time: the other process is refused while the first probe runs. A guard racing
its own runner's write of the same transition waits for that write and probes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from tests.conftest import Opener

from breaker_machines import Breaker, CircuitOpenError, State
from breaker_machines.storage import Proposal, SharedRecord, SharedStorage

pytestmark = pytest.mark.anyio

LIMIT = 30.0
NAME = "probe race"
LEASE = 60.0


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


@asynccontextmanager
async def open_fleet(open_storage: Opener, clock: Any) -> AsyncIterator[tuple[Breaker, Breaker]]:
    """Breakers ``a`` and ``b`` (each on a storage of its own), tripped by ``a``, both OPEN,
    both clocks past ``reset_after``. No runners: each test drives the steps itself."""
    options: dict[str, Any] = {
        "consecutive_failures": 1,
        "reset_after": 10.0,
        "half_open_probes": 1,
        "probe_lease": LEASE,
        "clock": clock,
    }
    async with open_storage() as store_a, open_storage() as store_b:
        a = Breaker(NAME, storage=store_a, **options)
        b = Breaker(NAME, storage=store_b, **options)
        await a.sync()
        await b.sync()
        with pytest.raises(Boom):
            await a.call(fail)
        await a.sync()
        await b.sync()
        assert a.state is State.OPEN
        assert b.state is State.OPEN
        clock.advance(10.5)
        store_a.advance_clock(10.5)
        store_b.advance_clock(10.5)
        yield a, b


def storage_of(breaker: Breaker) -> SharedStorage:
    replica = breaker._replica
    assert replica is not None
    return replica.storage


async def write_half_open(b: Breaker) -> None:
    """``b``'s runner wakes on time and writes OPEN -> HALF_OPEN (it wins the race)."""
    b._tick()
    assert b.state is State.HALF_OPEN
    await b.sync()
    replica = b._replica
    assert replica is not None
    assert not replica.unwritten()


async def probe_alone(a: Breaker, b: Breaker) -> None:
    """``a`` is admitted as the fleet's one probe; ``b`` is refused meanwhile."""
    store = storage_of(a)
    async with a.guard():
        assert a.state is State.HALF_OPEN
        assert (await store.inspect(NAME)).record.probes == 1
        with pytest.raises(CircuitOpenError) as refused:
            async with b.guard():
                pytest.fail("the fleet admitted a second probe")
        assert refused.value.retry_after == LEASE
    assert a.stats().rejections == 0
    await a.sync()  # the probe's success reaches the fleet: it closes
    await b.sync()
    assert a.state is State.CLOSED
    assert b.state is State.CLOSED


@pytest.mark.parametrize("decided_by", ["guard", "runner"])
async def test_a_probe_after_losing_the_half_open_write(
    open_storage: Opener, clock: Any, decided_by: str
) -> None:
    with anyio.fail_after(LIMIT):
        async with open_fleet(open_storage, clock) as (a, b):
            if decided_by == "runner":
                a._tick()  # a's runner decided HALF_OPEN too; its write has not gone yet
                assert a.state is State.HALF_OPEN
            await write_half_open(b)
            # a's guard is admitted as a probe in a's own HALF_OPEN generation; its write
            # loses the compare-and-set and a adopts b's record: a new generation.
            await probe_alone(a, b)


async def test_a_probe_when_the_listener_delivers_the_rival_write_first(
    open_storage: Opener, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(LIMIT):
        async with open_fleet(open_storage, clock) as (a, b):
            store_a = storage_of(a)
            replica = a._replica
            assert replica is not None
            propose = store_a.propose
            delivered: list[SharedRecord] = []

            async def rival_first(
                name: str, expected: int, proposal: Proposal, *, force: bool = False
            ) -> tuple[bool, SharedRecord]:
                if not delivered:  # while a's write is on its way, b's lands and is published
                    await write_half_open(b)
                    record = (await store_a.inspect(NAME)).record
                    delivered.append(record)
                    replica.observe(record)  # what a's listener does with the message
                    assert a.state is State.HALF_OPEN
                return await propose(name, expected, proposal, force=force)

            monkeypatch.setattr(store_a, "propose", rival_first)
            await probe_alone(a, b)
            assert delivered


async def test_a_guard_waits_for_its_own_runners_write(
    open_storage: Opener, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(LIMIT):
        async with open_fleet(open_storage, clock) as (a, b):
            store_a = storage_of(a)
            replica = a._replica
            assert replica is not None
            propose = store_a.propose
            writing = anyio.Event()
            go_on = anyio.Event()

            async def held(
                name: str, expected: int, proposal: Proposal, *, force: bool = False
            ) -> tuple[bool, SharedRecord]:
                writing.set()
                await go_on.wait()
                return await propose(name, expected, proposal, force=force)

            monkeypatch.setattr(store_a, "propose", held)
            a._tick()  # a's runner decides HALF_OPEN and starts writing it
            admitted = anyio.Event()

            async def guard() -> None:
                async with a.guard():
                    admitted.set()
                    with pytest.raises(CircuitOpenError):
                        async with b.guard():
                            pytest.fail("the fleet admitted a second probe")

            async with anyio.create_task_group() as tg:
                tg.start_soon(replica.service)  # the runner's pass: its write is held
                await writing.wait()
                tg.start_soon(guard)  # admitted locally; waits for the runner's write
                lock = replica.lock
                assert lock is not None
                while not lock.statistics().tasks_waiting:
                    await anyio.lowlevel.checkpoint()
                assert not admitted.is_set()
                go_on.set()
            assert admitted.is_set()
            assert a.stats().rejections == 0
