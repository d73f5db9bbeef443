"""A sync ``with guard()`` on a shared HALF_OPEN circuit: it uses a permit the runner reserved."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from breaker_machines import Breaker, CircuitOpenError, State
from breaker_machines.storage import RedisStorage

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def test_a_sync_guard_probes_with_a_reserved_permit(
    redis_url: str, redis_prefix: str, clock: Any
) -> None:
    with anyio.fail_after(30):
        async with RedisStorage(redis_url, prefix=redis_prefix, flush_interval=3600) as storage:
            breaker = Breaker(
                "sync-probe",
                storage=storage,
                clock=clock,
                consecutive_failures=1,
                reset_after=10.0,
                half_open_probes=1,
            )
            await breaker.sync()
            with pytest.raises(Boom), breaker.guard():
                raise Boom
            await breaker.sync()  # the trip is written
            assert breaker.state is State.OPEN
            clock.advance(11.0)
            storage.advance_clock(11.0)
            # A sync guard cannot wait for the fleet: the first one is turned away at once
            # and asks the runner for a permit.
            with pytest.raises(CircuitOpenError) as refused, breaker.guard():
                pass
            assert refused.value.retry_after == 0.0
            assert breaker.state is State.HALF_OPEN
            await breaker.sync()  # writes HALF_OPEN, then reserves a fleet permit
            replica = breaker._replica
            assert replica is not None
            assert replica.reserved is not None
            with breaker.guard():  # the next sync caller probes with that permit
                pass
            assert replica.reserved is None
            await breaker.sync()  # the probe's success reaches the fleet
            assert breaker.state is State.CLOSED
            assert breaker.stats().rejections == 1
