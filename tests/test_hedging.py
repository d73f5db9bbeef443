"""Hedged requests: ``Breaker.hedged`` and ``Breaker.hedged_race``.

No test sleeps to wait for something: attempts that must lose hang on events nobody sets
(or ``sleep_forever``), and the order of events is forced with events. A ``delay`` of an
hour proves an attempt was started by a failure rather than by the delay; ``fail_after``
around such a test only keeps a broken implementation from hanging the run.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from breaker_machines import (
    Breaker,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
    FailedResultError,
    State,
)

pytestmark = pytest.mark.anyio

HOUR = 3600.0  # a delay that never runs out during a test
SAFETY = 30.0  # fail_after around tests that would hang if the implementation were wrong


class Boom(Exception):
    pass


class Harmless(Exception):
    pass


class Attempts:
    """Numbered attempts of one hedged call: which started, which were cancelled."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.started_events: dict[int, anyio.Event] = {}

    def started_event(self, number: int) -> anyio.Event:
        return self.started_events.setdefault(number, anyio.Event())

    def __call__(self, behaviour: Callable[[int], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """An attempt function: each call is the next attempt, numbered from 1."""

        async def attempt() -> Any:
            number = len(self.started) + 1
            self.started.append(number)
            self.started_event(number).set()
            try:
                return await behaviour(number)
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(number)
                raise

        return attempt


def task_count() -> int:
    return len(anyio.get_running_tasks())


# --------------------------------------------------------------------------- winning


async def test_a_hanging_first_attempt_loses_to_the_second_and_is_cancelled() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        if number == 1:
            await anyio.sleep_forever()
        return f"attempt {number}"

    before = task_count()
    result = await breaker.hedged(attempts(behaviour), delay=0.01)
    assert result == "attempt 2"
    assert attempts.started == [1, 2]
    assert attempts.cancelled == [1]
    assert task_count() == before  # nothing outlives the call


async def test_a_won_race_records_one_success() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        if number < 3:
            await anyio.sleep_forever()
        return "third"

    assert await breaker.hedged(attempts(behaviour), delay=0.01, max_attempts=3) == "third"
    stats = breaker.stats()
    assert (stats.successes, stats.failures, stats.timeouts, stats.cancelled) == (1, 0, 0, 0)
    assert sorted(attempts.cancelled) == [1, 2]


async def test_a_quick_first_attempt_starts_no_other() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> int:
        await anyio.lowlevel.checkpoint()
        return number

    assert await breaker.hedged(attempts(behaviour), delay=HOUR, max_attempts=5) == 1
    assert attempts.started == [1]
    assert breaker.stats().successes == 1


async def test_arguments_are_passed_to_every_attempt() -> None:
    breaker = Breaker("svc")
    seen: list[tuple[str, int]] = []

    async def fetch(key: str, *, retries: int) -> str:
        seen.append((key, retries))
        if len(seen) == 1:
            await anyio.sleep_forever()
        return key * retries

    assert await breaker.hedged(fetch, "ab", retries=2, delay=0.01) == "abab"
    assert seen == [("ab", 2), ("ab", 2)]


async def test_an_early_failure_starts_the_next_attempt_at_once() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        if number == 1:
            raise Boom("fails fast")
        return "second"

    with anyio.fail_after(SAFETY):  # with delay=HOUR, only the failure can start attempt 2
        assert await breaker.hedged(attempts(behaviour), delay=HOUR) == "second"
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (1, 0)


async def test_an_early_failure_does_not_beat_a_later_success() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()
    first_failed = anyio.Event()

    async def behaviour(number: int) -> str:
        if number == 1:
            await attempts.started_event(2).wait()
            first_failed.set()
            raise Boom("primary")
        await first_failed.wait()  # succeeds only after the primary failed
        return "second"

    assert await breaker.hedged(attempts(behaviour), delay=0.01) == "second"
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (1, 0)
    assert stats.consecutive_failures == 0


async def test_each_failure_starts_one_more_attempt() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        if number < 4:
            raise Boom(number)
        return "fourth"

    with anyio.fail_after(SAFETY):
        result = await breaker.hedged(attempts(behaviour), delay=HOUR, max_attempts=4)
    assert result == "fourth"
    assert attempts.started == [1, 2, 3, 4]


# --------------------------------------------------------------------------- losing


async def test_when_every_attempt_fails_the_primarys_error_is_raised_once_recorded() -> None:
    breaker = Breaker("svc", consecutive_failures=5)
    attempts = Attempts()
    second_failed = anyio.Event()

    async def behaviour(number: int) -> None:
        if number == 1:
            await second_failed.wait()  # the primary fails last
            raise Boom("primary")
        second_failed.set()
        raise Boom(f"attempt {number}")

    with pytest.raises(Boom, match=r"^primary$"):
        await breaker.hedged(attempts(behaviour), delay=0.01)
    stats = breaker.stats()
    assert (stats.successes, stats.failures, stats.cancelled) == (0, 1, 0)
    assert stats.consecutive_failures == 1
    assert attempts.cancelled == []


async def test_a_primary_that_fails_first_is_still_the_error_raised() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> None:
        raise Boom(f"attempt {number}")

    with anyio.fail_after(SAFETY), pytest.raises(Boom, match=r"^attempt 1$"):
        await breaker.hedged(attempts(behaviour), delay=HOUR, max_attempts=3)
    assert attempts.started == [1, 2, 3]
    assert breaker.stats().failures == 1


async def test_every_attempt_failing_applies_the_fallback_with_the_primarys_error() -> None:
    answered: list[BaseException] = []

    def fallback(error: BaseException) -> str:
        answered.append(error)
        return "fallback"

    breaker = Breaker("svc", fallback=fallback)
    attempts = Attempts()

    async def behaviour(number: int) -> None:
        raise Boom(f"attempt {number}")

    with anyio.fail_after(SAFETY):
        assert await breaker.hedged(attempts(behaviour), delay=HOUR) == "fallback"
    assert [str(error) for error in answered] == ["attempt 1"]
    assert breaker.stats().failures == 1


async def test_an_ignored_primary_error_is_raised_and_not_counted() -> None:
    breaker = Breaker("svc", ignore=Harmless, fallback="unused")

    async def behaviour(number: int) -> None:
        raise Harmless

    with anyio.fail_after(SAFETY), pytest.raises(Harmless):
        await breaker.hedged(Attempts()(behaviour), delay=HOUR)
    stats = breaker.stats()
    assert (stats.failures, stats.ignored) == (0, 1)


async def test_all_failed_races_trip_the_breaker_one_call_at_a_time() -> None:
    breaker = Breaker("svc", consecutive_failures=2)

    async def behaviour(number: int) -> None:
        raise Boom

    for _ in range(2):
        with anyio.fail_after(SAFETY), pytest.raises(Boom):
            await breaker.hedged(Attempts()(behaviour), delay=HOUR, max_attempts=3)
    assert breaker.state is State.OPEN
    assert breaker.stats().failures == 2


# --------------------------------------------------------------------------- the breaker around it


async def test_the_breakers_timeout_bounds_the_whole_hedged_call() -> None:
    breaker = Breaker("svc", timeout=0.2)
    attempts = Attempts()

    async def behaviour(number: int) -> None:
        await anyio.sleep_forever()

    before = task_count()
    with pytest.raises(CircuitTimeoutError):
        await breaker.hedged(attempts(behaviour), delay=0.01, max_attempts=3)
    assert attempts.started  # how many started depends on timing: every one was cancelled
    assert sorted(attempts.cancelled) == attempts.started
    stats = breaker.stats()
    assert (stats.timeouts, stats.failures, stats.successes) == (1, 0, 0)
    assert task_count() == before


async def test_a_timed_out_hedged_call_is_answered_by_the_fallback() -> None:
    breaker = Breaker("svc", timeout=0.05, fallback=lambda error: type(error).__name__)

    async def behaviour(number: int) -> None:
        await anyio.sleep_forever()

    result = await breaker.hedged(Attempts()(behaviour), delay=0.01)
    assert result == "CircuitTimeoutError"
    assert breaker.stats().timeouts == 1


async def test_an_open_breaker_runs_no_attempt_and_applies_the_fallback() -> None:
    breaker = Breaker("svc", fallback=lambda error: type(error).__name__)
    breaker.force_open()
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        return "ran"

    assert await breaker.hedged(attempts(behaviour), delay=0.01) == "CircuitOpenError"
    assert await breaker.hedged_race([attempts(behaviour)], delay=0) == "CircuitOpenError"
    assert attempts.started == []
    assert breaker.stats().rejections == 2


async def test_an_open_breaker_without_fallback_raises_circuit_open() -> None:
    breaker = Breaker("svc")
    breaker.force_open()
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        return "ran"

    with pytest.raises(CircuitOpenError):
        await breaker.hedged(attempts(behaviour))
    assert attempts.started == []


async def test_a_cancellation_from_outside_cancels_every_attempt_and_is_neutral() -> None:
    breaker = Breaker("svc")
    attempts = Attempts()

    async def behaviour(number: int) -> None:
        await anyio.sleep_forever()

    before = task_count()
    async with anyio.create_task_group() as tg:

        async def hedge() -> None:
            await breaker.hedged(attempts(behaviour), delay=0, max_attempts=3)

        tg.start_soon(hedge)
        for number in (1, 2, 3):
            await attempts.started_event(number).wait()
        tg.cancel_scope.cancel()
    assert sorted(attempts.cancelled) == [1, 2, 3]
    stats = breaker.stats()
    assert (stats.cancelled, stats.failures, stats.successes) == (1, 0, 0)
    assert task_count() == before


async def test_a_hedged_call_takes_one_bulkhead_slot() -> None:
    breaker = Breaker("svc", max_concurrent=1)
    attempts = Attempts()

    async def behaviour(number: int) -> int:
        if number == 1:
            await anyio.sleep_forever()
        return number

    assert await breaker.hedged(attempts(behaviour), delay=0.01) == 2
    assert breaker.stats().bulkhead_rejections == 0


# --------------------------------------------------------------------------- failure_if


async def test_a_refused_result_does_not_win_and_starts_the_next_attempt() -> None:
    breaker = Breaker("svc", failure_if=lambda result: result["status"] >= 500)
    attempts = Attempts()

    async def behaviour(number: int) -> dict[str, int]:
        return {"status": 503 if number == 1 else 200, "attempt": number}

    with anyio.fail_after(SAFETY):
        result = await breaker.hedged(attempts(behaviour), delay=HOUR)
    assert result == {"status": 200, "attempt": 2}
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (1, 0)


async def test_when_every_result_is_refused_the_primarys_is_returned_as_a_failure() -> None:
    breaker = Breaker("svc", failure_if=lambda result: result["status"] >= 500)
    attempts = Attempts()
    second_done = anyio.Event()

    async def behaviour(number: int) -> dict[str, int]:
        if number == 1:
            await second_done.wait()
        else:
            second_done.set()
        return {"status": 500 + number, "attempt": number}

    result = await breaker.hedged(attempts(behaviour), delay=0.01)
    assert result == {"status": 501, "attempt": 1}
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (0, 1)


async def test_a_refused_result_beats_errors_and_goes_to_the_fallback() -> None:
    answered: list[BaseException] = []

    def fallback(error: BaseException) -> str:
        answered.append(error)
        return "fallback"

    breaker = Breaker("svc", failure_if=lambda result: result == "bad", fallback=fallback)
    attempts = Attempts()

    async def behaviour(number: int) -> str:
        if number == 1:
            raise Boom("primary")
        return "bad"

    with anyio.fail_after(SAFETY):
        assert await breaker.hedged(attempts(behaviour), delay=HOUR) == "fallback"
    assert len(answered) == 1
    assert isinstance(answered[0], FailedResultError)
    assert answered[0].result == "bad"
    assert breaker.stats().failures == 1


# --------------------------------------------------------------------------- hedged_race


async def test_hedged_race_with_no_delay_starts_every_backend_at_once() -> None:
    breaker = Breaker("svc")
    started: list[str] = []
    cancelled: list[str] = []
    everyone_started = anyio.Event()

    def backend(name: str, *, wins: bool) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            started.append(name)
            if len(started) == 3:
                everyone_started.set()
            try:
                await everyone_started.wait()  # nobody answers before all three run
                if not wins:
                    await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(name)
                raise
            return name

        return run

    before = task_count()
    with anyio.fail_after(SAFETY):
        result = await breaker.hedged_race(
            [backend("a", wins=False), backend("b", wins=True), backend("c", wins=False)],
            delay=0,
        )
    assert result == "b"
    assert sorted(started) == ["a", "b", "c"]
    assert sorted(cancelled) == ["a", "c"]
    assert task_count() == before
    assert breaker.stats().successes == 1


async def test_hedged_race_starts_backends_in_order_and_the_first_success_wins() -> None:
    breaker = Breaker("svc")
    started: list[str] = []

    async def primary() -> str:
        started.append("primary")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def replica() -> str:
        started.append("replica")
        return "replica"

    async def spare() -> str:  # starts only if the replica stalls: it never answers
        started.append("spare")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    assert await breaker.hedged_race([primary, replica, spare], delay=0.01) == "replica"
    assert started[:2] == ["primary", "replica"]


async def test_hedged_race_raises_the_first_backends_error() -> None:
    breaker = Breaker("svc")

    async def first() -> str:
        raise Boom("first")

    async def second() -> str:
        raise Boom("second")

    with anyio.fail_after(SAFETY), pytest.raises(Boom, match=r"^first$"):
        await breaker.hedged_race((first, second), delay=HOUR)
    assert breaker.stats().failures == 1


async def test_hedged_race_of_one_backend_is_a_plain_call() -> None:
    breaker = Breaker("svc")

    async def only() -> int:
        return 7

    assert await breaker.hedged_race([only]) == 7
    assert breaker.stats().successes == 1


# --------------------------------------------------------------------------- validation


async def nothing() -> None:
    return None


@pytest.mark.parametrize(
    "delay", [-0.01, math.nan, math.inf, -math.inf, 10**400, "0.1", None, True, False]
)
async def test_delay_must_be_a_finite_number_of_seconds(delay: Any) -> None:
    breaker = Breaker("svc")
    with pytest.raises(ConfigError) as caught:
        await breaker.hedged(nothing, delay=delay)
    assert caught.value.field == "delay"
    with pytest.raises(ConfigError) as caught:
        await breaker.hedged_race([nothing], delay=delay)
    assert caught.value.field == "delay"
    stats = breaker.stats()
    assert (stats.successes, stats.failures, stats.rejections) == (0, 0, 0)


@pytest.mark.parametrize("max_attempts", [0, -1, 1.0, 2.5, "2", None, True, False])
async def test_max_attempts_must_be_an_integer_of_at_least_one(max_attempts: Any) -> None:
    breaker = Breaker("svc")
    with pytest.raises(ConfigError) as caught:
        await breaker.hedged(nothing, max_attempts=max_attempts)
    assert caught.value.field == "max_attempts"
    assert breaker.stats().successes == 0


async def test_zero_delay_and_one_attempt_are_valid() -> None:
    breaker = Breaker("svc")
    assert await breaker.hedged(nothing, delay=0, max_attempts=1) is None
    assert await breaker.hedged(nothing, delay=0.0) is None
    assert breaker.stats().successes == 2


async def test_fn_must_be_a_function() -> None:
    breaker = Breaker("svc")
    with pytest.raises(ConfigError) as caught:
        await breaker.hedged(42)  # type: ignore[arg-type]
    assert caught.value.field == "fn"
    coroutine = nothing()
    try:
        with pytest.raises(ConfigError, match="coroutine") as caught:
            await breaker.hedged(coroutine)  # type: ignore[arg-type]
        assert caught.value.field == "fn"
    finally:
        coroutine.close()


def needs_an_argument(x: int) -> Awaitable[None]:
    return nothing()


@pytest.mark.parametrize(
    "backends",
    [[], (), "ab", b"ab", None, 42, {nothing}, [nothing, 42], [needs_an_argument]],
    ids=["empty-list", "empty-tuple", "str", "bytes", "none", "int", "set", "value", "arity"],
)
async def test_backends_must_be_a_non_empty_sequence_of_callables(backends: Any) -> None:
    breaker = Breaker("svc")
    with pytest.raises(ConfigError) as caught:
        await breaker.hedged_race(backends)
    assert caught.value.field == "backends"
    assert breaker.stats().successes == 0
