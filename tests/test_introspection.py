"""The event log of a breaker, and reports over many breakers."""

from __future__ import annotations

import threading

import anyio
import pytest
from tests.conftest import FakeClock
from tests.helpers import Boom, fail, succeed

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
    LoggedEvent,
    Report,
    State,
    ThreadedBreaker,
    report,
)

pytestmark = pytest.mark.anyio


class Neutral(Exception):
    pass


async def test_the_log_holds_transitions_and_failures_in_order(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=2, reset_after=5.0, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail, "first")
    clock.advance(1.0)
    with pytest.raises(Boom):
        async with breaker.guard():  # the guard's fast path logs too
            raise Boom("second")
    clock.advance(5.0)
    await breaker.call(succeed)
    log = breaker.event_log()
    assert [(e.kind, e.detail) for e in log] == [
        ("failure", "Boom: first"),
        ("failure", "Boom: second"),
        ("transition", "closed -> open (consecutive_failures)"),
        ("transition", "open -> half_open (reset_after_elapsed)"),
        ("transition", "half_open -> closed (probes_succeeded)"),
    ]
    first = log[0]
    assert first == LoggedEvent(
        1000.0, "failure", State.CLOSED, "Boom: first", f"{Boom.__module__}.Boom", "first"
    )
    assert log[1].at == 1001.0
    assert log[2].state is State.OPEN
    assert log[-1].at == 1006.0


async def test_ignored_errors_and_successes_are_not_logged(clock: FakeClock) -> None:
    breaker = Breaker("api", ignore=Neutral, clock=clock)

    async def neutral() -> None:
        raise Neutral

    with pytest.raises(Neutral):
        await breaker.call(neutral)
    await breaker.call(succeed)
    assert breaker.event_log() == ()


async def test_timeouts_and_refused_results_are_logged(clock: FakeClock) -> None:
    breaker = Breaker("api", timeout=0.01, failure_if=lambda result: result == "bad")

    async def hang() -> None:
        await anyio.sleep_forever()

    async def bad() -> str:
        return "bad"

    with pytest.raises(CircuitTimeoutError):
        await breaker.call(hang)
    assert await breaker.call(bad) == "bad"
    timeout, refused = breaker.event_log()
    assert (timeout.kind, timeout.detail) == ("timeout", "call exceeded the 0.01s timeout")
    assert timeout.error_type is None
    assert (refused.kind, refused.detail) == ("failure", "result refused by failure_if")


async def test_the_log_is_bounded_and_can_be_turned_off(clock: FakeClock) -> None:
    breaker = Breaker("api", event_log=3, consecutive_failures=100, clock=clock)
    for i in range(10):
        with pytest.raises(Boom):
            await breaker.call(fail, str(i))
    assert [e.message for e in breaker.event_log()] == ["7", "8", "9"]
    quiet = Breaker("quiet", event_log=0, consecutive_failures=1)
    with pytest.raises(Boom):
        await quiet.call(fail)
    assert quiet.state is State.OPEN
    assert quiet.event_log() == ()


@pytest.mark.parametrize("value", [-1, 1.5, True, "50", None])
async def test_a_bad_event_log_size_is_refused(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        Breaker("api", event_log=value)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("event_log", value)


async def test_long_and_broken_messages_are_logged_safely(clock: FakeClock) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    breaker = Breaker("api", consecutive_failures=100, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail, "x" * 1000)

    async def unprintable() -> None:
        raise Unprintable

    with pytest.raises(Unprintable):
        await breaker.call(unprintable)

    async def builtin() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        await breaker.call(builtin)
    long, broken, key = breaker.event_log()
    assert long.message is not None
    assert len(long.message) == 200
    assert long.message.endswith("…")
    assert broken.message is not None
    assert "str() raised" in broken.message
    assert key.error_type == "KeyError"
    assert key.detail == "KeyError: 'k'"


async def test_repeats_of_the_same_failure_are_one_entry(clock: FakeClock) -> None:
    class Odd(Exception):
        """Arguments whose == raises: never taken for a repeat."""

    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing")

        __hash__ = object.__hash__

    breaker = Breaker("api", consecutive_failures=4, reset_after=5.0, clock=clock)
    for message in ["down", "down", "slow", "down"]:  # the last one trips
        clock.advance(1.0)
        with pytest.raises(Boom):
            async with breaker.guard():  # the guard's fast path counts repeats inline
                raise Boom(message)
    clock.advance(5.0)
    for _ in range(2):  # half-open: the probe fails, and the next call is rejected
        with pytest.raises((Boom, CircuitOpenError)):
            await breaker.call(fail, "down")
    assert [(e.kind, e.detail, e.repeats, e.at) for e in breaker.event_log()] == [
        ("failure", "Boom: down", 2, 1001.0),
        ("failure", "Boom: slow", 1, 1003.0),
        ("failure", "Boom: down", 1, 1004.0),
        ("transition", "closed -> open (consecutive_failures)", 1, 1004.0),
        ("transition", "open -> half_open (reset_after_elapsed)", 1, 1009.0),
        ("failure", "Boom: down", 1, 1009.0),  # a transition ends a run
        ("transition", "half_open -> open (probe_failed)", 1, 1009.0),
    ]
    odd = Breaker("odd", consecutive_failures=100, clock=clock)
    for _ in range(2):
        with pytest.raises(Odd), odd.guard():
            raise Odd(Weird())
    assert [e.repeats for e in odd.event_log()] == [1, 1]

    async def refuse() -> None:
        raise OSError(111, "Connection refused")  # a class with its own __str__

    for _ in range(3):
        with pytest.raises(OSError):
            await odd.call(refuse)
    last = odd.event_log()[-1]
    assert last.detail == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert last.repeats == 3


def test_the_threaded_breaker_logs_from_many_threads() -> None:
    breaker = ThreadedBreaker("api", consecutive_failures=10_000, event_log=1000)

    def boom() -> None:
        raise Boom("t")

    def worker() -> None:
        for _ in range(100):
            with pytest.raises(Boom):
                breaker.call(boom)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (run,) = breaker.event_log()  # one run of the same failure, counted exactly
    assert (run.detail, run.repeats) == ("Boom: t", 400)


async def test_report_counts_by_state_and_reads_well(clock: FakeClock) -> None:
    registry = BreakerRegistry("host:", consecutive_failures=1, reset_after=30.0, clock=clock)
    for host in ("a", "b", "c"):
        registry.get(host)
    with pytest.raises(Boom):
        await registry.get("b").call(fail, "connection refused")
    registry.get("c").force_open()
    result = registry.report()
    assert isinstance(result, Report)
    assert result.counts[State.OPEN] == 1
    assert result.counts[State.FORCED_OPEN] == 1
    assert result.counts[State.CLOSED] == 1
    assert result.counts[State.HALF_OPEN] == 0
    assert not result.healthy
    assert [b.name for b in result.breakers] == ["host:a", "host:b", "host:c"]
    assert result["host:b"].last_failure is not None
    assert result["host:a"].last_failure is None
    with pytest.raises(KeyError):
        result["host:z"]
    assert result.summary() == "\n".join(
        [
            "3 breakers: 1 open, 1 forced_open, 1 closed",
            "  host:b: open, retry in 30.0s, trip 1; last failure: Boom: connection refused",
            "  host:c: forced_open",
            "  closed: host:a",
        ]
    )
    assert str(result) == result.summary()
    assert report([]).summary() == "0 breakers"
    assert report([]).healthy


async def test_report_events_limit(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=100, clock=clock)
    for i in range(5):
        with pytest.raises(Boom):
            await breaker.call(fail, str(i))
    assert [e.message for e in report([breaker], events=2).breakers[0].events] == ["3", "4"]
    assert report([breaker], events=0).breakers[0].events == ()
    assert len(breaker.report().breakers[0].events) == 5
    for bad in (-1, True, 1.0):
        with pytest.raises(ConfigError) as caught:
            report([breaker], events=bad)  # type: ignore[arg-type]
        assert caught.value.field == "events"
