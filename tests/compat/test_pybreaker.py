"""breaker_machines.compat.pybreaker: pybreaker 1.4's documented behaviour, on our core.

Written from pybreaker's README (its ``Usage`` section, in order: configuration, listeners,
the decorator, ``call``, ``calling()``, tripping and recovery, Tornado, excluded
exceptions, monitoring and management), plus what this layer does differently on purpose:
no lock across the call, one trial call at a time, cancellation is neutral, listeners and
predicates that raise never break a call.

Most tests run twice: on a breaker that keeps its own circuit (a ThreadedBreaker) and on
one whose circuit lives in a ``CircuitMemoryStorage`` (the read/step/compare-and-set
runtime that Redis uses too). Time is a fake clock: nothing sleeps.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.helpers import HandStorage

from breaker_machines import ConfigError
from breaker_machines.compat import pybreaker
from breaker_machines.compat.pybreaker import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerListener,
    CircuitMemoryStorage,
)

#: Every wait on another thread is bounded: a broken breaker fails a test, never hangs it.
LIMIT = 10


class Boom(Exception):
    """The protected dependency's failure."""


class Business(Exception):
    """A business error: excluded in the tests that say so."""


class SubBusiness(Business):
    pass


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


def boom() -> None:
    raise Boom("down")


def ok(value: Any = 1) -> Any:
    return value


Make = Callable[..., CircuitBreaker]


@pytest.fixture(params=["own", "memory"])
def make(request: pytest.FixtureRequest, clock: Any) -> Make:
    """Builds a CircuitBreaker on the fake clock: with its own circuit, or with its circuit
    in a CircuitMemoryStorage."""

    def build(**options: Any) -> CircuitBreaker:
        if request.param == "memory" and "state_storage" not in options:
            options["state_storage"] = CircuitMemoryStorage(STATE_CLOSED)
        return CircuitBreaker(clock=clock, **options)

    return build


def fail_times(breaker: CircuitBreaker, count: int) -> None:
    """``count`` failed calls, each raising its own error (none may trip the circuit)."""
    for _ in range(count):
        with pytest.raises(Boom):
            breaker.call(boom)


def trip(breaker: CircuitBreaker) -> None:
    """Fail calls until the circuit opens (the last one raises CircuitBreakerError)."""
    fail_times(breaker, breaker.fail_max - 1)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    assert breaker.current_state == STATE_OPEN


class Recorder(CircuitBreakerListener):
    """Records every hook call, in order, as tuples."""

    def __init__(self, events: list[tuple[Any, ...]] | None = None, tag: str = "") -> None:
        self.events: list[tuple[Any, ...]] = [] if events is None else events
        self.tag = tag

    def before_call(
        self, cb: CircuitBreaker, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        self.events.append((self.tag + "before_call", cb, func, args, kwargs))

    def failure(self, cb: CircuitBreaker, exc: BaseException) -> None:
        self.events.append((self.tag + "failure", cb, exc))

    def success(self, cb: CircuitBreaker) -> None:
        self.events.append((self.tag + "success", cb))

    def state_change(
        self,
        cb: CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        assert old_state is not None
        self.events.append((self.tag + "state_change", cb, old_state.name, new_state.name))


def kinds(events: list[tuple[Any, ...]]) -> list[Any]:
    """The events without the breaker and the function: what the order tests compare."""
    out: list[Any] = []
    for event in events:
        if event[0].endswith("state_change"):
            out.append((event[0], event[2], event[3]))
        elif event[0].endswith("failure"):
            out.append((event[0], type(event[2]).__name__))
        else:
            out.append(event[0])
    return out


# ---------------------------------------------------------------------------- configuration


def test_the_documented_defaults() -> None:
    breaker = CircuitBreaker()
    assert breaker.fail_max == 5
    assert breaker.reset_timeout == 60
    assert breaker.success_threshold == 1
    assert breaker.name is None
    assert breaker.excluded_exceptions == ()
    assert breaker.listeners == ()
    assert breaker.current_state == STATE_CLOSED
    assert breaker.fail_counter == 0
    assert breaker.success_counter == 0


def test_the_state_constants_are_pybreakers() -> None:
    assert (STATE_OPEN, STATE_CLOSED, STATE_HALF_OPEN) == ("open", "closed", "half-open")


def test_positional_arguments_follow_pybreakers_signature(clock: Any) -> None:
    listener = Recorder()
    storage = CircuitMemoryStorage(STATE_CLOSED)
    breaker = CircuitBreaker(3, 30, 2, [Business], [listener], storage, "db", False, clock=clock)
    assert (breaker.fail_max, breaker.reset_timeout, breaker.success_threshold) == (3, 30, 2)
    assert breaker.excluded_exceptions == (Business,)
    assert breaker.listeners == (listener,)
    assert breaker.name == "db"
    fail_times(breaker, 3)  # throw_new_error_on_trip=False: the tripping call raises Boom
    assert storage.state == STATE_OPEN


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"fail_max": 0}, "fail_max"),
        ({"fail_max": 2.5}, "fail_max"),
        ({"reset_timeout": 0}, "reset_timeout"),
        ({"reset_timeout": -1}, "reset_timeout"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"name": 3}, "name"),
        ({"throw_new_error_on_trip": "yes"}, "throw_new_error_on_trip"),
        ({"exclude": [int]}, "exclude"),
        ({"exclude": ["ValueError"]}, "exclude"),
        ({"state_storage": object()}, "state_storage"),
    ],
)
def test_invalid_options_are_refused_naming_pybreakers_field(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        CircuitBreaker(**options)
    assert caught.value.field == field


# ---------------------------------------------------------------------------- tripping


def test_fail_max_consecutive_failures_open_the_circuit(make: Make) -> None:
    breaker = make(fail_max=3)
    fail_times(breaker, 2)
    assert breaker.fail_counter == 2
    assert breaker.call(ok) == 1  # a success ends the run
    assert breaker.fail_counter == 0
    fail_times(breaker, 2)
    assert breaker.current_state == STATE_CLOSED
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    assert breaker.current_state == STATE_OPEN


def test_the_call_that_trips_raises_circuit_breaker_error_chained_from_its_error(
    make: Make,
) -> None:
    breaker = make(fail_max=2)
    fail_times(breaker, 1)
    with pytest.raises(CircuitBreakerError) as caught:
        breaker.call(boom)
    assert isinstance(caught.value.__cause__, Boom)
    assert str(caught.value) == "Failures threshold reached, circuit breaker opened"


def test_without_throw_new_error_on_trip_the_tripping_call_raises_its_own_error(
    make: Make,
) -> None:
    breaker = make(fail_max=2, throw_new_error_on_trip=False)
    fail_times(breaker, 2)
    assert breaker.current_state == STATE_OPEN
    with pytest.raises(CircuitBreakerError):  # the next calls are rejected
        breaker.call(ok)


def test_an_open_circuit_rejects_without_calling(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=1, listeners=[Recorder(events)])
    trip(breaker)
    events.clear()
    called: list[int] = []
    with pytest.raises(CircuitBreakerError) as caught:
        breaker.call(called.append, 1)
    assert called == []
    assert events == []  # a rejected call calls no listener hook
    assert str(caught.value) == "Timeout not elapsed yet, circuit breaker still open"
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_after_reset_timeout_the_next_call_is_a_trial_and_its_success_closes(
    make: Make, clock: Any
) -> None:
    breaker = make(fail_max=1, reset_timeout=60)
    trip(breaker)
    clock.advance(59.9)
    with pytest.raises(CircuitBreakerError):
        breaker.call(ok)
    clock.advance(0.1)
    assert breaker.current_state == STATE_OPEN  # it half-opens with the next call
    assert breaker.call(ok, "trial") == "trial"
    assert breaker.current_state == STATE_CLOSED


def test_a_failed_trial_opens_the_circuit_again_for_another_timeout(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=60)
    trip(breaker)
    clock.advance(60)
    with pytest.raises(CircuitBreakerError) as caught:
        breaker.call(boom)
    assert str(caught.value) == "Trial call failed, circuit breaker opened"
    assert isinstance(caught.value.__cause__, Boom)
    assert breaker.current_state == STATE_OPEN
    clock.advance(59)
    with pytest.raises(CircuitBreakerError):
        breaker.call(ok)
    clock.advance(1)
    assert breaker.call(ok) == 1
    assert breaker.current_state == STATE_CLOSED


def test_success_threshold_successful_trials_close_the_circuit(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=10, success_threshold=3)
    trip(breaker)
    clock.advance(10)
    breaker.call(ok)
    assert (breaker.current_state, breaker.success_counter) == (STATE_HALF_OPEN, 1)
    breaker.call(ok)
    assert (breaker.current_state, breaker.success_counter) == (STATE_HALF_OPEN, 2)
    breaker.call(ok)
    assert (breaker.current_state, breaker.success_counter) == (STATE_CLOSED, 0)


def test_a_failure_between_successful_trials_opens_the_circuit(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=10, success_threshold=2)
    trip(breaker)
    clock.advance(10)
    breaker.call(ok)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    assert breaker.current_state == STATE_OPEN
    assert breaker.success_counter == 0


def test_without_throw_new_error_on_trip_a_failed_trial_raises_its_own_error(
    make: Make, clock: Any
) -> None:
    breaker = make(fail_max=1, reset_timeout=10, throw_new_error_on_trip=False)
    fail_times(breaker, 1)
    clock.advance(10)
    fail_times(breaker, 1)
    assert breaker.current_state == STATE_OPEN


def test_cancellation_is_not_a_failure(make: Make, clock: Any) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=1, reset_timeout=10, listeners=[Recorder(events)])

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.current_state == STATE_CLOSED
    assert breaker.fail_counter == 0
    trip(breaker)
    clock.advance(10)
    with pytest.raises(KeyboardInterrupt):  # the trial is interrupted: its slot is freed
        breaker.call(interrupted)
    assert breaker.current_state == STATE_HALF_OPEN
    assert breaker.call(ok) == 1
    assert breaker.current_state == STATE_CLOSED
    failures = [event[2] for event in events if event[0] == "failure"]
    assert [type(error) for error in failures] == [Boom]  # the trip's only


# ---------------------------------------------------------------------------- excluded


def test_an_excluded_type_or_subclass_is_not_a_system_error_and_counts_as_a_success(
    make: Make,
) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=3, exclude=[Business], listeners=[Recorder(events)])
    fail_times(breaker, 2)

    def business() -> None:
        raise SubBusiness("no such customer")

    with pytest.raises(SubBusiness):  # the original error, not a CircuitBreakerError
        breaker.call(business)
    assert breaker.fail_counter == 0  # it ended the run, as a success does
    assert kinds(events)[-2:] == ["before_call", "success"]
    fail_times(breaker, 2)
    assert breaker.current_state == STATE_CLOSED


def test_an_excluded_predicate_decides_on_the_exception(make: Make) -> None:
    breaker = make(fail_max=2, exclude=[lambda e: type(e) is HTTPError and e.status_code < 500])

    def http(status: int) -> None:
        raise HTTPError(status)

    for _ in range(3):
        with pytest.raises(HTTPError):
            breaker.call(http, 404)
    assert breaker.fail_counter == 0
    with pytest.raises(HTTPError):
        breaker.call(http, 503)
    assert breaker.fail_counter == 1
    with pytest.raises(CircuitBreakerError):
        breaker.call(http, 500)


def test_types_and_predicates_mix_and_can_be_added_and_removed(make: Make) -> None:
    def is_teapot(e: BaseException) -> bool:
        return isinstance(e, HTTPError) and e.status_code == 418

    breaker = make(fail_max=10)
    breaker.add_excluded_exception(Business)
    breaker.add_excluded_exceptions(KeyError, is_teapot)
    assert breaker.excluded_exceptions == (Business, KeyError, is_teapot)
    assert not breaker.is_system_error(SubBusiness())
    assert not breaker.is_system_error(KeyError("k"))
    assert not breaker.is_system_error(HTTPError(418))
    assert breaker.is_system_error(HTTPError(500))
    breaker.remove_excluded_exception(KeyError)
    assert breaker.excluded_exceptions == (Business, is_teapot)
    assert breaker.is_system_error(KeyError("k"))
    with pytest.raises(ValueError):
        breaker.remove_excluded_exception(KeyError)
    with pytest.raises(ConfigError):
        breaker.add_excluded_exception("KeyError")  # type: ignore[arg-type]


def test_an_excluded_exception_in_a_trial_counts_as_a_successful_trial(
    make: Make, clock: Any
) -> None:
    breaker = make(fail_max=1, reset_timeout=10, exclude=[Business])
    trip(breaker)
    clock.advance(10)

    def business() -> None:
        raise Business

    with pytest.raises(Business):
        breaker.call(business)
    assert breaker.current_state == STATE_CLOSED


def test_a_predicate_that_raises_is_logged_and_excludes_nothing(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(e: BaseException) -> bool:
        raise RuntimeError("bug in the predicate")

    def business() -> None:
        raise Business

    breaker = make(fail_max=5, exclude=[broken, Business])
    with caplog.at_level(logging.ERROR, "breaker_machines.compat.pybreaker"):
        fail_times(breaker, 1)
        with pytest.raises(Business):  # the rule after the broken one still applies
            breaker.call(business)
    assert breaker.fail_counter == 0
    assert "exclude predicate" in caplog.text
    assert "bug in the predicate" in caplog.text


def test_is_system_error_can_be_overridden_by_a_subclass(clock: Any) -> None:
    class OnlyBoomBreaker(CircuitBreaker):
        def is_system_error(self, exception: BaseException) -> bool:
            return isinstance(exception, Boom)

    def business() -> None:
        raise Business

    breaker = OnlyBoomBreaker(fail_max=1, clock=clock)
    with pytest.raises(Business):
        breaker.call(business)
    assert breaker.current_state == STATE_CLOSED
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)


# ---------------------------------------------------------------------------- listeners


def test_listeners_see_pybreakers_order_through_a_trip_and_a_recovery(
    make: Make, clock: Any
) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=2, reset_timeout=10, listeners=[Recorder(events)])
    breaker.call(ok)
    fail_times(breaker, 1)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    with pytest.raises(CircuitBreakerError):
        breaker.call(ok)  # rejected: no hook
    clock.advance(10)
    breaker.call(ok)
    assert kinds(events) == [
        "before_call",
        "success",
        "before_call",
        ("failure", "Boom"),
        "before_call",
        ("failure", "Boom"),  # the failure first, then the transition it caused
        ("state_change", "closed", "open"),
        ("state_change", "open", "half-open"),  # the trial is admitted, then announced
        "before_call",
        ("state_change", "half-open", "closed"),  # the transition first, then the success
        "success",
    ]


def test_listener_hooks_receive_the_breaker_the_function_and_its_arguments(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(listeners=[Recorder(events)])
    breaker.call(ok, 7)
    breaker.call(ok, value=8)
    assert events[0] == ("before_call", breaker, ok, (7,), {})
    assert events[1] == ("success", breaker)
    assert events[2] == ("before_call", breaker, ok, (), {"value": 8})
    fail_times(breaker, 1)
    assert events[-1][:2] == ("failure", breaker)
    assert isinstance(events[-1][2], Boom)


def test_state_change_receives_state_objects(make: Make) -> None:
    seen: list[Any] = []

    class Listener(CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            seen.append((old_state, new_state))

    breaker = make(fail_max=1, listeners=[Listener()])
    trip(breaker)
    ((old, new),) = seen
    assert isinstance(old, pybreaker.CircuitClosedState)
    assert isinstance(new, pybreaker.CircuitOpenState)
    assert (old.name, new.name, str(new)) == ("closed", "open", "open")
    assert breaker.state is new


def test_listeners_are_called_in_registration_order_and_can_be_managed(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    first, second, third = Recorder(events, "1:"), Recorder(events, "2:"), Recorder(events, "3:")
    breaker = make(listeners=[first])
    breaker.add_listener(second)
    breaker.add_listeners(third)
    assert breaker.listeners == (first, second, third)
    breaker.call(ok)
    assert kinds(events) == [
        "1:before_call",
        "2:before_call",
        "3:before_call",
        "1:success",
        "2:success",
        "3:success",
    ]
    breaker.remove_listener(second)
    assert breaker.listeners == (first, third)
    events.clear()
    breaker.call(ok)
    assert kinds(events) == ["1:before_call", "3:before_call", "1:success", "3:success"]
    with pytest.raises(ValueError):
        breaker.remove_listener(second)


def test_a_listener_may_define_only_some_hooks(make: Make) -> None:
    changes: list[str] = []

    class LogListener:  # not even a CircuitBreakerListener subclass
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            changes.append(f"State Change: CB: {cb.name}, New State: {new_state}")

    breaker = make(fail_max=1, name="db", listeners=[LogListener()])
    trip(breaker)
    assert changes == ["State Change: CB: db, New State: open"]


def test_a_listener_that_raises_is_logged_and_breaks_neither_the_call_nor_the_others(
    make: Make, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("before_call bug")

        def success(self, cb: Any) -> None:
            raise RuntimeError("success bug")

        def failure(self, cb: Any, exc: BaseException) -> None:
            raise RuntimeError("failure bug")

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            raise RuntimeError("state_change bug")

    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=1, reset_timeout=10, listeners=[Broken(), Recorder(events)])
    with caplog.at_level(logging.ERROR, "breaker_machines.compat.pybreaker"):
        assert breaker.call(ok, "fine") == "fine"
        with pytest.raises(CircuitBreakerError):
            breaker.call(boom)
        clock.advance(10)
        assert breaker.call(ok) == 1
    assert breaker.current_state == STATE_CLOSED
    assert kinds(events) == [
        "before_call",
        "success",
        "before_call",
        ("failure", "Boom"),
        ("state_change", "closed", "open"),
        ("state_change", "open", "half-open"),
        "before_call",
        ("state_change", "half-open", "closed"),
        "success",
    ]
    for bug in ("before_call bug", "success bug", "failure bug", "state_change bug"):
        assert bug in caplog.text


# ---------------------------------------------------------------------------- call forms


def test_call_passes_arguments_and_returns_the_result(make: Make) -> None:
    breaker = make()

    def echo(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return args, kwargs

    assert breaker.call(echo, 1, 2, func="f", x=3) == ((1, 2), {"func": "f", "x": 3})


def test_the_decorator_guards_every_call(make: Make) -> None:
    breaker = make(fail_max=2)

    @breaker
    def update_customer(cust: str) -> str:
        """Update a row."""
        if cust == "bad":
            raise Boom(cust)
        return cust.upper()

    assert update_customer.__name__ == "update_customer"
    assert update_customer.__doc__ == "Update a row."
    assert update_customer("ann") == "ANN"
    with pytest.raises(Boom):
        update_customer("bad")
    with pytest.raises(CircuitBreakerError):
        update_customer("bad")
    with pytest.raises(CircuitBreakerError):
        update_customer("ann")


def test_the_decorator_may_be_called_first(make: Make) -> None:
    breaker = make(fail_max=1)

    @breaker()
    def fetch() -> int:
        raise Boom

    with pytest.raises(CircuitBreakerError):
        fetch()
    assert breaker.current_state == STATE_OPEN


def test_tornado_calls_are_refused_with_a_pointer_to_the_async_breakers(make: Make) -> None:
    breaker = make()
    with pytest.raises(NotImplementedError, match=r"breaker_machines\.Breaker"):
        breaker.call_async(ok)
    with pytest.raises(NotImplementedError, match="Tornado"):
        breaker(__pybreaker_call_async=True)
    with pytest.raises(TypeError):
        breaker(retries=3)


def test_async_functions_are_refused(make: Make) -> None:
    breaker = make()

    async def fetch() -> int:
        return 1

    with pytest.raises(ConfigError, match="async"):
        breaker(fetch)
    with pytest.raises(ConfigError, match="async"):  # the coroutine is closed: no warning
        breaker.call(fetch)
    assert breaker.fail_counter == 0
    assert breaker.call(ok) == 1


def test_calling_runs_the_block_as_one_guarded_call(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=2, exclude=[Business], listeners=[Recorder(events)])
    ran: list[str] = []
    with breaker.calling():
        ran.append("block")
    assert ran == ["block"]
    assert events[0] == ("before_call", breaker, breaker.calling, (), {})
    assert kinds(events) == ["before_call", "success"]
    with pytest.raises(Business), breaker.calling():
        raise Business
    assert breaker.fail_counter == 0
    with pytest.raises(Boom), breaker.calling():
        raise Boom
    assert breaker.fail_counter == 1
    with pytest.raises(CircuitBreakerError) as caught, breaker.calling():
        raise Boom
    assert isinstance(caught.value.__cause__, Boom)
    with pytest.raises(CircuitBreakerError), breaker.calling():
        ran.append("rejected block")
    assert ran == ["block"]


# ---------------------------------------------------------------------------- generators


def test_a_guarded_generator_counts_how_its_iteration_ends(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=2, listeners=[Recorder(events)])

    @breaker
    def rows(count: int, fail_at: int | None = None) -> Generator[int, None, str]:
        for i in range(count):
            if i == fail_at:
                raise Boom(i)
            yield i
        return "done"

    generator = rows(3)
    assert kinds(events) == ["before_call"]  # admitted when called
    assert next(generator) == 0
    assert kinds(events) == ["before_call"]  # the outcome is not known yet
    assert list(generator) == [1, 2]
    assert kinds(events) == ["before_call", "success"]
    with pytest.raises(Boom):
        list(rows(3, fail_at=1))
    assert breaker.fail_counter == 1
    with pytest.raises(CircuitBreakerError) as caught:
        list(rows(3, fail_at=0))
    assert isinstance(caught.value.__cause__, Boom)
    assert breaker.current_state == STATE_OPEN
    with pytest.raises(CircuitBreakerError):
        rows(3)  # rejected when called, before any iteration


def test_a_guarded_generator_passes_sends_and_its_return_value(make: Make) -> None:
    breaker = make()

    def accumulate() -> Generator[int, int, str]:
        total = 0
        while total < 10:
            total += yield total
        return f"total {total}"

    generator = breaker.call(accumulate)
    assert next(generator) == 0
    assert generator.send(4) == 4
    with pytest.raises(StopIteration) as stopped:
        generator.send(6)
    assert stopped.value.value == "total 10"


def test_a_generator_closed_early_is_neutral_and_frees_the_trial(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=10)

    @breaker
    def numbers() -> Iterator[int]:
        yield from range(10)

    trip(breaker)
    clock.advance(10)
    generator = numbers()  # the trial call
    assert next(generator) == 0
    with pytest.raises(CircuitBreakerError):  # one trial at a time
        breaker.call(ok)
    generator.close()
    assert breaker.current_state == STATE_HALF_OPEN
    assert breaker.call(ok) == 1  # the next call is the trial now
    assert breaker.current_state == STATE_CLOSED


def test_a_generator_never_started_frees_the_trial_when_collected(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=10)

    @breaker
    def numbers() -> Iterator[int]:
        yield 1

    trip(breaker)
    clock.advance(10)
    generator = numbers()
    with pytest.raises(CircuitBreakerError):
        breaker.call(ok)
    del generator
    gc.collect()
    assert breaker.call(ok) == 1
    assert breaker.current_state == STATE_CLOSED


# ---------------------------------------------------------------------------- management


def test_open_rejects_until_reset_timeout_and_returns_throw_new_error_on_trip(
    make: Make, clock: Any
) -> None:
    breaker = make(reset_timeout=30)
    assert breaker.open() is True
    assert breaker.current_state == STATE_OPEN
    with pytest.raises(CircuitBreakerError):
        breaker.call(ok)
    clock.advance(30)
    assert breaker.call(ok) == 1
    assert breaker.current_state == STATE_CLOSED
    assert make(throw_new_error_on_trip=False).open() is False


def test_half_open_makes_the_next_call_a_trial(make: Make) -> None:
    breaker = make(fail_max=1, reset_timeout=3600)
    trip(breaker)
    breaker.half_open()
    assert breaker.current_state == STATE_HALF_OPEN
    with pytest.raises(CircuitBreakerError) as caught:
        breaker.call(boom)
    assert str(caught.value) == "Trial call failed, circuit breaker opened"
    breaker.half_open()
    assert breaker.call(ok) == 1
    assert breaker.current_state == STATE_CLOSED


def test_close_closes_with_fresh_counters(make: Make) -> None:
    breaker = make(fail_max=3, reset_timeout=3600)
    fail_times(breaker, 2)
    breaker.close()
    assert breaker.fail_counter == 0
    fail_times(breaker, 2)
    assert breaker.current_state == STATE_CLOSED
    breaker.open()
    breaker.close()
    assert breaker.current_state == STATE_CLOSED
    assert breaker.call(ok) == 1


def test_every_manual_change_is_announced_as_pybreaker_does(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(listeners=[Recorder(events)])
    breaker.close()  # closed -> closed is announced too
    breaker.open()
    breaker.open()
    breaker.half_open()
    breaker.close()
    assert kinds(events) == [
        ("state_change", "closed", "closed"),
        ("state_change", "closed", "open"),
        ("state_change", "open", "open"),
        ("state_change", "open", "half-open"),
        ("state_change", "half-open", "closed"),
    ]


def test_the_state_object_follows_the_circuit(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=10)
    assert isinstance(breaker.state, pybreaker.CircuitClosedState)
    trip(breaker)
    assert breaker.state.name == STATE_OPEN
    breaker.half_open()
    assert isinstance(breaker.state, pybreaker.CircuitHalfOpenState)
    assert repr(breaker.state) == "<CircuitHalfOpenState 'half-open'>"


def test_counters_follow_pybreakers_documentation(make: Make, clock: Any) -> None:
    breaker = make(fail_max=3, reset_timeout=10, success_threshold=2)
    fail_times(breaker, 2)
    assert (breaker.fail_counter, breaker.success_counter) == (2, 0)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    assert breaker.fail_counter == 0  # the run ended with the trip (pybreaker keeps 3)
    clock.advance(10)
    breaker.call(ok)
    assert (breaker.fail_counter, breaker.success_counter) == (0, 1)
    breaker.call(ok)
    assert (breaker.current_state, breaker.success_counter) == (STATE_CLOSED, 0)


def test_settings_can_be_changed_on_a_live_breaker(make: Make, clock: Any) -> None:
    breaker = make(fail_max=5, reset_timeout=60, success_threshold=1)
    fail_times(breaker, 3)
    breaker.fail_max = 4  # the run so far counts against the new limit
    assert breaker.fail_max == 4
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    breaker.reset_timeout = 5  # from the next opening
    clock.advance(60)
    breaker.success_threshold = 2
    breaker.call(ok)
    assert breaker.current_state == STATE_HALF_OPEN
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    clock.advance(5)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.current_state == STATE_CLOSED
    assert (breaker.reset_timeout, breaker.success_threshold) == (5, 2)
    with pytest.raises(ConfigError):
        breaker.fail_max = 0
    assert breaker.fail_max == 4


def test_the_name_can_be_changed(make: Make) -> None:
    breaker = make(name="db")
    breaker.name = "database"
    assert breaker.name == "database"
    assert repr(breaker) == "<CircuitBreaker 'database' closed>"
    with pytest.raises(ConfigError):
        breaker.name = 5  # type: ignore[assignment]


# ---------------------------------------------------------------------------- threads


def test_no_lock_is_held_across_the_call(make: Make) -> None:
    breaker = make()
    barrier = threading.Barrier(2, timeout=LIMIT)

    def meet() -> str:
        barrier.wait()  # both threads must be inside their calls at once
        return "met"

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: breaker.call(meet), range(2)))
    assert results == ["met", "met"]


def test_concurrent_failures_and_successes_are_counted_exactly(make: Make) -> None:
    breaker = make(fail_max=100_000)
    start = threading.Barrier(8, timeout=LIMIT)

    def failing() -> None:
        start.wait()
        for _ in range(250):
            with pytest.raises(Boom):
                breaker.call(boom)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(failing) for _ in range(8)]:
            future.result(timeout=LIMIT)
    assert breaker.fail_counter == 2000
    assert breaker.call(ok) == 1
    assert breaker.fail_counter == 0


def test_concurrent_failures_trip_once(make: Make) -> None:
    events: list[tuple[Any, ...]] = []
    breaker = make(fail_max=50, reset_timeout=3600, listeners=[Recorder(events)])
    start = threading.Barrier(4, timeout=LIMIT)
    outcomes: list[str] = []

    def failing() -> None:
        start.wait()
        for _ in range(40):
            try:
                breaker.call(boom)
            except Boom:
                outcomes.append("failed")
            except CircuitBreakerError as error:
                outcomes.append("tripped" if error.__cause__ is not None else "rejected")

    threads = [threading.Thread(target=failing) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIMIT)
    # Calls admitted before the trip and failing after it are stale: they raise their own
    # error and count for nothing. Exactly one failure trips the circuit.
    assert outcomes.count("tripped") == 1
    assert outcomes.count("failed") >= 49
    assert len(outcomes) == 160
    assert [e for e in kinds(events) if e != "before_call" and e[0] == "state_change"] == [
        ("state_change", "closed", "open")
    ]


def test_outcomes_of_calls_in_flight_across_a_change_are_not_counted(make: Make) -> None:
    breaker = make(fail_max=2)
    inside, release = threading.Event(), threading.Event()

    def slow_failure() -> None:
        inside.set()
        assert release.wait(LIMIT)
        raise Boom

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(breaker.call, slow_failure)
        assert inside.wait(LIMIT)
        breaker.close()  # a fresh circuit: the call in flight belongs to the old one
        release.set()
        with pytest.raises(Boom):  # its own error, never a CircuitBreakerError
            future.result(timeout=LIMIT)
    assert breaker.fail_counter == 0
    fail_times(breaker, 1)
    assert breaker.current_state == STATE_CLOSED


def test_a_half_open_circuit_runs_one_trial_at_a_time(make: Make, clock: Any) -> None:
    breaker = make(fail_max=1, reset_timeout=10)
    trip(breaker)
    clock.advance(10)
    inside = threading.Event()
    release = threading.Event()

    def trial() -> str:
        inside.set()
        assert release.wait(LIMIT)
        return "trial"

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(breaker.call, trial)
        assert inside.wait(LIMIT)
        with pytest.raises(CircuitBreakerError) as caught:
            breaker.call(ok)
        assert str(caught.value) == "Trial call in progress, circuit breaker half-open"
        release.set()
        assert future.result(timeout=LIMIT) == "trial"
    assert breaker.current_state == STATE_CLOSED


# ---------------------------------------------------------------------------- memory storage


def test_breakers_sharing_a_memory_storage_share_one_circuit(clock: Any) -> None:
    storage = CircuitMemoryStorage(STATE_CLOSED)
    events: list[tuple[Any, ...]] = []
    first = CircuitBreaker(fail_max=2, state_storage=storage, clock=clock)
    second = CircuitBreaker(
        fail_max=2, state_storage=storage, clock=clock, listeners=[Recorder(events)]
    )
    fail_times(first, 1)
    assert second.fail_counter == 1
    with pytest.raises(CircuitBreakerError):
        second.call(boom)
    assert first.current_state == STATE_OPEN
    assert (storage.state, storage.counter, storage.success_counter) == (STATE_OPEN, 0, 0)
    first.close()
    assert second.current_state == STATE_CLOSED
    # second noticed first's change on its next read, and told its listeners (as pybreaker)
    assert kinds(events)[-1] == ("state_change", "open", "closed")


def test_a_memory_storage_may_start_open_or_half_open(clock: Any) -> None:
    storage = CircuitMemoryStorage(STATE_OPEN)
    assert storage.state == STATE_OPEN
    assert storage.opened_at is None  # as pybreaker's: never opened at a known time
    breaker = CircuitBreaker(state_storage=storage, clock=clock)
    assert breaker.current_state == STATE_OPEN
    assert breaker.call(ok) == 1  # no opening time: the first call is a trial
    assert breaker.current_state == STATE_CLOSED
    half = CircuitBreaker(
        fail_max=1, state_storage=CircuitMemoryStorage(STATE_HALF_OPEN), clock=clock
    )
    assert half.current_state == STATE_HALF_OPEN
    with pytest.raises(CircuitBreakerError):
        half.call(boom)
    with pytest.raises(ConfigError):
        CircuitMemoryStorage("ajar")


def test_the_memory_storage_reports_when_the_circuit_opened(clock: Any) -> None:
    storage = CircuitMemoryStorage(STATE_CLOSED)
    breaker = CircuitBreaker(fail_max=1, state_storage=storage, clock=clock)
    assert storage.opened_at is None
    trip(breaker)
    opened = storage.opened_at
    assert opened is not None
    assert opened.timestamp() == clock.now
    assert opened.tzinfo is not None
    assert storage.name == "memory"
    assert storage.fallback_circuit_state == STATE_CLOSED


def test_a_custom_storage_implements_read_and_compare_and_set(clock: Any) -> None:
    # A dict with a switch that makes it unreachable.
    storage = HandStorage("flaky", unreadable_when_down=True)
    breaker = CircuitBreaker(fail_max=2, state_storage=storage, clock=clock)
    for _ in range(5):
        breaker.call(ok)
    assert storage.writes == 0  # a success in a healthy closed circuit writes nothing
    fail_times(breaker, 1)
    assert storage.writes == 1
    storage.down = True  # its fallback is closed: calls run, outcomes are not recorded
    fail_times(breaker, 3)
    assert breaker.current_state == STATE_CLOSED
    storage.down = False
    assert breaker.fail_counter == 1
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    assert storage.state == STATE_OPEN
