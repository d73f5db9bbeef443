"""When the runner flushes: at ``flush_size`` at once, otherwise after ``flush_interval``.

A storage that holds its first flush until the test lets it go (wrapping the real Redis
storage) shows what the runner does with outcomes counted while a flush is on its way.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from breaker_machines import Breaker, Policy
from breaker_machines.storage import (
    Batch,
    Proposal,
    RedisStorage,
    SharedRecord,
    SharedStorage,
)
from breaker_machines.storage.shared import Watcher

pytestmark = pytest.mark.anyio


class HeldStorage(SharedStorage):
    """The real storage, except that its first flush of outcomes waits for ``release``."""

    def __init__(self, inner: RedisStorage, *, flush_size: int, flush_interval: float) -> None:
        self.inner = inner
        self._configure(
            flush_interval=flush_interval,
            flush_size=flush_size,
            refresh_interval=3600.0,
            timeout=10.0,
        )
        self.flushes: list[Batch] = []
        self.held = anyio.Event()
        self.release = anyio.Event()
        self.done = anyio.Event()

    async def __aenter__(self) -> HeldStorage:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    async def flush(self, name: str, policy: Policy, batch: Batch) -> SharedRecord:
        if batch.outcomes:
            self.flushes.append(batch)
        first = len(self.flushes) == 1 and bool(batch.outcomes)
        if first:
            self.held.set()
            await self.release.wait()
        try:
            return await self.inner.flush(name, policy, batch)
        finally:
            if first:
                self.done.set()

    async def propose(
        self, name: str, expected: int, proposal: Proposal, *, force: bool = False
    ) -> tuple[bool, SharedRecord]:
        return await self.inner.propose(name, expected, proposal, force=force)

    async def acquire_probe(
        self, name: str, version: int, limit: int, lease: float, token: str
    ) -> tuple[bool, SharedRecord]:
        return await self.inner.acquire_probe(name, version, limit, lease, token)

    def watch(self, name: str, watcher: Watcher) -> Callable[[], None]:
        return self.inner.watch(name, watcher)


async def settle() -> None:
    """Let every task run until it waits (the runner decides what it does next)."""
    for _ in range(3):
        await anyio.wait_all_tasks_blocked()
        await anyio.lowlevel.checkpoint()


async def test_outcomes_counted_during_a_flush_wait_for_the_interval(
    redis_url: str, redis_prefix: str
) -> None:
    clock_now = [1000.0]
    with anyio.fail_after(30):
        async with HeldStorage(
            RedisStorage(redis_url, prefix=redis_prefix), flush_size=2, flush_interval=10.0
        ) as storage:
            breaker = Breaker("svc", storage=storage, clock=lambda: clock_now[0])
            async with anyio.create_task_group() as tg:
                await tg.start(breaker.run)
                for _ in range(2):  # flush_size: flushed at once
                    with breaker.guard():
                        pass
                await storage.held.wait()
                with breaker.guard():  # counted while the flush is on its way
                    pass
                storage.release.set()
                await storage.done.wait()
                await settle()
                assert [b.outcomes for b in storage.flushes] == ["ss"]
                assert breaker.stats().unflushed == 1  # waits for flush_interval
                assert breaker.stats().delivered == 2
                tg.cancel_scope.cancel()


async def test_flush_size_one_writes_every_outcome_through(
    redis_url: str, redis_prefix: str
) -> None:
    with anyio.fail_after(30):
        async with HeldStorage(
            RedisStorage(redis_url, prefix=redis_prefix), flush_size=1, flush_interval=3600.0
        ) as storage:
            storage.release.set()
            breaker = Breaker("svc", storage=storage)
            async with anyio.create_task_group() as tg:
                await tg.start(breaker.run)
                with breaker.guard():
                    pass
                await storage.done.wait()
                await settle()
                assert [b.outcomes for b in storage.flushes] == ["s"]
                assert breaker.stats().delivered == 1
                tg.cancel_scope.cancel()
