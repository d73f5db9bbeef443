"""Parallel fallbacks: ``parallel(a, b)`` races fallbacks; all failing raises
``FallbacksFailedError``, an ``ExceptionGroup``.

Losing fallbacks hang on events nobody sets; the order of events is forced with events.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import anyio
import pytest

from breaker_machines import (
    Breaker,
    CircuitOpenError,
    ConfigError,
    FallbacksFailedError,
    ParallelFallback,
    ThreadedBreaker,
    parallel,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def fail() -> str:
    raise Boom("the call failed")


def task_count() -> int:
    return len(anyio.get_running_tasks())


# --------------------------------------------------------------------------- winning


async def test_the_first_fallback_to_succeed_wins_and_the_others_are_cancelled() -> None:
    cache_started = anyio.Event()
    cancelled: list[str] = []
    answered: list[BaseException] = []

    async def from_cache(error: BaseException) -> str:
        cache_started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append("cache")
            raise
        raise AssertionError("unreachable")

    async def from_replica(error: BaseException) -> str:
        await cache_started.wait()  # both run at once: the replica answers second, and wins
        answered.append(error)
        return "replica"

    breaker = Breaker("svc", fallback=parallel(from_cache, from_replica))
    before = task_count()
    assert await breaker.call(fail) == "replica"
    assert cancelled == ["cache"]
    assert task_count() == before
    assert [str(error) for error in answered] == ["the call failed"]
    assert breaker.stats().failures == 1  # the call's failure, answered by the fallback


async def test_a_sync_fallback_can_win() -> None:
    async def hangs(error: BaseException) -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    breaker = Breaker("svc", fallback=parallel(hangs, lambda error: "sync"))
    assert await breaker.call(fail) == "sync"


async def test_a_failing_fallback_does_not_beat_a_later_success() -> None:
    failed = anyio.Event()

    async def quick_failure(error: BaseException) -> str:
        failed.set()
        raise Boom("cache miss")

    async def later(error: BaseException) -> str:
        await failed.wait()
        return "later"

    breaker = Breaker("svc", fallback=parallel(quick_failure, later))
    assert await breaker.call(fail) == "later"


async def test_a_parallel_group_answers_a_rejection() -> None:
    seen: list[BaseException] = []

    async def answer(error: BaseException) -> str:
        seen.append(error)
        return "answered"

    breaker = Breaker("svc", fallback=parallel(answer))
    breaker.force_open()
    assert await breaker.call(fail) == "answered"
    assert len(seen) == 1
    assert isinstance(seen[0], CircuitOpenError)


# --------------------------------------------------------------------------- losing


async def test_all_failing_raises_fallbacks_failed_with_each_error() -> None:
    second_failed = anyio.Event()

    async def first(error: BaseException) -> str:
        await second_failed.wait()  # fails last, yet its error comes first
        raise KeyError("cache miss")

    def second(error: BaseException) -> str:
        second_failed.set()
        raise ConnectionError("replica down")

    breaker = Breaker("svc", fallback=parallel(first, second))
    with pytest.raises(FallbacksFailedError) as caught:
        await breaker.call(fail)
    group = caught.value
    assert isinstance(group, ExceptionGroup)
    assert [type(error) for error in group.exceptions] == [KeyError, ConnectionError]
    assert group.breaker == "svc"
    assert isinstance(group.error, Boom)
    assert group.__cause__ is group.error
    assert "breaker 'svc': every parallel fallback failed" in str(group)
    assert breaker.stats().failures == 1


async def test_fallbacks_failed_splits_like_an_exception_group() -> None:
    async def missing(error: BaseException) -> str:
        raise KeyError("cache miss")

    async def down(error: BaseException) -> str:
        raise ConnectionError("replica down")

    breaker = Breaker("svc", fallback=parallel(missing, down))
    with pytest.raises(FallbacksFailedError) as caught:
        await breaker.call(fail)
    lookups, rest = caught.value.split(LookupError)
    assert isinstance(lookups, FallbacksFailedError)
    assert isinstance(rest, FallbacksFailedError)
    assert [type(error) for error in lookups.exceptions] == [KeyError]
    assert [type(error) for error in rest.exceptions] == [ConnectionError]
    assert (lookups.breaker, lookups.error) == ("svc", caught.value.error)
    assert caught.value.subgroup(OSError) is not None
    assert caught.value.subgroup(ValueError) is None


def test_fallbacks_failed_pickles() -> None:
    error = FallbacksFailedError("svc", Boom("x"), [KeyError("a"), ValueError("b")])
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is FallbacksFailedError
    assert copy.breaker == "svc"
    assert str(copy.error) == "x"
    assert [type(inner) for inner in copy.exceptions] == [KeyError, ValueError]


async def test_a_failing_group_in_a_list_passes_on_to_the_next_fallback() -> None:
    async def missing(error: BaseException) -> str:
        raise KeyError("cache miss")

    def down(error: BaseException) -> str:
        raise ConnectionError("replica down")

    seen: list[BaseException] = []

    def last_resort(error: BaseException) -> str:
        seen.append(error)
        return "last resort"

    breaker = Breaker("svc", fallback=[parallel(missing, down), last_resort])
    assert await breaker.call(fail) == "last resort"
    assert [type(error) for error in seen] == [Boom]  # the original error, as in any chain
    breaker = Breaker("svc", fallback=[parallel(missing, down), "default"])
    assert await breaker.call(fail) == "default"


async def test_a_group_that_wins_in_a_list_answers_first() -> None:
    breaker = Breaker("svc", fallback=[parallel(lambda error: "group"), "default"])
    assert await breaker.call(fail) == "group"


async def test_a_failing_group_last_in_a_list_is_raised_chained_to_the_original() -> None:
    def first(error: BaseException) -> str:
        raise KeyError("first")

    def down(error: BaseException) -> str:
        raise ConnectionError("down")

    breaker = Breaker("svc", fallback=[first, parallel(down)])
    with pytest.raises(FallbacksFailedError) as caught:
        await breaker.call(fail)
    assert isinstance(caught.value.__cause__, Boom)
    assert [type(error) for error in caught.value.exceptions] == [ConnectionError]


async def test_a_group_called_by_hand_names_no_breaker() -> None:
    def down(error: BaseException) -> str:
        raise ConnectionError("down")

    group = parallel(down)
    original = Boom("original")
    with pytest.raises(FallbacksFailedError) as caught:
        await group(original)
    assert caught.value.breaker is None
    assert caught.value.error is original
    assert str(caught.value).startswith("every parallel fallback failed")
    assert await parallel(repr)(original) == "Boom('original')"


async def test_a_cancellation_from_outside_cancels_every_fallback() -> None:
    started = [anyio.Event(), anyio.Event()]
    cancelled: list[int] = []

    def hanging(index: int) -> Any:
        async def fallback(error: BaseException) -> str:
            started[index].set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(index)
                raise
            raise AssertionError("unreachable")

        return fallback

    breaker = Breaker("svc", fallback=parallel(hanging(0), hanging(1)))
    before = task_count()
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            await breaker.call(fail)

        tg.start_soon(call)
        for event in started:
            await event.wait()
        tg.cancel_scope.cancel()
    assert sorted(cancelled) == [0, 1]
    assert task_count() == before


async def test_a_hedged_call_can_fall_back_in_parallel() -> None:
    breaker = Breaker("svc", fallback=parallel(lambda error: "from cache"))

    async def down() -> str:
        raise Boom

    assert await breaker.hedged(down, delay=0, max_attempts=2) == "from cache"
    assert breaker.stats().failures == 1


# --------------------------------------------------------------------------- validation


def test_parallel_needs_at_least_one_fallback() -> None:
    with pytest.raises(ConfigError) as caught:
        parallel()
    assert caught.value.field == "fallback"


@pytest.mark.parametrize(
    "candidate",
    [42, "cache", None, lambda: "no argument", lambda a, b: "two arguments"],
    ids=["int", "str", "none", "no-argument", "two-arguments"],
)
def test_parallel_fallbacks_must_be_callables_of_the_error(candidate: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parallel(lambda error: "fine", candidate)
    assert caught.value.field == "fallback"


def test_parallel_refuses_a_coroutine_and_a_generator_function() -> None:
    async def answer(error: BaseException) -> str:
        return "x"

    coroutine = answer(Boom())
    try:
        with pytest.raises(ConfigError, match="coroutine"):
            parallel(coroutine)  # type: ignore[arg-type]
    finally:
        coroutine.close()

    def generator(error: BaseException) -> Any:
        yield "x"

    with pytest.raises(ConfigError, match="generator"):
        parallel(generator)


def test_parallel_fallback_validates_when_built_directly() -> None:
    with pytest.raises(ConfigError):
        ParallelFallback([lambda error: "x"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ParallelFallback(())
    group = ParallelFallback((print,))
    assert group == parallel(print)
    assert group.fallbacks == (print,)


def test_a_parallel_fallback_is_frozen() -> None:
    group = parallel(print)
    with pytest.raises(AttributeError):
        group.fallbacks = ()  # type: ignore[misc]


@pytest.mark.parametrize("as_list", [False, True])
def test_threaded_breaker_refuses_a_parallel_fallback(as_list: bool) -> None:
    group = parallel(lambda error: "x")
    fallback: Any = ["first", group] if as_list else group
    with pytest.raises(ConfigError, match="anyio Breaker") as caught:
        ThreadedBreaker("svc", fallback=fallback)
    assert caught.value.field == "fallback"
    assert caught.value.value is group
