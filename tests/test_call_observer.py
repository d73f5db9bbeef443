"""Call observers: ``breaker.add_call_observer(fn)``, called with (outcome, duration).

Both runtimes, every way of guarding a call; an observer moves a breaker off its plain
fast path and removing the last one puts it back; a raising observer never reaches the
caller; a guard entered the fast way before an observer was added still exits cleanly.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from breaker_machines import (
    Breaker,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
    Outcome,
    ThreadedBreaker,
)


class Boom(Exception):
    pass


class Neutral(Exception):
    pass


class Recorder:
    """An observer keeping what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[Outcome, float]] = []

    def __call__(self, outcome: Outcome, duration: float) -> None:
        self.seen.append((outcome, duration))

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for outcome, _ in self.seen]


# ---------------------------------------------------------------------------- anyio


@pytest.mark.anyio
async def test_every_outcome_with_its_duration(clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=100, ignore=Neutral, clock=clock)
    seen = Recorder()
    breaker.add_call_observer(seen)

    async with breaker.guard():
        clock.advance(0.25)
    with breaker.guard():
        clock.advance(0.5)
    with pytest.raises(Boom), breaker.guard():
        clock.advance(1.0)
        raise Boom
    with pytest.raises(Neutral):
        async with breaker.guard():
            clock.advance(2.0)
            raise Neutral
    with anyio.CancelScope() as scope:
        async with breaker.guard():
            clock.advance(4.0)
            scope.cancel()
            await anyio.sleep(1)

    assert seen.seen == [
        (Outcome.SUCCESS, 0.25),
        (Outcome.SUCCESS, 0.5),
        (Outcome.FAILURE, 1.0),
        (Outcome.IGNORED, 2.0),
        (Outcome.CANCELLED, 4.0),
    ]
    stats = breaker.stats()
    assert (stats.successes, stats.failures, stats.ignored, stats.cancelled) == (2, 1, 1, 1)


@pytest.mark.anyio
async def test_call_and_the_decorator_are_observed(clock: Any) -> None:
    breaker = Breaker("svc", clock=clock, failure_if=lambda result: result == "bad")
    seen = Recorder()
    breaker.add_call_observer(seen)

    async def work(result: str) -> str:
        clock.advance(0.125)
        return result

    async def fail() -> None:
        clock.advance(0.375)
        raise Boom

    assert await breaker.call(work, "ok") == "ok"
    assert await breaker.call(work, "bad") == "bad"  # counted as a failure, still returned
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert await breaker(work)("ok") == "ok"

    plain = Breaker("plain", clock=clock)
    plain_seen = Recorder()
    plain.add_call_observer(plain_seen)
    assert await plain(work)("ok") == "ok"  # the decorator's plain form (guard only)

    assert seen.seen == [
        (Outcome.SUCCESS, 0.125),
        (Outcome.FAILURE, 0.125),
        (Outcome.FAILURE, 0.375),
        (Outcome.SUCCESS, 0.125),
    ]
    assert plain_seen.seen == [(Outcome.SUCCESS, 0.125)]


@pytest.mark.anyio
async def test_a_timeout_is_observed_as_a_timeout() -> None:
    breaker = Breaker("svc", timeout=0.01)
    seen = Recorder()
    breaker.add_call_observer(seen)
    with pytest.raises(CircuitTimeoutError):
        async with breaker.guard():
            await anyio.sleep(5)
    with pytest.raises(CircuitTimeoutError):
        await breaker.call(anyio.sleep, 5)
    assert seen.outcomes == [Outcome.TIMEOUT, Outcome.TIMEOUT]
    assert all(0.005 <= duration < 5 for _, duration in seen.seen)
    assert breaker.stats().timeouts == 2


@pytest.mark.anyio
async def test_rejections_are_not_observed(clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=1, max_concurrent=1, clock=clock)
    seen = Recorder()
    breaker.add_call_observer(seen)
    async with breaker.guard():
        with pytest.raises(BulkheadFullError):
            async with breaker.guard():
                pytest.fail("admitted")
    with pytest.raises(Boom):
        async with breaker.guard():
            raise Boom
    with pytest.raises(CircuitOpenError):
        async with breaker.guard():
            pytest.fail("admitted")
    assert seen.outcomes == [Outcome.SUCCESS, Outcome.FAILURE]


@pytest.mark.anyio
async def test_the_wait_for_a_bulkhead_slot_is_not_the_calls(clock: Any) -> None:
    breaker = Breaker("svc", max_concurrent=1, bulkhead_wait=10.0, clock=clock)
    seen = Recorder()
    breaker.add_call_observer(seen)
    entered = anyio.Event()
    release = anyio.Event()

    async def holder() -> None:
        async with breaker.guard():
            entered.set()
            await release.wait()
            clock.advance(3.0)  # the waiter's wait, not its call

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await entered.wait()
        release.set()
        async with breaker.guard():
            clock.advance(0.5)
    assert sorted(seen.seen, key=lambda item: item[1]) == [
        (Outcome.SUCCESS, 0.5),
        (Outcome.SUCCESS, 3.0),
    ]


def test_an_observer_takes_a_breaker_off_its_plain_path_and_back() -> None:
    breaker = Breaker("svc")
    assert breaker._plain
    assert not breaker._timed
    first, second = Recorder(), Recorder()
    breaker.add_call_observer(first)
    breaker.add_call_observer(second)
    assert not breaker._plain
    assert breaker._timed
    breaker.remove_call_observer(first)
    assert not breaker._plain
    breaker.remove_call_observer(second)
    assert breaker._plain
    assert not breaker._timed

    slow = Breaker("slow", slow_call_rate=0.5, slow_call_duration=1.0, window=60)
    slow.add_call_observer(first)
    slow.remove_call_observer(first)
    assert slow._timed  # timed for its slow-call rule whatever the observers
    assert not slow._plain


@pytest.mark.anyio
async def test_a_guard_entered_the_fast_way_exits_after_an_observer_is_added() -> None:
    breaker = Breaker("svc", consecutive_failures=100)
    seen = Recorder()
    async with breaker.guard():
        breaker.add_call_observer(seen)  # the guard entered on the plain path
    with pytest.raises(Boom):
        async with breaker.guard():
            breaker.remove_call_observer(seen)
            breaker.add_call_observer(seen)
            raise Boom
    guard = breaker.guard()
    breaker.remove_call_observer(seen)
    guard.__enter__()  # plain again
    breaker.add_call_observer(seen)
    assert await breaker.call(anyio.sleep, 0) is None
    guard.__exit__(None, None, None)
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (3, 1)
    # Calls that started unobserved are not observed; the others are.
    assert seen.outcomes == [Outcome.FAILURE, Outcome.SUCCESS]


@pytest.mark.anyio
async def test_slow_calls_still_count_with_an_observer(clock: Any) -> None:
    breaker = Breaker(
        "svc",
        slow_call_rate=0.5,
        slow_call_duration=1.0,
        window=60,
        minimum_calls=2,
        clock=clock,
    )
    seen = Recorder()
    breaker.add_call_observer(seen)
    for _ in range(2):
        async with breaker.guard():
            clock.advance(2.0)
    assert breaker.state.value == "open"
    assert seen.seen == [(Outcome.SUCCESS, 2.0)] * 2


@pytest.mark.anyio
async def test_a_raising_observer_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="breaker_machines")
    breaker = Breaker("svc")
    after = Recorder()

    def broken(outcome: Outcome, duration: float) -> None:
        raise RuntimeError("observer bug")

    breaker.add_call_observer(broken)
    breaker.add_call_observer(after)
    async with breaker.guard():
        pass
    assert await breaker.call(anyio.sleep, 0) is None
    assert after.outcomes == [Outcome.SUCCESS, Outcome.SUCCESS]  # the next one still runs
    assert breaker.stats().callback_errors == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(getattr(r, "callback", None) == "call_observer" for r in errors)
    assert all(getattr(r, "breaker", None) == "svc" for r in errors)


# ---------------------------------------------------------------------------- threaded


def test_threaded_outcomes_and_durations(clock: Any) -> None:
    breaker = ThreadedBreaker("svc", consecutive_failures=2, ignore=Neutral, clock=clock)
    seen = Recorder()
    breaker.add_call_observer(seen)

    def work() -> str:
        clock.advance(0.5)
        return "ok"

    with breaker.guard():
        clock.advance(0.25)
    assert breaker.call(work) == "ok"
    with pytest.raises(Neutral), breaker.guard():
        clock.advance(1.0)
        raise Neutral
    with pytest.raises(KeyboardInterrupt), breaker.guard():
        raise KeyboardInterrupt
    for _ in range(2):
        with pytest.raises(Boom), breaker.guard():
            clock.advance(2.0)
            raise Boom
    with pytest.raises(CircuitOpenError), breaker.guard():
        pytest.fail("admitted")
    assert seen.seen == [
        (Outcome.SUCCESS, 0.25),
        (Outcome.SUCCESS, 0.5),
        (Outcome.IGNORED, 1.0),
        (Outcome.CANCELLED, 0.0),
        (Outcome.FAILURE, 2.0),
        (Outcome.FAILURE, 2.0),
    ]
    breaker.remove_call_observer(seen)
    assert not breaker._timed
    breaker.force_close()
    with breaker.guard():
        pass
    assert len(seen.seen) == 6


def test_threaded_raising_observer_and_bulkhead(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="breaker_machines")
    breaker = ThreadedBreaker("svc", max_concurrent=1)

    def broken(outcome: Outcome, duration: float) -> None:
        raise RuntimeError("observer bug")

    seen = Recorder()
    breaker.add_call_observer(broken)
    breaker.add_call_observer(seen)
    with breaker.guard(), pytest.raises(BulkheadFullError), breaker.guard():
        pytest.fail("admitted")
    assert seen.outcomes == [Outcome.SUCCESS]
    assert breaker.stats().callback_errors == 1


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("runtime", [Breaker, ThreadedBreaker])
def test_bad_observers_are_config_errors(runtime: Any) -> None:
    breaker = runtime("svc")
    seen = Recorder()

    async def coroutine_function(outcome: Outcome, duration: float) -> None:
        pass

    bad: list[Any] = [None, 42, lambda: None, lambda outcome: None, coroutine_function]
    for observer in bad:
        with pytest.raises(ConfigError) as caught:
            breaker.add_call_observer(observer)
        assert caught.value.field == "observer"
    breaker.add_call_observer(seen)
    with pytest.raises(ConfigError, match="already observing"):
        breaker.add_call_observer(seen)
    breaker.remove_call_observer(seen)
    with pytest.raises(ConfigError, match="not observing"):
        breaker.remove_call_observer(seen)
    assert breaker._observers == ()
