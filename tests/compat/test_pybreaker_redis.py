"""breaker_machines.compat.pybreaker's CircuitRedisStorage, against a real Redis server.

Breakers given storages on one namespace (each with its own client, as separate processes
would have) share one circuit; namespaces keep circuits apart; a breaker whose Redis is
unreachable decides as ``fallback_circuit_state`` says (pybreaker's documented behaviour),
never raising a storage error into the caller. Round trips are counted by the client.

Every breaker of a test reads the same fake clock (breakers sharing a circuit must share a
clock: the wall clock in production). Nothing sleeps.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from breaker_machines import ConfigError  # noqa: E402
from breaker_machines.compat.pybreaker import (  # noqa: E402
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerListener,
    CircuitRedisStorage,
)

LIMIT = 10


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


def ok(value: Any = 1) -> Any:
    return value


class CountingRedis(redis.Redis):  # type: ignore[misc,name-defined]
    """A real client that remembers the commands it sent (one per round trip)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)


Connect = Callable[..., Any]


@pytest.fixture
def connect(redis_url: str) -> Iterator[Connect]:
    """Opens clients on the test server (closed after the test)."""
    clients: list[Any] = []

    def open_client(**options: Any) -> Any:
        client = CountingRedis.from_url(redis_url, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


Make = Callable[..., CircuitBreaker]


@pytest.fixture
def make(connect: Connect, redis_prefix: str, clock: Any) -> Make:
    """A breaker on a storage of its own (its own client) in the test's namespace."""

    def build(
        *, namespace: str | None = None, state: str = STATE_CLOSED, **options: Any
    ) -> CircuitBreaker:
        storage = CircuitRedisStorage(state, connect(), namespace=namespace or redis_prefix)
        return CircuitBreaker(state_storage=storage, clock=clock, **options)

    return build


def client_of(breaker: CircuitBreaker) -> Any:
    storage = breaker._state_storage
    assert isinstance(storage, CircuitRedisStorage)
    return storage._redis


def fail_times(breaker: CircuitBreaker, count: int) -> None:
    for _ in range(count):
        with pytest.raises(Boom):
            breaker.call(boom)


class Changes(CircuitBreakerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.seen.append((old_state.name, new_state.name))


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable() -> Iterator[Any]:
    """A client of a Redis that refuses connections, without retries."""
    client = redis.Redis(
        host="127.0.0.1", port=closed_port(), retry=Retry(NoBackoff(), 0), socket_timeout=1
    )
    yield client
    client.close()


# ---------------------------------------------------------------------------- sharing


def test_breakers_on_one_namespace_share_the_circuit(make: Make, clock: Any) -> None:
    first = make(fail_max=3, reset_timeout=30)
    second = make(fail_max=3, reset_timeout=30)
    fail_times(first, 1)
    fail_times(second, 1)
    assert (first.fail_counter, second.fail_counter) == (2, 2)
    with pytest.raises(CircuitBreakerError) as caught:
        first.call(boom)  # the fleet's third failure in a row
    assert isinstance(caught.value.__cause__, Boom)
    assert second.current_state == STATE_OPEN
    with pytest.raises(CircuitBreakerError):
        second.call(ok)
    clock.advance(30)
    assert second.call(ok, "trial") == "trial"
    assert first.current_state == STATE_CLOSED


def test_a_success_anywhere_ends_the_fleets_run_of_failures(make: Make) -> None:
    first, second = make(fail_max=3), make(fail_max=3)
    fail_times(first, 2)
    assert second.call(ok) == 1
    assert first.fail_counter == 0
    fail_times(first, 2)
    assert first.current_state == STATE_CLOSED


def test_the_fleet_runs_one_trial_call_at_a_time(make: Make, clock: Any) -> None:
    first, second = make(fail_max=1, reset_timeout=10), make(fail_max=1, reset_timeout=10)
    with pytest.raises(CircuitBreakerError):
        first.call(boom)
    clock.advance(10)
    inside, release = threading.Event(), threading.Event()

    def trial() -> str:
        inside.set()
        assert release.wait(LIMIT)
        return "trial"

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(first.call, trial)
        assert inside.wait(LIMIT)
        assert second.current_state == STATE_HALF_OPEN
        with pytest.raises(CircuitBreakerError, match="Trial call in progress"):
            second.call(ok)
        release.set()
        assert future.result(timeout=LIMIT) == "trial"
    assert second.current_state == STATE_CLOSED


def test_successful_trials_of_every_breaker_count_toward_the_threshold(
    make: Make, clock: Any
) -> None:
    first = make(fail_max=1, reset_timeout=10, success_threshold=2)
    second = make(fail_max=1, reset_timeout=10, success_threshold=2)
    with pytest.raises(CircuitBreakerError):
        first.call(boom)
    clock.advance(10)
    first.call(ok)
    assert second.success_counter == 1
    second.call(ok)
    assert first.current_state == STATE_CLOSED


def test_manual_changes_are_shared(make: Make, clock: Any) -> None:
    first, second = make(reset_timeout=20), make(reset_timeout=20)
    first.open()
    with pytest.raises(CircuitBreakerError):
        second.call(ok)
    second.half_open()
    assert first.current_state == STATE_HALF_OPEN
    first.close()
    assert second.current_state == STATE_CLOSED
    assert second.call(ok) == 1


def test_a_breaker_notices_changes_written_by_another(make: Make) -> None:
    changes = Changes()
    first, second = make(fail_max=1), make(fail_max=1, listeners=[changes])
    with pytest.raises(CircuitBreakerError):
        first.call(boom)
    assert changes.seen == []  # nothing is pushed: it notices when it reads the circuit
    assert second.state.name == STATE_OPEN
    assert changes.seen == [("closed", "open")]
    assert second.current_state == STATE_OPEN
    assert changes.seen == [("closed", "open")]  # once


def test_namespaces_isolate_circuits(make: Make, redis_prefix: str) -> None:
    here = make(fail_max=1)
    there = make(fail_max=1, namespace=f"{redis_prefix}:other")
    with pytest.raises(CircuitBreakerError):
        here.call(boom)
    assert there.current_state == STATE_CLOSED
    assert there.call(ok) == 1
    storage = here._state_storage
    assert isinstance(storage, CircuitRedisStorage)
    assert storage.key == f"{redis_prefix}:pybreaker:circuit"
    assert client_of(here).exists(f"{redis_prefix}:other:pybreaker:circuit") == 1


def test_an_existing_circuit_is_not_overwritten_by_a_new_storage(make: Make) -> None:
    first = make(fail_max=1)
    with pytest.raises(CircuitBreakerError):
        first.call(boom)
    late = make(state=STATE_CLOSED)
    assert late.current_state == STATE_OPEN


def test_a_storage_may_start_the_circuit_open(make: Make) -> None:
    breaker = make(state=STATE_OPEN)
    assert breaker.current_state == STATE_OPEN
    assert breaker.call(ok) == 1  # never opened at a known time: the first call is a trial
    assert breaker.current_state == STATE_CLOSED


def test_concurrent_failures_of_several_breakers_are_counted_exactly(make: Make) -> None:
    breakers = [make(fail_max=10_000), make(fail_max=10_000)]
    start = threading.Barrier(4, timeout=LIMIT)

    def failing(breaker: CircuitBreaker) -> None:
        start.wait()
        fail_times(breaker, 25)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(failing, breakers[i % 2]) for i in range(4)]:
            future.result(timeout=LIMIT)
    assert breakers[0].fail_counter == 100


def test_no_lock_is_held_across_the_call(make: Make) -> None:
    breaker = make()
    barrier = threading.Barrier(2, timeout=LIMIT)

    def meet() -> str:
        barrier.wait()
        return "met"

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda _: breaker.call(meet), range(2))) == ["met", "met"]


# ---------------------------------------------------------------------------- round trips


def test_round_trips_per_call(make: Make) -> None:
    breaker = make(fail_max=3)
    client = client_of(breaker)
    fail_times(breaker, 1)  # the first compare-and-set also loads the script
    breaker.call(ok)
    client.sent.clear()
    breaker.call(ok)  # a healthy closed circuit: one read, nothing written
    assert client.sent == ["GET"]
    client.sent.clear()
    fail_times(breaker, 1)  # a failure: the read, then one compare-and-set
    assert client.sent == ["GET", "EVALSHA"]
    client.sent.clear()
    breaker.call(ok)  # a success ending a run of failures writes too
    assert client.sent == ["GET", "EVALSHA"]
    fail_times(breaker, 2)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    client.sent.clear()
    with pytest.raises(CircuitBreakerError):
        breaker.call(ok)  # a rejection: one read
    assert client.sent == ["GET"]


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize("fallback", [STATE_CLOSED, STATE_OPEN])
def test_an_unreachable_redis_falls_back_to_the_fallback_state(
    unreachable: Any, clock: Any, fallback: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "breaker_machines.compat.pybreaker"):
        storage = CircuitRedisStorage(
            STATE_CLOSED, unreachable, fallback_circuit_state=fallback
        )  # does not raise
        breaker = CircuitBreaker(fail_max=1, state_storage=storage, clock=clock)
        assert breaker.current_state == fallback
        assert storage.state == fallback
        assert (breaker.fail_counter, storage.counter, storage.opened_at) == (0, 0, None)
        ran: list[int] = []
        for _ in range(3):
            if fallback == STATE_CLOSED:
                assert breaker.call(ran.append, 1) is None
                with pytest.raises(Boom):  # nothing is recorded: it never trips
                    breaker.call(boom)
            else:
                with pytest.raises(CircuitBreakerError, match="storage unavailable"):
                    breaker.call(ran.append, 1)
        breaker.open()  # a manual change is lost (logged), never raised
    assert ran == ([1, 1, 1] if fallback == STATE_CLOSED else [])
    assert "could not write the initial state" in caplog.text
    assert caplog.text.count("failed: deciding as fallback_circuit_state") == 1


def test_a_half_open_fallback_admits_one_call_at_a_time(unreachable: Any, clock: Any) -> None:
    storage = CircuitRedisStorage(STATE_CLOSED, unreachable, fallback_circuit_state=STATE_HALF_OPEN)
    breaker = CircuitBreaker(state_storage=storage, clock=clock)
    assert breaker.current_state == STATE_HALF_OPEN
    inside, release = threading.Event(), threading.Event()

    def trial() -> str:
        inside.set()
        assert release.wait(LIMIT)
        return "trial"

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(breaker.call, trial)
        assert inside.wait(LIMIT)
        with pytest.raises(CircuitBreakerError):
            breaker.call(ok)
        release.set()
        assert future.result(timeout=LIMIT) == "trial"
    with pytest.raises(Boom):
        breaker.call(boom)
    assert breaker.call(ok) == 1


def test_a_missing_circuit_reads_as_the_fallback_state(
    connect: Connect, redis_prefix: str, clock: Any
) -> None:
    client = connect()
    storage = CircuitRedisStorage(
        STATE_CLOSED, client, namespace=redis_prefix, fallback_circuit_state=STATE_OPEN
    )
    breaker = CircuitBreaker(state_storage=storage, clock=clock)
    assert breaker.current_state == STATE_CLOSED
    client.delete(storage.key)  # lost (expired, flushed, deleted by hand)
    assert breaker.current_state == STATE_OPEN
    assert breaker.call(ok) == 1  # an open circuit never opened at a known time: a trial
    assert breaker.current_state == STATE_CLOSED
    assert client.exists(storage.key) == 1


def test_an_unreadable_circuit_is_logged_and_replaced(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make(fail_max=2)
    storage = breaker._state_storage
    assert isinstance(storage, CircuitRedisStorage)
    client_of(breaker).set(storage.key, b"\xff not a circuit")
    with caplog.at_level(logging.ERROR, "breaker_machines.compat.pybreaker"):
        assert breaker.current_state == STATE_CLOSED  # the fallback state
        assert breaker.call(ok) == 1
        fail_times(breaker, 1)  # writes a circuit over the unreadable record
    assert "unreadable record" in caplog.text
    assert breaker.fail_counter == 1
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)


# ---------------------------------------------------------------------------- the storage


def test_the_storage_reads_like_pybreakers(make: Make, clock: Any) -> None:
    breaker = make(fail_max=2, reset_timeout=10, success_threshold=2)
    storage = breaker._state_storage
    assert isinstance(storage, CircuitRedisStorage)
    assert (storage.name, storage.fallback_circuit_state) == ("redis", STATE_CLOSED)
    fail_times(breaker, 1)
    assert (storage.state, storage.counter, storage.opened_at) == (STATE_CLOSED, 1, None)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    opened = storage.opened_at
    assert opened is not None
    assert opened.timestamp() == clock.now
    clock.advance(10)
    breaker.call(ok)
    assert (storage.state, storage.success_counter) == (STATE_HALF_OPEN, 1)


def test_a_client_decoding_responses_works_too(
    make: Make, connect: Connect, redis_prefix: str, clock: Any
) -> None:
    decoding = CircuitBreaker(
        fail_max=1,
        state_storage=CircuitRedisStorage(
            STATE_CLOSED, connect(decode_responses=True), namespace=redis_prefix
        ),
        clock=clock,
    )
    plain = make(fail_max=1)
    with pytest.raises(CircuitBreakerError):
        decoding.call(boom)
    assert plain.current_state == STATE_OPEN
    plain.close()
    assert decoding.call(ok) == 1


def test_cluster_mode_is_accepted(connect: Connect, redis_prefix: str, clock: Any) -> None:
    storage = CircuitRedisStorage(STATE_CLOSED, connect(), redis_prefix, STATE_CLOSED, True)
    breaker = CircuitBreaker(fail_max=1, state_storage=storage, clock=clock)
    with pytest.raises(CircuitBreakerError):
        breaker.call(boom)
    assert storage.state == STATE_OPEN


def test_invalid_storage_options_are_refused(connect: Connect) -> None:
    with pytest.raises(ConfigError):
        CircuitRedisStorage("ajar", connect())
    with pytest.raises(ConfigError):
        CircuitRedisStorage(STATE_CLOSED, connect(), fallback_circuit_state="ajar")
    with pytest.raises(ConfigError):
        CircuitRedisStorage(STATE_CLOSED, connect(), namespace=7)  # type: ignore[arg-type]
