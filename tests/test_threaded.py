"""The threaded runtime: same core, a lock around step() only, never around the call."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from breaker_machines import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    State,
    ThreadedBreaker,
    _base,
)


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom


def test_trips_and_recovers(clock: Any) -> None:
    breaker = ThreadedBreaker("svc", consecutive_failures=2, reset_after=10, clock=clock)
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "ok")
    clock.advance(10)
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is State.CLOSED


def test_the_lock_is_not_held_across_the_call() -> None:
    breaker = ThreadedBreaker("svc", consecutive_failures=100)
    barrier = threading.Barrier(4, timeout=10)

    def meet() -> str:
        barrier.wait()  # deadlocks (and times out) if calls were serialised
        return "met"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: breaker.call(meet), range(4)))
    assert results == ["met"] * 4
    assert breaker.stats().successes == 4


def test_concurrent_failures_count_exactly() -> None:
    breaker = ThreadedBreaker("svc", failures=10_000, within=600)

    def worker() -> None:
        for _ in range(250):
            with pytest.raises(Boom), breaker.guard():
                raise Boom

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = breaker.stats()
    assert stats.failures == 2000
    assert stats.failures_in_window == 2000


def test_stats_folding_pending_failures_loses_no_concurrent_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Failures that cannot trip yet are counted without the core and folded into its state
    # later. stats() folds them too (through snapshot), under the lock: a failure another
    # thread counts meanwhile waits for the fold instead of being overwritten by it.
    breaker = ThreadedBreaker("svc", consecutive_failures=1000)
    for _ in range(3):
        with pytest.raises(Boom), breaker.guard():
            raise Boom
    folding, counted = threading.Event(), threading.Event()
    real = _base.add_failures

    def slow_fold(state: Any, count: int) -> Any:
        if threading.current_thread() is reader:
            folding.set()
            counted.wait(0.5)  # a writer not held off by the lock counts meanwhile
        return real(state, count)

    def fail_once() -> None:
        with pytest.raises(Boom), breaker.guard():
            raise Boom
        counted.set()

    monkeypatch.setattr(_base, "add_failures", slow_fold)
    reader = threading.Thread(target=breaker.stats)
    writer = threading.Thread(target=fail_once)
    reader.start()
    assert folding.wait(5)
    writer.start()
    reader.join(5)
    writer.join(5)
    monkeypatch.undo()
    assert breaker.stats().consecutive_failures == 4


def test_half_open_admits_one_probe_across_threads(clock: Any) -> None:
    breaker = ThreadedBreaker("svc", consecutive_failures=1, reset_after=1, clock=clock)
    with pytest.raises(Boom):
        breaker.call(fail)
    clock.advance(1)
    inside = threading.Event()
    release = threading.Event()
    reached = []

    def probe() -> None:
        reached.append(1)
        inside.set()
        assert release.wait(10)

    thread = threading.Thread(target=breaker.call, args=(probe,))
    thread.start()
    assert inside.wait(10)
    rejected = 0
    for _ in range(20):
        try:
            breaker.call(probe)
        except CircuitOpenError:
            rejected += 1
    release.set()
    thread.join()
    assert (len(reached), rejected) == (1, 20)
    assert breaker.state is State.CLOSED


def test_decorator_fallback_and_failure_if() -> None:
    breaker = ThreadedBreaker(
        "svc", consecutive_failures=3, fallback=lambda e: "fallback", failure_if=lambda r: r < 0
    )

    @breaker
    def compute(x: int) -> int:
        if x == 0:
            raise Boom
        return x

    assert compute(5) == 5
    assert compute(0) == "fallback"
    assert compute(-1) == "fallback"
    assert breaker.stats().failures == 2


def test_bulkhead() -> None:
    breaker = ThreadedBreaker("svc", max_concurrent=1)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        inside.set()
        assert release.wait(10)

    thread = threading.Thread(target=breaker.call, args=(hold,))
    thread.start()
    assert inside.wait(10)
    with pytest.raises(BulkheadFullError):
        breaker.call(lambda: None)
    release.set()
    thread.join()
    assert breaker.stats().bulkhead_rejections == 1
    assert breaker.stats().failures == 0


def test_keyboard_interrupt_is_neutral() -> None:
    breaker = ThreadedBreaker("svc", consecutive_failures=1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.state is State.CLOSED
    assert breaker.stats().cancelled == 1


def test_no_timeout_and_no_async_callbacks() -> None:
    with pytest.raises(ConfigError) as caught:
        ThreadedBreaker("svc", timeout=1)
    assert caught.value.field == "timeout"

    async def on_open() -> None:
        pass

    with pytest.raises(ConfigError) as caught:
        ThreadedBreaker("svc", on_open=on_open)
    assert caught.value.field == "on_open"


def test_callbacks_run_outside_the_lock(clock: Any) -> None:
    breaker: ThreadedBreaker

    def on_open() -> None:
        breaker.force_close()  # re-entering the breaker from a callback must not deadlock

    breaker = ThreadedBreaker("svc", consecutive_failures=1, on_open=on_open, clock=clock)
    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state is State.CLOSED


def test_fallback_answers_rejections_and_a_chain_falls_through(clock: Any) -> None:
    def broken(error: BaseException) -> str:
        raise RuntimeError("fallback down")

    breaker = ThreadedBreaker(
        "svc", consecutive_failures=1, clock=clock, fallback=[broken, "cached"]
    )
    assert breaker.call(fail) == "cached"  # the failure that opens it
    assert breaker.call(lambda: "live") == "cached"  # rejected
    assert breaker.stats().rejections == 1


def test_when_every_fallback_fails_the_last_error_is_raised() -> None:
    def broken(error: BaseException) -> str:
        raise RuntimeError("fallback down")

    breaker = ThreadedBreaker("svc", fallback=[broken])
    with pytest.raises(RuntimeError) as caught:
        breaker.call(fail)
    assert isinstance(caught.value.__cause__, Boom)


def test_a_probe_refused_by_the_bulkhead_gives_its_permit_back(clock: Any) -> None:
    breaker = ThreadedBreaker(
        "svc", consecutive_failures=1, reset_after=1, half_open_probes=2, max_concurrent=1,
        clock=clock,
    )  # fmt: skip
    with pytest.raises(Boom):
        breaker.call(fail)
    clock.advance(1)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        inside.set()
        assert release.wait(10)

    thread = threading.Thread(target=breaker.call, args=(hold,))
    thread.start()
    assert inside.wait(10)
    with pytest.raises(BulkheadFullError):
        breaker.call(lambda: None)
    assert breaker.stats().probes_in_flight == 1
    release.set()
    thread.join()
    assert breaker.state is State.CLOSED  # the running probe succeeded
