"""The anyio runtime: guard, call, decorator, cancellation, bulkhead, callbacks, controls."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from breaker_machines import (
    Breaker,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
    FailedResultError,
    MemoryStorage,
    Reason,
    State,
    Transition,
    running,
)

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


class Harmless(Exception):
    pass


async def fail() -> None:
    raise Boom


async def succeed() -> str:
    return "ok"


async def until(condition: Any) -> None:
    for _ in range(10_000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition never held")


async def trip(breaker: Breaker, failures: int = 1) -> None:
    for _ in range(failures):
        with pytest.raises(Boom):
            await breaker.call(fail)


# --------------------------------------------------------------------------- cancellation


async def test_a_task_cancelled_by_its_task_group_mid_call_changes_no_counts() -> None:
    breaker = Breaker("svc", consecutive_failures=1)
    entered = anyio.Event()

    async def stuck() -> None:
        with breaker.guard():
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stuck)
        await entered.wait()
        tg.cancel_scope.cancel()
    stats = breaker.stats()
    assert (stats.successes, stats.failures, stats.timeouts) == (0, 0, 0)
    assert stats.cancelled == 1
    assert breaker.state is State.CLOSED
    assert stats.consecutive_failures == 0


async def test_a_move_on_after_around_the_guard_is_neutral_not_a_timeout() -> None:
    breaker = Breaker("svc", consecutive_failures=1, timeout=60)
    with anyio.move_on_after(0.01) as outer:
        with breaker.guard():
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    stats = breaker.stats()
    assert (stats.failures, stats.timeouts, stats.cancelled) == (0, 0, 1)
    assert breaker.state is State.CLOSED


async def test_the_breakers_own_timeout_is_a_failure_and_raises_circuit_timeout() -> None:
    breaker = Breaker("svc", consecutive_failures=1, timeout=0.01)
    with pytest.raises(CircuitTimeoutError) as caught, breaker.guard():
        await anyio.sleep_forever()
    assert caught.value.timeout == 0.01
    assert isinstance(caught.value.__cause__, anyio.get_cancelled_exc_class())
    assert breaker.state is State.OPEN
    assert breaker.stats().timeouts == 1


async def test_a_call_that_finishes_before_the_timeout_is_a_success() -> None:
    breaker = Breaker("svc", timeout=30)
    async with breaker.guard():
        await anyio.lowlevel.checkpoint()
    assert breaker.stats().successes == 1


async def test_a_cancelled_half_open_probe_frees_its_permit(clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=1, reset_after=5, clock=clock)
    await trip(breaker)
    clock.advance(5)
    entered = anyio.Event()

    async def probe() -> None:
        with breaker.guard():
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        await entered.wait()
        assert breaker.stats().probes_in_flight == 1
        with pytest.raises(CircuitOpenError):
            await breaker.call(succeed)
        tg.cancel_scope.cancel()
    assert breaker.state is State.HALF_OPEN
    assert breaker.stats().probes_in_flight == 0
    assert await breaker.call(succeed) == "ok"  # the freed permit is usable
    assert breaker.state is State.CLOSED


async def test_fifty_concurrent_tasks_against_half_open_let_exactly_one_through(
    clock: Any,
) -> None:
    breaker = Breaker("svc", consecutive_failures=1, reset_after=5, clock=clock)
    await trip(breaker)
    clock.advance(5)
    reached = 0
    rejected = 0
    release = anyio.Event()

    async def dependency() -> str:
        nonlocal reached
        reached += 1
        await release.wait()
        return "ok"

    async def caller() -> None:
        nonlocal rejected
        try:
            await breaker.call(dependency)
        except CircuitOpenError:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(caller)
        await until(lambda: reached + rejected == 50)
        release.set()
    assert reached == 1
    assert rejected == 49
    assert breaker.state is State.CLOSED


async def test_a_stale_failure_cannot_retrip_a_recovered_circuit(clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=1, reset_after=5, clock=clock)
    slow_started = anyio.Event()
    let_fail = anyio.Event()

    async def slow_failure() -> None:
        with pytest.raises(Boom), breaker.guard():
            slow_started.set()
            await let_fail.wait()
            raise Boom

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_failure)  # admitted while CLOSED, generation 0
        await slow_started.wait()
        await trip(breaker)  # opens: generation 1
        clock.advance(5)
        assert await breaker.call(succeed) == "ok"  # probe closes it: generation 3
        assert breaker.state is State.CLOSED
        let_fail.set()
    assert breaker.state is State.CLOSED  # the late failure counted nowhere
    assert breaker.stats().consecutive_failures == 0
    assert breaker.stats().failures == 2  # but it is in the lifetime counters


# --------------------------------------------------------------------------- guard and call


async def test_guard_never_swallows_and_rejection_is_a_fresh_exception() -> None:
    breaker = Breaker("svc", consecutive_failures=1, reset_after=60)
    with pytest.raises(Boom):
        async with breaker.guard():
            raise Boom
    errors = []
    for _ in range(3):
        try:
            with breaker.guard():
                pytest.fail("must not run")
        except CircuitOpenError as error:
            errors.append(error)
    assert len({id(e) for e in errors}) == 3
    assert all(e.__traceback__ is not None for e in errors)
    assert errors[0].state is State.OPEN
    assert "svc" in str(errors[0])
    assert breaker.stats().rejections == 3


async def test_record_and_ignore_rules_classify_exceptions() -> None:
    breaker = Breaker(
        "svc",
        consecutive_failures=2,
        record=[Boom, lambda e: isinstance(e, KeyError)],
        ignore=Harmless,
    )
    for error in (Harmless(), ValueError()):
        with pytest.raises(type(error)), breaker.guard():
            raise error
    stats = breaker.stats()
    assert (stats.failures, stats.ignored) == (0, 2)
    with pytest.raises(KeyError), breaker.guard():
        raise KeyError("x")
    assert breaker.stats().consecutive_failures == 1
    with pytest.raises(Boom), breaker.guard():
        raise Boom
    assert breaker.state is State.OPEN


async def test_ignored_can_count_as_success_and_break_a_run_of_failures() -> None:
    breaker = Breaker(
        "svc", consecutive_failures=2, ignore=Harmless, ignored_counts_as_success=True
    )
    await trip(breaker)
    with pytest.raises(Harmless), breaker.guard():
        raise Harmless
    await trip(breaker)
    assert breaker.state is State.CLOSED
    assert breaker.stats().successes == 1


async def test_failure_if_counts_a_result_as_failure_and_still_returns_it() -> None:
    breaker = Breaker("svc", consecutive_failures=2, failure_if=lambda r: r == "bad")

    async def bad() -> str:
        return "bad"

    assert await breaker.call(bad) == "bad"
    assert await breaker.call(bad) == "bad"
    assert breaker.state is State.OPEN


async def test_failure_if_with_a_fallback_answers_with_the_fallback() -> None:
    seen: list[BaseException] = []

    def fallback(error: BaseException) -> str:
        seen.append(error)
        return "fallback"

    breaker = Breaker("svc", failure_if=lambda r: r is None, fallback=fallback)

    async def nothing() -> None:
        return None

    assert await breaker.call(nothing) == "fallback"
    assert isinstance(seen[0], FailedResultError)
    assert seen[0].result is None


async def test_fallback_chain_is_tried_in_order_and_ignored_errors_skip_it() -> None:
    def broken(error: BaseException) -> str:
        raise RuntimeError("fallback down")

    breaker = Breaker("svc", ignore=Harmless, fallback=[broken, lambda e: "second", "third"])
    assert await breaker.call(fail) == "second"

    async def harmless() -> None:
        raise Harmless

    with pytest.raises(Harmless):  # not a failure: no fallback
        await breaker.call(harmless)


async def test_when_every_fallback_fails_the_last_error_is_raised_from_the_original() -> None:
    def broken(error: BaseException) -> str:
        raise RuntimeError("fallback down")

    breaker = Breaker("svc", fallback=[broken])
    with pytest.raises(RuntimeError) as caught:
        await breaker.call(fail)
    assert isinstance(caught.value.__cause__, Boom)


async def test_a_plain_value_is_a_fallback_too() -> None:
    breaker = Breaker("svc", consecutive_failures=1, fallback={"cached": True})
    assert await breaker.call(fail) == {"cached": True}
    assert await breaker.call(succeed) == {"cached": True}  # rejected


async def test_the_decorator_keeps_the_function_and_applies_the_breaker() -> None:
    breaker = Breaker("svc", consecutive_failures=1)

    @breaker
    async def fetch(url: str, *, retries: int = 0) -> str:
        """Fetch a URL."""
        if url == "bad":
            raise Boom
        return f"{url}:{retries}"

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a URL."
    assert await fetch("a", retries=2) == "a:2"
    with pytest.raises(Boom):
        await fetch("bad")
    with pytest.raises(CircuitOpenError):
        await fetch("a")


# --------------------------------------------------------------------------- bulkhead


async def test_bulkhead_rejects_without_counting_a_failure() -> None:
    breaker = Breaker("svc", consecutive_failures=1, max_concurrent=2)
    inside = 0
    release = anyio.Event()

    async def hold() -> None:
        nonlocal inside
        with breaker.guard():
            inside += 1
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        tg.start_soon(hold)
        await until(lambda: inside == 2)
        with pytest.raises(BulkheadFullError) as caught, breaker.guard():
            pytest.fail("must not run")
        assert caught.value.limit == 2
        release.set()
    stats = breaker.stats()
    assert stats.bulkhead_rejections == 1
    assert stats.failures == 0
    assert breaker.state is State.CLOSED
    with breaker.guard():  # slots were returned
        pass


async def test_bulkhead_bounded_wait_admits_when_a_slot_frees() -> None:
    breaker = Breaker("svc", max_concurrent=1, bulkhead_wait=30)
    release = anyio.Event()
    entered = anyio.Event()

    async def hold() -> None:
        async with breaker.guard():
            entered.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await entered.wait()
        tg.start_soon(breaker.call, succeed)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert breaker.stats().successes == 2


async def test_bulkhead_bounded_wait_gives_up() -> None:
    breaker = Breaker("svc", max_concurrent=1, bulkhead_wait=0.01)
    entered = anyio.Event()

    async def hold() -> None:
        async with breaker.guard():
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await entered.wait()
        with pytest.raises(BulkheadFullError):
            async with breaker.guard():
                pass
        tg.cancel_scope.cancel()


async def test_an_open_circuit_rejects_before_the_bulkhead(clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=1, max_concurrent=1, clock=clock)
    await trip(breaker)
    with pytest.raises(CircuitOpenError), breaker.guard():
        pass
    assert breaker.stats().bulkhead_rejections == 0


async def test_a_probe_refused_by_the_bulkhead_gives_its_permit_back(clock: Any) -> None:
    breaker = Breaker(
        "svc",
        consecutive_failures=1,
        reset_after=1,
        half_open_probes=2,
        max_concurrent=1,
        clock=clock,
    )
    await trip(breaker)
    clock.advance(1)
    entered = anyio.Event()

    async def hold_slot_as_probe() -> None:
        with breaker.guard():
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_slot_as_probe)
        await entered.wait()
        with pytest.raises(BulkheadFullError), breaker.guard():
            pytest.fail("must not run")
        assert breaker.stats().probes_in_flight == 1  # only the running probe holds one
        tg.cancel_scope.cancel()
    assert breaker.stats().probes_in_flight == 0
    assert breaker.state is State.HALF_OPEN


# --------------------------------------------------------------------------- callbacks


async def test_raising_callbacks_do_not_disturb_the_caller(caplog: Any) -> None:
    def sync_boom(transition: Transition) -> None:
        raise RuntimeError("sync callback bug")

    async def async_boom() -> None:
        raise RuntimeError("async callback bug")

    done = anyio.Event()

    async def after() -> None:
        done.set()

    breaker = Breaker(
        "svc",
        consecutive_failures=1,
        on_open=[sync_boom, async_boom, after],
        on_reject=lambda: 1 / 0,
    )
    caplog.set_level(logging.ERROR, logger="breaker_machines")
    async with running(breaker):
        with pytest.raises(Boom):  # the caller's own error, not the callback's
            await breaker.call(fail)
        with pytest.raises(CircuitOpenError):
            await breaker.call(succeed)
        await done.wait()
        await until(lambda: breaker.stats().callback_errors == 3)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("callback" in m for m in messages) == 3


async def test_callbacks_receive_the_transition(clock: Any) -> None:
    seen: list[Transition] = []
    breaker = Breaker(
        "svc",
        consecutive_failures=1,
        reset_after=2,
        clock=clock,
        on_open=seen.append,
        on_half_open=seen.append,
        on_close=seen.append,
    )
    await trip(breaker)
    clock.advance(2)
    await breaker.call(succeed)
    assert [(t.source, t.target, t.reason) for t in seen] == [
        (State.CLOSED, State.OPEN, Reason.CONSECUTIVE_FAILURES),
        (State.OPEN, State.HALF_OPEN, Reason.RESET_AFTER_ELAPSED),
        (State.HALF_OPEN, State.CLOSED, Reason.PROBES_SUCCEEDED),
    ]
    assert all(t.won and t.breaker == "svc" for t in seen)
    assert [t.version for t in seen] == [1, 2, 3]


async def test_the_runner_half_opens_on_time() -> None:
    half_open = anyio.Event()
    breaker = Breaker("svc", consecutive_failures=1, reset_after=0.02, on_half_open=half_open.set)
    async with running(breaker):
        await trip(breaker)
        with anyio.fail_after(5):
            await half_open.wait()
    assert breaker.state is State.HALF_OPEN


async def test_async_callbacks_wait_for_a_runner() -> None:
    ran = anyio.Event()

    async def on_open() -> None:
        ran.set()

    breaker = Breaker("svc", consecutive_failures=1, on_open=on_open)
    await trip(breaker)
    assert not ran.is_set()
    async with running(breaker):
        with anyio.fail_after(5):
            await ran.wait()


async def test_only_one_runner_per_breaker() -> None:
    breaker = Breaker("svc")
    async with running(breaker):
        with pytest.raises(RuntimeError, match="already has a runner"):
            await breaker.run()


# --------------------------------------------------------------------------- controls, stats


async def test_manual_controls(clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=2, clock=clock)
    breaker.force_open()
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(succeed)
    assert caught.value.retry_after is None
    assert caught.value.state is State.FORCED_OPEN
    breaker.force_close()
    assert await breaker.call(succeed) == "ok"
    breaker.disable()
    await trip(breaker, 5)
    assert breaker.state is State.DISABLED
    breaker.enable()
    await trip(breaker)
    breaker.reset()
    await trip(breaker)
    assert breaker.state is State.CLOSED  # reset cleared the first failure
    await trip(breaker)
    assert breaker.state is State.OPEN


async def test_state_persists_in_the_storage_and_a_new_breaker_resumes_it(clock: Any) -> None:
    storage = MemoryStorage()
    first = Breaker("svc", consecutive_failures=1, storage=storage, clock=clock)
    await trip(first)
    assert storage.names() == ["svc"]
    second = Breaker("svc", consecutive_failures=1, storage=storage, clock=clock)
    assert second.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await second.call(succeed)


async def test_stats_report_windows(clock: Any) -> None:
    breaker = Breaker("svc", failure_rate=0.5, minimum_calls=4, window=10, clock=clock)
    await breaker.call(succeed)
    await trip(breaker)
    stats = breaker.stats()
    assert (stats.window_calls, stats.window_failures) == (2, 1)
    clock.advance(20)
    assert breaker.stats().window_calls == 0  # aged out of the window


async def test_slow_calls_trip_the_slow_call_rate() -> None:
    ticks = iter(range(0, 10_000, 5))
    breaker = Breaker(
        "svc",
        slow_call_rate=0.5,
        slow_call_duration=3,
        minimum_calls=2,
        window_calls=10,
        clock=lambda: float(next(ticks)),
    )
    await breaker.call(succeed)
    await breaker.call(succeed)
    assert breaker.state is State.OPEN
    assert breaker.stats().successes == 2


def test_bad_options_raise_config_errors_naming_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"bulkhead_wait": -1}, "bulkhead_wait"),
        ({"failure_rate": 2}, "failure_rate"),
        ({"on_open": 3}, "on_open"),
        ({"on_open": lambda a, b: None}, "on_open"),
        ({"record": [3]}, "record"),
        ({"fallback": []}, "fallback"),
        ({"clock": 5}, "clock"),
        ({"storage": object()}, "storage"),
        ({"failure_if": 1}, "failure_if"),
    ]
    for options, field in cases:
        with pytest.raises(ConfigError) as caught:
            Breaker("svc", **options)
        assert caught.value.field == field
        assert str(caught.value).startswith(f"{field}=")
    with pytest.raises(ConfigError):
        Breaker(42)  # type: ignore[arg-type]


async def test_the_runner_half_opens_after_a_retrip_following_a_manual_close() -> None:
    half_open = anyio.Event()
    breaker = Breaker("svc", consecutive_failures=1, reset_after=0.02, on_half_open=half_open.set)
    await trip(breaker)
    breaker.force_close()
    async with running(breaker):
        await trip(breaker)
        with anyio.fail_after(5):
            await half_open.wait()


async def test_a_breaker_restored_open_from_storage_half_opens_on_time() -> None:
    storage = MemoryStorage()
    await trip(Breaker("svc", consecutive_failures=1, reset_after=0.02, storage=storage))
    half_open = anyio.Event()
    restored = Breaker(
        "svc", consecutive_failures=1, reset_after=0.02, storage=storage,
        on_half_open=half_open.set,
    )  # fmt: skip
    assert restored.state is State.OPEN
    async with running(restored):
        with anyio.fail_after(5):
            await half_open.wait()


async def test_bulkhead_wait_does_not_make_a_call_slow() -> None:
    now = [0.0]
    breaker = Breaker(
        "svc",
        slow_call_rate=1.0,
        slow_call_duration=1.0,
        minimum_calls=1,
        window_calls=1,
        max_concurrent=1,
        bulkhead_wait=60,
        clock=lambda: now[0],
    )
    entered = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        async with breaker.guard():
            entered.set()
            await release.wait()

    async def waiter() -> None:
        async with breaker.guard():
            now[0] += 0.5  # runs 0.5 s after waiting 0.9 s for the slot: fast

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await entered.wait()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        now[0] += 0.9  # the first call runs 0.9 s: fast
        release.set()
    assert breaker.state is State.CLOSED
    assert breaker.stats().window_slow == 0


def test_policy_and_rule_options_are_exclusive() -> None:
    from breaker_machines import Policy

    with pytest.raises(ConfigError) as caught:
        Breaker("svc", policy=Policy(consecutive_failures=2), failures=3, within=10)
    assert caught.value.field == "failures"


async def test_classification_by_exception_class_stays_right_past_the_type_memo() -> None:
    breaker = Breaker("svc", consecutive_failures=1000, ignore=Harmless)
    kinds = [type(f"E{i}", (Boom if i % 2 else Harmless,), {}) for i in range(200)]
    for kind in kinds * 2:
        with pytest.raises(kind), breaker.guard():
            raise kind
    stats = breaker.stats()
    assert (stats.failures, stats.ignored) == (200, 200)
    assert len(breaker._outcomes_by_type) <= 64
