"""The seed's scenarios (BreakerMachines' Falcon example), under asyncio and trio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from breaker_machines import Breaker, CircuitOpenError, CircuitTimeoutError, State, running

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom("upstream down")


async def succeed() -> str:
    return "data"


async def fail_through(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Boom), breaker.guard():
            await fail()


async def test_five_failures_within_sixty_seconds_open_it(clock: Any) -> None:
    breaker = Breaker("external_api", failures=5, within=60, reset_after=30, clock=clock)
    for _ in range(4):
        with pytest.raises(Boom), breaker.guard():
            await fail()
        clock.advance(10)  # 4 failures over 40 s: still inside the window
    assert breaker.state is State.CLOSED
    with pytest.raises(Boom), breaker.guard():
        await fail()
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError) as caught, breaker.guard():
        pytest.fail("an open circuit must not run the call")
    assert caught.value.name == "external_api"
    assert caught.value.retry_after == pytest.approx(30.0)


async def test_failures_spread_wider_than_the_window_do_not_open_it(clock: Any) -> None:
    breaker = Breaker("external_api", failures=5, within=60, reset_after=30, clock=clock)
    for _ in range(10):
        await fail_through(breaker, 1)
        clock.advance(20)  # at most 3 failures fall into any 60 s window
    assert breaker.state is State.CLOSED
    assert breaker.stats().failures == 10


async def test_after_thirty_seconds_one_probe_is_admitted_and_a_success_closes_it(
    clock: Any,
) -> None:
    breaker = Breaker("external_api", failures=5, within=60, reset_after=30, clock=clock)
    await fail_through(breaker, 5)
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed)
    clock.advance(0.1)
    reached = 0
    release = anyio.Event()

    async def probe() -> str:
        nonlocal reached
        reached += 1
        await release.wait()
        return "data"

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, probe)
        await _until(lambda: reached == 1)
        assert breaker.state is State.HALF_OPEN
        with pytest.raises(CircuitOpenError):  # the only probe permit is taken
            await breaker.call(succeed)
        release.set()
    assert reached == 1
    assert breaker.state is State.CLOSED
    assert await breaker.call(succeed) == "data"


async def _until(condition: Any) -> None:
    """Yield to other tasks until ``condition()`` holds (bounded, no sleeping)."""
    for _ in range(1000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition never held")


async def test_a_three_second_timeout_counts_as_a_failure_and_the_caller_gets_the_fallback(
    anyio_backend: str,
) -> None:
    seen: list[BaseException] = []

    def fallback(error: BaseException) -> dict[str, Any]:
        seen.append(error)
        return {"error": "Service temporarily unavailable", "cached": True}

    breaker = Breaker("external_api", failures=5, within=60, timeout=3, fallback=fallback)
    never = anyio.Event()
    with anyio.fail_after(10):
        result = await breaker.call(never.wait)
    assert result == {"error": "Service temporarily unavailable", "cached": True}
    assert isinstance(seen[0], CircuitTimeoutError)
    assert isinstance(seen[0], TimeoutError)
    stats = breaker.stats()
    assert stats.timeouts == 1
    assert stats.failures_in_window == 1


async def test_the_fallback_receives_the_error() -> None:
    received: list[BaseException] = []

    async def fallback(error: BaseException) -> str:
        received.append(error)
        return "cached"

    breaker = Breaker("external_api", consecutive_failures=2, fallback=fallback)
    assert await breaker.call(fail) == "cached"
    assert isinstance(received[0], Boom)
    assert await breaker.call(fail) == "cached"  # this one opens the circuit
    assert await breaker.call(succeed) == "cached"
    assert isinstance(received[2], CircuitOpenError)


async def test_an_async_on_open_runs_without_delaying_the_caller() -> None:
    started = anyio.Event()
    may_finish = anyio.Event()
    finished = anyio.Event()

    async def on_open() -> None:
        started.set()
        await may_finish.wait()
        finished.set()

    breaker = Breaker("external_api", consecutive_failures=1, on_open=on_open)
    async with running(breaker):
        with pytest.raises(Boom), breaker.guard():
            await fail()
        # The caller is back although on_open cannot finish yet.
        assert breaker.state is State.OPEN
        assert not finished.is_set()
        with anyio.fail_after(5):
            await started.wait()
        may_finish.set()
        with anyio.fail_after(5):
            await finished.wait()


async def test_a_hundred_concurrent_failures_count_exactly_a_hundred() -> None:
    breaker = Breaker("external_api", failures=1000, within=60)
    gate = anyio.Event()

    async def one() -> None:
        with pytest.raises(Boom), breaker.guard():
            await gate.wait()
            raise Boom

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    stats = breaker.stats()
    assert stats.failures == 100
    assert stats.failures_in_window == 100
    assert breaker.state is State.CLOSED
