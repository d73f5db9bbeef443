"""breaker_machines.compat.aiobreaker: aiobreaker 1.2's documented API and behaviour.

Every async test runs under asyncio and trio. Time is a fake clock (``clock`` fixture):
``timeout_duration`` elapses when the test says so.
"""

from __future__ import annotations

import abc
import inspect
import logging
import pickle
from collections.abc import AsyncGenerator, Generator
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio
import pytest

from breaker_machines import BreakerError, ConfigError
from breaker_machines.compat import aiobreaker as compat
from breaker_machines.compat.aiobreaker import (
    CircuitBreaker,
    CircuitBreakerBaseState,
    CircuitBreakerError,
    CircuitBreakerListener,
    CircuitBreakerState,
    CircuitClosedState,
    CircuitHalfOpenState,
    CircuitMemoryStorage,
    CircuitOpenState,
)

pytestmark = pytest.mark.anyio

OPEN = CircuitBreakerState.OPEN
CLOSED = CircuitBreakerState.CLOSED
HALF_OPEN = CircuitBreakerState.HALF_OPEN
TRIPPED = "Failures threshold reached, circuit breaker opened."
TRIAL_FAILED = "Trial call failed, circuit breaker opened."
STILL_OPEN = "Timeout not elapsed yet, circuit breaker still open"
TRIAL_RUNNING = "Trial call in progress, circuit breaker still half-open"


class Clock(Protocol):
    now: float

    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


class Boom(Exception):
    """The protected dependency's failure."""


class Business(Exception):
    """An exception the tests exclude."""


class SubBusiness(Business):
    pass


async def fail() -> None:
    raise Boom("down")


async def succeed() -> str:
    return "ok"


def fail_sync() -> None:
    raise Boom("down")


def succeed_sync() -> str:
    return "ok"


class Recorder(CircuitBreakerListener):
    """Records every hook call, in order."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    def before_call(self, breaker: CircuitBreaker, func: Any, *args: Any, **kwargs: Any) -> None:
        self.log.append(("before_call", func.__name__, args, kwargs))

    def failure(self, breaker: CircuitBreaker, exception: Exception) -> None:
        self.log.append(("failure", type(exception).__name__))

    def success(self, breaker: CircuitBreaker) -> None:
        self.log.append("success")

    def state_change(
        self, breaker: CircuitBreaker, old: CircuitBreakerBaseState, new: CircuitBreakerBaseState
    ) -> None:
        self.log.append(("state_change", old.state.name, new.state.name))


def within(delta: timedelta | None, seconds: float, slack: float = 1.0) -> bool:
    """``delta`` is ``seconds`` give or take ``slack`` (real time passes in datetime.now())."""
    return delta is not None and abs(delta.total_seconds() - seconds) <= slack


async def trip(breaker: CircuitBreaker) -> CircuitBreakerError:
    """Fail calls until the failure that opens the circuit; return its error."""
    for _ in range(breaker.fail_max - breaker.fail_counter - 1):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    with pytest.raises(CircuitBreakerError) as caught:
        await breaker.call_async(fail)
    assert breaker.current_state is OPEN
    return caught.value


# --------------------------------------------------------------------------- construction


async def test_defaults_are_aiobreakers() -> None:
    breaker = CircuitBreaker()
    assert breaker.fail_max == 5
    assert breaker.timeout_duration == timedelta(seconds=60)
    assert breaker.excluded_exceptions == ()
    assert breaker.listeners == ()
    assert breaker.name is None
    assert breaker.current_state is CLOSED
    assert isinstance(breaker.state, CircuitClosedState)
    assert breaker.fail_counter == 0
    assert repr(breaker) == "<CircuitBreaker None CLOSED>"


async def test_positional_arguments_in_aiobreakers_order() -> None:
    listener = Recorder()
    storage = CircuitMemoryStorage(CLOSED)
    breaker = CircuitBreaker(2, timedelta(seconds=7), [Business], [listener], storage, "db")
    assert breaker.fail_max == 2
    assert breaker.timeout_duration == timedelta(seconds=7)
    assert breaker.excluded_exceptions == (Business,)
    assert breaker.listeners == (listener,)
    assert breaker.name == "db"
    assert storage.state is CLOSED


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "5", None, 2**31])
def test_bad_fail_max_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        CircuitBreaker(fail_max=value)  # type: ignore[arg-type]
    assert caught.value.field == "fail_max"
    assert isinstance(caught.value, ValueError)
    breaker = CircuitBreaker(fail_max=3)
    with pytest.raises(ConfigError, match=r"^fail_max="):
        breaker.fail_max = value  # type: ignore[assignment]
    assert breaker.fail_max == 3


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1), 60, 60.0, "60", True])
def test_bad_timeout_duration_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        CircuitBreaker(timeout_duration=value)  # type: ignore[arg-type]
    assert caught.value.field == "timeout_duration"
    breaker = CircuitBreaker(timeout_duration=timedelta(seconds=3))
    with pytest.raises(ConfigError, match=r"^timeout_duration="):
        breaker.timeout_duration = value  # type: ignore[assignment]
    assert breaker.timeout_duration == timedelta(seconds=3)


def test_timeout_duration_none_is_sixty_seconds() -> None:
    assert CircuitBreaker(timeout_duration=None).timeout_duration == timedelta(seconds=60)


async def predicate_async(error: BaseException) -> bool:
    return True


@pytest.mark.parametrize(
    "entry", [int, 42, "ValueError", predicate_async, lambda: True, lambda a, b: True]
)
def test_bad_exclude_entry_is_a_config_error(entry: object) -> None:
    with pytest.raises(ConfigError) as caught:
        CircuitBreaker(exclude=[entry])  # type: ignore[list-item]
    assert caught.value.field == "exclude"
    breaker = CircuitBreaker()
    with pytest.raises(ConfigError, match=r"^exception="):
        breaker.add_excluded_exception(entry)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^exceptions="):
        breaker.add_excluded_exceptions(ValueError, entry)  # type: ignore[arg-type]
    assert breaker.excluded_exceptions == ()


@pytest.mark.parametrize("value", [ValueError, "ValueError", 3])
def test_exclude_must_be_a_list(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^exclude="):
        CircuitBreaker(exclude=value)  # type: ignore[arg-type]


def test_bad_listener_is_a_config_error() -> None:
    class Partial:
        def before_call(self, *args: Any) -> None: ...

    with pytest.raises(ConfigError, match=r"^listeners=.*has no before_call"):
        CircuitBreaker(listeners=[object()])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"^listeners=.*has no failure"):
        CircuitBreaker(listeners=[Partial()])  # type: ignore[list-item]
    breaker = CircuitBreaker()
    with pytest.raises(ConfigError, match=r"^listener="):
        breaker.add_listener(object())  # type: ignore[arg-type]
    assert breaker.listeners == ()


def test_state_storage_must_be_a_fresh_memory_storage() -> None:
    with pytest.raises(ConfigError, match=r"^state_storage=.*RedisStorage"):
        CircuitBreaker(state_storage=object())  # type: ignore[arg-type]
    storage = CircuitMemoryStorage()
    CircuitBreaker(state_storage=storage)
    with pytest.raises(ConfigError, match=r"^state_storage=.*already serves"):
        CircuitBreaker(state_storage=storage)
    with pytest.raises(ConfigError, match=r"^state="):
        CircuitMemoryStorage("open")  # type: ignore[arg-type]


def test_name_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match=r"^name="):
        CircuitBreaker(name=3)  # type: ignore[arg-type]
    breaker = CircuitBreaker(name="a")
    breaker.name = "b"
    assert breaker.name == "b"
    breaker.name = None
    assert breaker.name is None
    with pytest.raises(ConfigError, match=r"^name="):
        breaker.name = b"c"  # type: ignore[assignment]


async def test_the_name_names_the_breaker_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker(fail_max=1)
    breaker.name = "payments"
    with caplog.at_level(logging.INFO, "breaker_machines"), pytest.raises(CircuitBreakerError):
        await breaker.call_async(fail)
    assert "breaker 'payments': closed -> open" in caplog.text


def test_no_redis_storage() -> None:
    assert not hasattr(compat, "CircuitRedisStorage")
    assert "CircuitRedisStorage" not in compat.__all__


# --------------------------------------------------------------------------- tripping


async def test_consecutive_failures_trip_and_the_tripping_call_raises() -> None:
    breaker = CircuitBreaker(fail_max=3)
    for count in (1, 2):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
        assert breaker.fail_counter == count
        assert breaker.current_state is CLOSED
    with pytest.raises(CircuitBreakerError) as caught:
        await breaker.call_async(fail)
    assert caught.value.message == TRIPPED
    assert isinstance(caught.value.__cause__, Boom)
    assert breaker.current_state is OPEN
    assert isinstance(breaker.state, CircuitOpenState)


async def test_a_success_resets_the_run_of_failures() -> None:
    breaker = CircuitBreaker(fail_max=3)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    assert await breaker.call_async(succeed) == "ok"
    assert breaker.fail_counter == 0
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    assert breaker.current_state is CLOSED


async def test_open_circuit_rejects_without_running(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await trip(breaker)
    clock.advance(10)
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(CircuitBreakerError) as caught:
        await breaker.call_async(work)
    assert not ran
    assert caught.value.message == STILL_OPEN
    assert caught.value.__cause__ is None
    assert within(caught.value.time_remaining, 20)
    assert within(caught.value.reopen_time - datetime.now(), 20)


async def test_half_open_trial_after_timeout_duration_closes_on_success(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await trip(breaker)
    clock.advance(29.999)
    with pytest.raises(CircuitBreakerError):
        await breaker.call_async(succeed)
    clock.advance(0.001)
    assert breaker.current_state is OPEN  # half-opened by the next call, as in aiobreaker
    assert await breaker.call_async(succeed) == "ok"
    assert breaker.current_state is CLOSED
    assert breaker.fail_counter == 0


async def test_failed_trial_reopens_for_another_timeout(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await trip(breaker)
    clock.advance(30)
    with pytest.raises(CircuitBreakerError) as caught:
        await breaker.call_async(fail)
    assert caught.value.message == TRIAL_FAILED
    assert isinstance(caught.value.__cause__, Boom)
    assert within(caught.value.time_remaining, 30)
    assert breaker.current_state is OPEN
    clock.advance(29)
    with pytest.raises(CircuitBreakerError, match=STILL_OPEN):
        await breaker.call_async(succeed)
    clock.advance(1)
    assert await breaker.call_async(succeed) == "ok"


async def test_one_trial_call_at_a_time(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await trip(breaker)
    clock.advance(30)
    inside, release = anyio.Event(), anyio.Event()

    async def trial() -> str:
        inside.set()
        await release.wait()
        return "trial"

    results: list[str] = []

    async def run_trial() -> None:
        results.append(await breaker.call_async(trial))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_trial)
        await inside.wait()
        assert breaker.current_state is HALF_OPEN
        with pytest.raises(CircuitBreakerError) as caught:
            await breaker.call_async(succeed)
        assert caught.value.message == TRIAL_RUNNING
        release.set()
    assert results == ["trial"]
    assert breaker.current_state is CLOSED
    assert await breaker.call_async(succeed) == "ok"


async def test_a_trial_running_past_timeout_duration_no_longer_blocks(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await trip(breaker)
    clock.advance(30)
    inside, release = anyio.Event(), anyio.Event()

    async def hung() -> None:
        inside.set()
        await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, hung)
        await inside.wait()
        clock.advance(29)
        with pytest.raises(CircuitBreakerError, match=TRIAL_RUNNING):
            await breaker.call_async(succeed)
        clock.advance(1)
        assert await breaker.call_async(succeed) == "ok"  # a new trial; it closes
        release.set()
    assert breaker.current_state is CLOSED


async def test_concurrent_calls_run_concurrently() -> None:
    breaker = CircuitBreaker()
    first_in, second_in = anyio.Event(), anyio.Event()

    async def first() -> str:
        first_in.set()
        await second_in.wait()  # returns only once the other call is inside too
        return "first"

    async def second() -> str:
        await first_in.wait()
        second_in.set()
        return "second"

    results: list[str] = []

    async def run(fn: Any) -> None:
        results.append(await breaker.call_async(fn))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first)
            tg.start_soon(run, second)
    assert sorted(results) == ["first", "second"]


# --------------------------------------------------------------------------- exclusion


async def test_excluded_exception_types_count_as_success() -> None:
    breaker = CircuitBreaker(fail_max=2, exclude=[Business])
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    assert breaker.fail_counter == 1

    async def business() -> None:
        raise SubBusiness("no such user")

    for _ in range(3):
        with pytest.raises(SubBusiness):  # propagates unchanged
            await breaker.call_async(business)
    assert breaker.fail_counter == 0  # a success: it reset the run
    assert breaker.current_state is CLOSED


async def test_excluded_predicates_see_the_exception() -> None:
    seen: list[BaseException] = []

    def is_404(error: BaseException) -> bool:
        seen.append(error)
        return "404" in str(error)

    breaker = CircuitBreaker(fail_max=1, exclude=[is_404])
    error = Boom("404 not found")

    async def missing() -> None:
        raise error

    with pytest.raises(Boom):
        await breaker.call_async(missing)
    assert seen == [error]
    assert breaker.current_state is CLOSED
    with pytest.raises(CircuitBreakerError):
        await breaker.call_async(fail)  # "down": not excluded


async def test_a_raising_predicate_excludes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(error: BaseException) -> bool:
        raise RuntimeError("bug")

    breaker = CircuitBreaker(fail_max=1, exclude=[broken])
    with caplog.at_level(logging.ERROR, "breaker_machines"), pytest.raises(CircuitBreakerError):
        await breaker.call_async(fail)
    assert "exclude predicate" in caplog.text


async def test_excluded_exception_closes_a_half_open_circuit(clock: Clock) -> None:
    breaker = CircuitBreaker(
        fail_max=1, timeout_duration=timedelta(seconds=1), exclude=[Business], clock=clock
    )
    await trip(breaker)
    clock.advance(1)

    async def business() -> None:
        raise Business

    with pytest.raises(Business):
        await breaker.call_async(business)
    assert breaker.current_state is CLOSED


async def test_an_exception_class_with_a_metaclass_is_a_class() -> None:
    class Abstract(Exception, metaclass=abc.ABCMeta):
        pass

    # aiobreaker takes it for a predicate; "calling" it builds an exception, which is
    # truthy: every exception would be excluded.
    breaker = CircuitBreaker(fail_max=1, exclude=[Abstract])
    assert breaker.is_system_error(Boom())
    with pytest.raises(CircuitBreakerError):
        await breaker.call_async(fail)


async def test_manage_excluded_exceptions() -> None:
    def predicate(error: BaseException) -> bool:
        return False

    breaker = CircuitBreaker(fail_max=1)
    breaker.add_excluded_exception(Business)
    breaker.add_excluded_exceptions(KeyError, predicate)
    assert breaker.excluded_exceptions == (Business, KeyError, predicate)
    assert not breaker.is_system_error(Business())
    assert not breaker.is_system_error(KeyError())
    assert breaker.is_system_error(Boom())
    breaker.remove_excluded_exception(KeyError)
    assert breaker.excluded_exceptions == (Business, predicate)
    assert breaker.is_system_error(KeyError())
    with pytest.raises(ConfigError, match=r"^exception=.*is not excluded") as caught:
        breaker.remove_excluded_exception(KeyError)
    assert isinstance(caught.value, ValueError)  # as aiobreaker's list.remove

    async def key_error() -> None:
        raise KeyError("k")

    with pytest.raises(CircuitBreakerError):  # no longer excluded: it trips
        await breaker.call_async(key_error)


# --------------------------------------------------------------------------- cancellation


async def test_cancellation_counts_as_nothing() -> None:
    breaker = CircuitBreaker(fail_max=1, listeners=[recorder := Recorder()])
    inside = anyio.Event()

    async def slow() -> None:
        inside.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, slow)
        await inside.wait()
        tg.cancel_scope.cancel()
    assert breaker.fail_counter == 0
    assert breaker.current_state is CLOSED
    assert recorder.log == [("before_call", "slow", (), {})]


async def test_a_cancelled_trial_frees_the_trial_slot(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await trip(breaker)
    clock.advance(30)
    inside = anyio.Event()

    async def slow() -> None:
        inside.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, slow)
        await inside.wait()
        tg.cancel_scope.cancel()
    assert breaker.current_state is HALF_OPEN
    assert await breaker.call_async(succeed) == "ok"
    assert breaker.current_state is CLOSED


# --------------------------------------------------------------------------- listeners


async def test_listener_hooks_in_aiobreakers_order(clock: Clock) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(
        fail_max=2, timeout_duration=timedelta(seconds=5), listeners=[recorder], clock=clock
    )
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    with pytest.raises(CircuitBreakerError):
        await breaker.call_async(fail)
    with pytest.raises(CircuitBreakerError):
        await breaker.call_async(succeed)  # rejected: no hook
    clock.advance(5)
    assert await breaker.call_async(succeed) == "ok"
    # The order aiobreaker 1.2 produces for the same calls.
    assert recorder.log == [
        ("before_call", "fail", (), {}),
        ("failure", "Boom"),
        ("before_call", "fail", (), {}),
        ("failure", "Boom"),
        ("state_change", "CLOSED", "OPEN"),
        ("state_change", "OPEN", "HALF_OPEN"),
        ("before_call", "succeed", (), {}),
        ("state_change", "HALF_OPEN", "CLOSED"),
        "success",
    ]


async def test_failed_trial_hook_order(clock: Clock) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(
        fail_max=1, timeout_duration=timedelta(seconds=5), listeners=[recorder], clock=clock
    )
    breaker.half_open()
    with pytest.raises(CircuitBreakerError, match=TRIAL_FAILED):
        await breaker.call_async(fail)
    assert recorder.log == [
        ("state_change", "CLOSED", "HALF_OPEN"),
        ("before_call", "fail", (), {}),
        ("failure", "Boom"),
        ("state_change", "HALF_OPEN", "OPEN"),
    ]


async def test_hooks_receive_the_breaker_function_and_arguments() -> None:
    received: list[Any] = []

    class Inspecting(CircuitBreakerListener):
        def before_call(
            self, breaker: CircuitBreaker, func: Any, *args: Any, **kwargs: Any
        ) -> None:
            received.append((breaker, func, args, kwargs))

        def success(self, breaker: CircuitBreaker) -> None:
            received.append(breaker)

    breaker = CircuitBreaker(listeners=[Inspecting()])

    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await breaker.call_async(add, 1, b=2) == 3
    assert received == [(breaker, add, (1,), {"b": 2}), breaker]


async def test_async_hooks_are_awaited_in_order() -> None:
    log: list[str] = []

    class Slow(CircuitBreakerListener):
        async def before_call(
            self, breaker: CircuitBreaker, func: Any, *args: Any, **kwargs: Any
        ) -> None:
            await anyio.lowlevel.checkpoint()
            log.append("async before_call")

        async def success(self, breaker: CircuitBreaker) -> None:
            await anyio.lowlevel.checkpoint()
            log.append("async success")

    class Quick(CircuitBreakerListener):
        def before_call(
            self, breaker: CircuitBreaker, func: Any, *args: Any, **kwargs: Any
        ) -> None:
            log.append("sync before_call")

        def success(self, breaker: CircuitBreaker) -> None:
            log.append("sync success")

    async def work() -> str:
        log.append("call")
        return "ok"

    breaker = CircuitBreaker(listeners=[Slow(), Quick()])
    assert await breaker.call_async(work) == "ok"
    assert log == ["async before_call", "sync before_call", "call", "async success", "sync success"]


async def test_async_hooks_cannot_run_where_nothing_is_awaited() -> None:
    ran: list[str] = []

    class Async(CircuitBreakerListener):
        async def state_change(self, breaker: CircuitBreaker, old: Any, new: Any) -> None:
            ran.append("state_change")

        async def success(self, breaker: CircuitBreaker) -> None:
            ran.append("success")

    breaker = CircuitBreaker(listeners=[Async()])
    with pytest.warns(RuntimeWarning, match=r"state_change\(\) returned an awaitable"):
        breaker.open()
    with pytest.warns(RuntimeWarning, match=r"state_change\(\) returned an awaitable"):
        breaker.close()
    with pytest.warns(RuntimeWarning, match=r"success\(\) returned an awaitable"):
        assert breaker.call(succeed_sync) == "ok"
    assert ran == []


async def test_a_raising_before_call_stops_the_call_and_counts_nothing(clock: Clock) -> None:
    class Veto(CircuitBreakerListener):
        def before_call(
            self, breaker: CircuitBreaker, func: Any, *args: Any, **kwargs: Any
        ) -> None:
            raise PermissionError("not now")

    breaker = CircuitBreaker(fail_max=1, listeners=[Veto()], clock=clock)
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(PermissionError):
        await breaker.call_async(work)
    with pytest.raises(PermissionError):
        breaker.call(succeed_sync)
    assert not ran
    assert breaker.current_state is CLOSED  # fail_max=1: a counted failure would trip
    breaker.half_open()
    with pytest.raises(PermissionError):
        await breaker.call_async(work)
    (veto,) = breaker.listeners
    breaker.remove_listener(veto)
    await breaker.call_async(work)  # the trial slot was given back: admitted
    assert ran
    assert breaker.current_state is CLOSED


async def test_a_raising_hook_propagates() -> None:
    class Broken(CircuitBreakerListener):
        def success(self, breaker: CircuitBreaker) -> None:
            raise RuntimeError("listener bug")

    breaker = CircuitBreaker(listeners=[Broken()])
    with pytest.raises(RuntimeError, match="listener bug"):
        await breaker.call_async(succeed)


async def test_manage_listeners() -> None:
    a, b, c = Recorder(), Recorder(), Recorder()
    breaker = CircuitBreaker(listeners=[a])
    breaker.add_listener(b)
    breaker.add_listeners(c)
    assert breaker.listeners == (a, b, c)
    breaker.remove_listener(b)
    assert breaker.listeners == (a, c)
    with pytest.raises(ConfigError, match=r"^listener=") as caught:
        breaker.remove_listener(b)
    assert isinstance(caught.value, ValueError)
    await breaker.call_async(succeed)
    assert a.log[-1] == c.log[-1] == "success"
    assert b.log == []


# --------------------------------------------------------------------------- manual control


async def test_open_by_hand_rejects_until_timeout_duration(clock: Clock) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(
        timeout_duration=timedelta(seconds=20), listeners=[recorder], clock=clock
    )
    breaker.open()
    assert breaker.current_state is OPEN
    assert within(breaker.time_until_open, 20, slack=0.001)
    with pytest.raises(CircuitBreakerError, match=STILL_OPEN):
        await breaker.call_async(succeed)
    clock.advance(20)
    assert breaker.time_until_open is None
    assert await breaker.call_async(succeed) == "ok"
    assert breaker.current_state is CLOSED
    assert [entry for entry in recorder.log if entry[0] == "state_change"] == [
        ("state_change", "CLOSED", "OPEN"),
        ("state_change", "OPEN", "HALF_OPEN"),
        ("state_change", "HALF_OPEN", "CLOSED"),
    ]


async def test_half_open_by_hand_makes_the_next_call_a_trial() -> None:
    breaker = CircuitBreaker(fail_max=5)
    breaker.half_open()
    assert breaker.current_state is HALF_OPEN
    with pytest.raises(CircuitBreakerError, match=TRIAL_FAILED):
        await breaker.call_async(fail)  # one failure: a trial, not fail_max of them
    assert breaker.current_state is OPEN
    breaker.half_open()
    assert await breaker.call_async(succeed) == "ok"
    assert breaker.current_state is CLOSED


async def test_close_by_hand_resets_and_always_notifies() -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(fail_max=3, listeners=[recorder])
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    breaker.close()
    assert breaker.fail_counter == 0
    assert recorder.log[-1] == ("state_change", "CLOSED", "CLOSED")
    breaker.open()
    breaker.close()
    assert breaker.current_state is CLOSED
    assert await breaker.call_async(succeed) == "ok"
    assert recorder.log[-4:-1] == [
        ("state_change", "CLOSED", "OPEN"),
        ("state_change", "OPEN", "CLOSED"),
        ("before_call", "succeed", (), {}),
    ]


async def test_open_and_half_open_notify_even_to_the_same_state() -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(listeners=[recorder])
    breaker.open()
    breaker.open()
    breaker.half_open()
    breaker.half_open()
    assert recorder.log == [
        ("state_change", "CLOSED", "OPEN"),
        ("state_change", "OPEN", "OPEN"),
        ("state_change", "OPEN", "HALF_OPEN"),
        ("state_change", "HALF_OPEN", "HALF_OPEN"),
    ]


async def test_state_setter(clock: Clock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.state = OPEN
    assert breaker.current_state is OPEN
    breaker.state = HALF_OPEN
    assert breaker.current_state is HALF_OPEN
    breaker.state = CLOSED
    assert breaker.current_state is CLOSED
    with pytest.raises(ConfigError, match=r"^state="):
        breaker.state = "open"  # type: ignore[assignment]


async def test_calls_in_flight_when_opened_by_hand_are_not_counted() -> None:
    breaker = CircuitBreaker(fail_max=1)
    inside, release = anyio.Event(), anyio.Event()

    async def late_failure() -> None:
        inside.set()
        await release.wait()
        raise Boom

    async def run() -> None:
        with pytest.raises(Boom):  # not CircuitBreakerError: its outcome is stale
            await breaker.call_async(late_failure)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await inside.wait()
        breaker.open()
        breaker.close()
        release.set()
    assert breaker.current_state is CLOSED
    assert breaker.fail_counter == 0


# --------------------------------------------------------------------------- state and counters


def test_state_enum_members_and_values() -> None:
    assert [member.name for member in CircuitBreakerState] == ["OPEN", "CLOSED", "HALF_OPEN"]
    assert OPEN.value is CircuitOpenState
    assert CLOSED.value is CircuitClosedState
    assert HALF_OPEN.value is CircuitHalfOpenState
    for member in CircuitBreakerState:
        view = member.value()
        assert isinstance(view, CircuitBreakerBaseState)
        assert view.state is member
        assert repr(view) == f"<{member.value.__name__}>"


async def test_fail_counter_follows_aiobreaker(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=3, timeout_duration=timedelta(seconds=1), clock=clock)
    await trip(breaker)
    assert breaker.fail_counter == 3  # the count that opened it, as in aiobreaker
    clock.advance(1)
    with pytest.raises(CircuitBreakerError):
        await breaker.call_async(fail)
    assert breaker.fail_counter == 4  # a failed trial counts too
    breaker.close()
    assert breaker.fail_counter == 0
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    breaker.open()
    assert breaker.fail_counter == 1  # opened by hand: the count so far


async def test_fail_max_setter_applies_from_the_next_failure() -> None:
    breaker = CircuitBreaker(fail_max=5)
    for _ in range(3):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    breaker.fail_max = 2
    assert breaker.fail_max == 2
    assert breaker.fail_counter == 3
    with pytest.raises(CircuitBreakerError, match=TRIPPED):
        await breaker.call_async(fail)
    breaker.close()
    breaker.fail_max = 10
    for _ in range(9):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    assert breaker.current_state is CLOSED


async def test_timeout_duration_setter_moves_an_open_circuits_wait(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=60), clock=clock)
    await trip(breaker)
    clock.advance(10)
    breaker.timeout_duration = timedelta(seconds=15)  # counted from when it opened
    assert breaker.timeout_duration == timedelta(seconds=15)
    assert within(breaker.time_until_open, 5, slack=0.001)
    clock.advance(5)
    assert await breaker.call_async(succeed) == "ok"
    await trip(breaker)
    clock.advance(14)
    with pytest.raises(CircuitBreakerError):  # the new duration applies to new trips
        await breaker.call_async(succeed)
    clock.advance(1)
    assert await breaker.call_async(succeed) == "ok"


async def test_opens_at_and_time_until_open(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    assert breaker.opens_at is None  # aiobreaker raises TypeError before the first trip
    assert breaker.time_until_open is None
    await trip(breaker)
    clock.advance(12)
    assert within(breaker.time_until_open, 18, slack=0.001)
    opens_at = breaker.opens_at
    assert opens_at is not None
    assert opens_at.tzinfo is None  # naive local time, as datetime.now()
    assert within(opens_at - datetime.now(), 18)
    clock.advance(18)
    assert breaker.opens_at is None
    assert breaker.time_until_open is None


async def test_a_huge_timeout_duration(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta.max, clock=clock)
    error = await trip(breaker)
    assert error.reopen_time == datetime.max  # beyond what a datetime holds
    assert breaker.opens_at == datetime.max
    assert within(breaker.time_until_open, timedelta.max.total_seconds(), slack=1e6)


async def test_sleep_until_open(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30), clock=clock)
    await breaker.sleep_until_open()  # CLOSED: nothing to wait for
    assert slept == []
    error = await trip(breaker)
    clock.advance(10)
    await breaker.sleep_until_open()
    assert slept == [pytest.approx(20)]
    await error.sleep_until_open()
    assert slept[1] == pytest.approx(30, abs=1)  # from its reopen_time, in real time
    expired = CircuitBreakerError("m", datetime.now() - timedelta(seconds=5))
    await expired.sleep_until_open()
    assert slept[2] == 0.0


# --------------------------------------------------------------------------- the error


async def test_circuit_breaker_error_content(clock: Clock) -> None:
    breaker = CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=45), clock=clock)
    error = await trip(breaker)
    assert error.message == TRIPPED
    assert str(error) == TRIPPED
    assert isinstance(error.reopen_time, datetime)
    assert within(error.reopen_time - datetime.now(), 45)
    assert within(error.time_remaining, 45)
    assert error.args == (TRIPPED, error.reopen_time)
    assert isinstance(error, BreakerError)
    assert repr(error) == f"CircuitBreakerError({TRIPPED!r})"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.reopen_time) == (error.message, error.reopen_time)


# --------------------------------------------------------------------------- decorators


async def test_decorator_forms_on_async_functions() -> None:
    breaker = CircuitBreaker(fail_max=2)

    @breaker
    async def plain(x: int) -> int:
        return x

    @breaker()
    async def called(x: int) -> int:
        return x * 2

    @breaker(ignore_on_call=False)
    async def failing() -> None:
        raise Boom

    assert await plain(1) == 1
    assert await called(2) == 4
    assert plain.__name__ == "plain"
    assert inspect.iscoroutinefunction(plain)
    with pytest.raises(Boom):
        await failing()
    with pytest.raises(CircuitBreakerError):
        await failing()
    with pytest.raises(CircuitBreakerError, match=STILL_OPEN):
        await plain(1)


def test_decorator_on_sync_functions() -> None:
    breaker = CircuitBreaker(fail_max=1)

    @breaker
    def add(a: int, b: int) -> int:
        return a + b

    @breaker
    def broken() -> None:
        raise Boom

    assert add(1, 2) == 3
    assert not inspect.iscoroutinefunction(add)
    with pytest.raises(CircuitBreakerError, match=TRIPPED):
        broken()
    with pytest.raises(CircuitBreakerError, match=STILL_OPEN):
        add(1, 2)


async def test_decorated_function_is_guarded_once_by_its_own_breaker() -> None:
    once = CircuitBreaker(fail_max=3)
    twice = CircuitBreaker(fail_max=3)
    other = CircuitBreaker(fail_max=3)

    @once
    async def fail_once() -> None:
        raise Boom

    @twice(ignore_on_call=False)
    async def fail_twice() -> None:
        raise Boom

    with pytest.raises(Boom):
        await once.call_async(fail_once)
    assert once.fail_counter == 1  # ignore_on_call: not counted twice
    with pytest.raises(Boom):
        await twice.call_async(fail_twice)
    assert twice.fail_counter == 2
    with pytest.raises(Boom):
        await other.call_async(fail_once)  # another breaker guards it too
    assert (other.fail_counter, once.fail_counter) == (1, 2)


def test_decorator_refusals() -> None:
    breaker = CircuitBreaker()
    with pytest.raises(TypeError, match="does not accept positional arguments"):
        breaker(succeed_sync, succeed_sync)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="does not accept positional arguments"):
        breaker(3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="does not accept positional arguments"):
        breaker()(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^ignore_on_call="):
        breaker(ignore_on_call="yes")  # type: ignore[call-overload]

    async def stream() -> AsyncGenerator[int, None]:
        yield 1

    with pytest.raises(ConfigError, match=r"^func=.*async generator"):
        breaker(stream)


# --------------------------------------------------------------------------- sync call, generators


def test_sync_call() -> None:
    breaker = CircuitBreaker(fail_max=2)
    assert breaker.call(succeed_sync) == "ok"
    with pytest.raises(Boom):
        breaker.call(fail_sync)
    with pytest.raises(CircuitBreakerError, match=TRIPPED):
        breaker.call(fail_sync)
    with pytest.raises(CircuitBreakerError, match=STILL_OPEN):
        breaker.call(succeed_sync)


def test_sync_call_of_an_async_function_is_a_type_error() -> None:
    breaker = CircuitBreaker(fail_max=1)
    # The coroutine is closed: no "never awaited" warning (warnings are errors here).
    with pytest.raises(TypeError, match="returned a coroutine"):
        breaker.call(succeed)  # type: ignore[unused-coroutine]
    assert breaker.current_state is CLOSED  # not counted as a failure (nor as a success)


def test_generators_are_guarded_until_they_finish() -> None:
    breaker = CircuitBreaker(fail_max=1)

    def numbers() -> Generator[int, None, None]:
        yield 1
        yield 2

    def broken() -> Generator[int, None, None]:
        yield 1
        raise Boom

    @breaker
    def decorated() -> Generator[int, None, None]:
        yield 3

    assert list(breaker.call(numbers)) == [1, 2]
    assert list(decorated()) == [3]
    stream = breaker.call(broken)
    assert next(stream) == 1
    assert breaker.current_state is CLOSED  # still running
    with pytest.raises(CircuitBreakerError, match=TRIPPED):
        next(stream)
    with pytest.raises(CircuitBreakerError, match=STILL_OPEN):
        breaker.call(numbers)  # admission happens at call time


def test_a_generator_closed_early_counts_as_nothing() -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(fail_max=1, listeners=[recorder])

    def endless() -> Generator[int, None, None]:
        while True:
            yield 1

    stream = breaker.call(endless)
    assert next(stream) == 1
    stream.close()
    assert breaker.current_state is CLOSED
    assert recorder.log == [("before_call", "endless", (), {})]


def test_excluded_exception_out_of_a_generator_is_a_success() -> None:
    breaker = CircuitBreaker(fail_max=1, exclude=[Business], listeners=[recorder := Recorder()])

    def business() -> Generator[int, None, None]:
        yield 1
        raise Business

    with pytest.raises(Business):
        list(breaker.call(business))
    assert breaker.current_state is CLOSED
    assert recorder.log[-1] == "success"


# --------------------------------------------------------------------------- storage


async def test_memory_storage_starting_open_half_opens_on_the_first_call(clock: Clock) -> None:
    recorder = Recorder()
    storage = CircuitMemoryStorage(OPEN)
    assert (storage.name, storage.state, storage.counter, storage.opened_at) == (
        "memory",
        OPEN,
        0,
        None,
    )
    breaker = CircuitBreaker(state_storage=storage, listeners=[recorder], clock=clock)
    assert breaker.current_state is OPEN
    assert breaker.opens_at is None  # no wait: aiobreaker's has no opening time either
    assert await breaker.call_async(succeed) == "ok"
    assert recorder.log[0] == ("state_change", "OPEN", "HALF_OPEN")
    assert storage.state is CLOSED


async def test_memory_storage_starting_half_open() -> None:
    breaker = CircuitBreaker(fail_max=5, state_storage=CircuitMemoryStorage(HALF_OPEN))
    assert breaker.current_state is HALF_OPEN
    with pytest.raises(CircuitBreakerError, match=TRIAL_FAILED):
        await breaker.call_async(fail)


async def test_memory_storage_reads_the_live_circuit(clock: Clock) -> None:
    storage = CircuitMemoryStorage()
    breaker = CircuitBreaker(fail_max=2, state_storage=storage, clock=clock)
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    assert (storage.state, storage.counter, storage.opened_at) == (CLOSED, 1, None)
    await trip(breaker)
    clock.advance(7)
    assert storage.state is OPEN
    assert storage.counter == 2
    assert storage.opened_at is not None
    assert within(datetime.now() - storage.opened_at, 7)
