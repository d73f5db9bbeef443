"""breaker_machines.compat (pybreaker and aiobreaker layers): the paths the main compat tests
leave out.

pybreaker: stored records that do not validate (each field's refusal and its message),
storages whose writes fail or lose the compare-and-set race (once, or every time: the
bounded retry gives up and decides as ``fallback_circuit_state``), outcomes made stale by a
record replaced under a running call, manual controls that change nothing, ``calling()``
without listeners, a raising ``is_system_error`` override, decorator refusals.

aiobreaker: listeners overriding only some hooks, awaitables that are not coroutines where
nothing can await them, async hooks on a state change, excluded exceptions with listeners,
sync calls that half-open the circuit or meet a trial in progress.

Storages here are real subclasses of the public ``CircuitBreakerStorage`` /
``CircuitMemoryStorage`` (what an application writes for its own store); "another process"
is another breaker on the same storage. Time is the fake ``clock`` fixture: nothing sleeps.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from tests.helpers import HandStorage

from breaker_machines import ConfigError
from breaker_machines.compat import aiobreaker, pybreaker
from breaker_machines.storage.shared import StorageError

LOGGER = "breaker_machines.compat.pybreaker"

#: A valid version-1 record of a fresh closed circuit; the tests below break one field.
FRESH = "[1,%s,0,0,0,null,null,0,0,[]]" % '"closed"'  # noqa: UP031 - the JSON text itself

#: A circuit opened at t=900 whose reset timeout passed at t=950 (the clock starts at 1000).
OPEN_AND_DUE = '[1,"open",1,0,0,900.0,950.0,1,0,[]]'


class Boom(Exception):
    """The protected dependency's failure."""


def boom() -> None:
    raise Boom("down")


def ok(value: Any = 1) -> Any:
    return value


class Held(HandStorage):
    """A storage whose record the test sets by hand (what another process, or a damaged
    store, left there); ``down`` makes every compare-and-set raise, as a store that reads
    but can no longer be written."""

    def __init__(self, record: str | None) -> None:
        super().__init__("held", record)


class Contended(pybreaker.CircuitMemoryStorage):
    """A memory storage where another writer gets in first: ``rival()`` runs before every
    compare-and-set of the breaker under test (its own writes go straight through)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.rival: Callable[[], object] | None = None
        self.once = False
        self.contests = 0
        self._inside = False

    def compare_and_set(self, expected: str | None, record: str) -> tuple[bool, str | None]:
        rival = self.rival
        if rival is not None and not self._inside:
            self._inside = True
            try:
                rival()
            finally:
                self._inside = False
            self.contests += 1
            if self.once:
                self.rival = None
        return super().compare_and_set(expected, record)


class Changes(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.seen.append((old_state.name, new_state.name))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


# ---------------------------------------------------------------------------- records


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ('{"status": "closed"}', TypeError, "not a list"),
        ('[2,"closed",0,0,0,null,null,0,0,[]]', ValueError, "not a version-1 record"),
        ('[1,"closed",0,0,0,null,null,0,0]', ValueError, "not a version-1 record"),
        ('[1,"ajar",0,0,0,null,null,0,0,[]]', ValueError, "'ajar' is not a state"),
        ("[1,7,0,0,0,null,null,0,0,[]]", ValueError, "7 is not a state"),
        ('[1,"closed",-1,0,0,null,null,0,0,[]]', ValueError, "-1 is not a count"),
        ('[1,"closed",true,0,0,null,null,0,0,[]]', ValueError, "True is not a count"),
        ('[1,"closed",0,0,0,null,null,0,"2",[]]', ValueError, "'2' is not a count"),
        ('[1,"closed",0,0,0,null,null,0,0,{}]', TypeError, "probes are not a list"),
        ('[1,"half_open",1,0,0,null,null,1,1,[[0]]]', ValueError, "[0] is not a probe"),
        ('[1,"half_open",1,0,0,null,null,1,1,[7]]', ValueError, "7 is not a probe"),
        # a probe id never issued (next_probe is 1), a probe without a lease
        ('[1,"half_open",1,0,0,null,null,1,1,[[1,5.0]]]', ValueError, "[1, 5.0] is not a probe"),
        ('[1,"half_open",1,0,0,null,null,1,1,[[0,null]]]', ValueError, "[0, None] is not a probe"),
        ('[1,"open",1,0,0,900.0,"soon",1,0,[]]', ValueError, "'soon' is not a time"),
        ('[1,"open",1,0,0,true,950.0,1,0,[]]', ValueError, "True is not a time"),
        ('[1,"open",1,0,0,900.0,null,1,0,[]]', ValueError, "an open circuit without a retry time"),
    ],
)
def test_a_record_that_does_not_validate_is_logged_and_read_as_the_fallback(
    text: str,
    error: type[Exception],
    message: str,
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = Held(text)
    with caplog.at_level(logging.ERROR, LOGGER):
        breaker = pybreaker.CircuitBreaker(fail_max=2, state_storage=storage, clock=clock)
    (logged,) = [r for r in caplog.records if r.name == LOGGER]
    assert "holds an unreadable record" in logged.getMessage()
    assert "fallback_circuit_state='closed'" in logged.getMessage()
    assert logged.exc_info is not None
    refused = logged.exc_info[1]
    assert type(refused) is error
    assert str(refused) == message
    # The storage's own read side and the breaker read the fallback state...
    assert storage.state == pybreaker.STATE_CLOSED
    assert storage.counter == 0
    assert storage.opened_at is None
    assert breaker.current_state == pybreaker.STATE_CLOSED
    # ...and the first change replaces the bad record with a valid one.
    with pytest.raises(Boom):
        breaker.call(boom)
    assert storage.record is not None
    assert storage.record != text
    assert storage.counter == 1
    assert breaker.fail_counter == 1


def test_a_valid_record_is_read_field_by_field(clock: Any) -> None:
    storage = Held('[1,"half_open",3,0,1,1000.0,null,2,5,[[4,1010.5]]]')
    breaker = pybreaker.CircuitBreaker(
        fail_max=2, success_threshold=2, state_storage=storage, clock=clock
    )
    assert storage.state == pybreaker.STATE_HALF_OPEN
    assert storage.success_counter == 1
    assert storage.opened_at == datetime(1970, 1, 1, 0, 16, 40, tzinfo=timezone.utc)
    assert breaker.current_state == pybreaker.STATE_HALF_OPEN
    # The one trial slot is leased (probe 4, until t=1010.5): another call is rejected.
    with pytest.raises(pybreaker.CircuitBreakerError, match="Trial call in progress"):
        breaker.call(ok)
    assert Held(FRESH).state == pybreaker.STATE_CLOSED


@pytest.mark.parametrize("opened_at", ["1e300", "-1e300", "1e18"])
def test_an_opening_time_no_datetime_can_hold_reads_as_none(opened_at: str, clock: Any) -> None:
    storage = Held(f'[1,"open",1,0,0,{opened_at},1e300,1,0,[]]')
    assert storage.state == pybreaker.STATE_OPEN
    assert storage.opened_at is None  # out of datetime's range: not an error
    breaker = pybreaker.CircuitBreaker(state_storage=storage, clock=clock)
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        breaker.call(ok)


def test_an_initial_state_of_a_storage_reads_back() -> None:
    assert pybreaker.CircuitMemoryStorage(pybreaker.STATE_OPEN).state == pybreaker.STATE_OPEN
    assert (
        pybreaker.CircuitMemoryStorage(pybreaker.STATE_HALF_OPEN).state == pybreaker.STATE_HALF_OPEN
    )
    assert (
        pybreaker.CircuitMemoryStorage(pybreaker.STATE_OPEN).opened_at is None
    )  # no opening time: due at once


# ---------------------------------------------------------------------------- failing writes


def test_a_write_that_fails_during_admission_decides_as_the_fallback(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Held(OPEN_AND_DUE)
    breaker = pybreaker.CircuitBreaker(
        fail_max=1, reset_timeout=50, state_storage=storage, clock=clock
    )
    storage.down = True
    ran: list[int] = []

    def work() -> str:
        ran.append(1)
        return "ran"

    with caplog.at_level(logging.WARNING, LOGGER):
        # Due: the call would half-open the circuit, but that write fails: the closed
        # fallback admits it, and its outcome is not recorded.
        assert breaker.call(work) == "ran"
        with pytest.raises(Boom):
            breaker.call(boom)  # a failure that would re-open it: not recorded either
        assert breaker.current_state == pybreaker.STATE_OPEN  # the record still reads open
        storage.down = False
        assert breaker.call(ok, 2) == 2  # the trial call, now written: closes it
    assert ran == [1]
    assert breaker.current_state == pybreaker.STATE_CLOSED
    failed = (
        "pybreaker storage Held failed: deciding as fallback_circuit_state='closed' until it "
        "answers"
    )
    logged = messages(caplog)
    # (A store that reads but cannot write "answers" at each read, and fails at each write.)
    assert logged[0] == failed
    assert logged[-1] == "pybreaker storage Held answers again"
    assert set(logged) == {failed, "pybreaker storage Held answers again"}
    assert all(
        isinstance(r.exc_info[1], ConnectionError)
        for r in caplog.records
        if r.getMessage() == failed and r.exc_info
    )


def test_an_outcome_whose_write_fails_is_lost_not_raised(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Held(FRESH)
    breaker = pybreaker.CircuitBreaker(fail_max=2, state_storage=storage, clock=clock)
    storage.down = True
    with caplog.at_level(logging.WARNING, LOGGER):
        for _ in range(3):  # would trip the circuit if they were recorded
            with pytest.raises(Boom):
                breaker.call(boom)
    assert storage.record == FRESH
    assert storage.writes == 0
    assert breaker.fail_counter == 0
    assert breaker.current_state == pybreaker.STATE_CLOSED
    failed = [m for m in messages(caplog) if "failed: deciding as fallback" in m]
    assert len(failed) == 3  # one per lost outcome (each read in between answered)


def test_a_manual_change_whose_write_fails_changes_nothing(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Held(FRESH)
    changes = Changes()
    breaker = pybreaker.CircuitBreaker(state_storage=storage, listeners=[changes], clock=clock)
    storage.down = True
    with caplog.at_level(logging.WARNING, LOGGER):
        assert breaker.open() is True
        breaker.half_open()
    assert storage.record == FRESH
    assert breaker.current_state == pybreaker.STATE_CLOSED
    assert changes.seen == []
    unchanged = "pybreaker storage failed: the state was not changed"
    assert [m for m in messages(caplog) if m == unchanged] == [unchanged] * 2


def test_the_redis_compare_and_set_raises_a_storage_error_when_redis_fails() -> None:
    redis = pytest.importorskip("redis")
    import socket

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from breaker_machines.compat.pybreaker import CircuitRedisStorage

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    client = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_timeout=1)
    try:
        storage = CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace="bm-unreachable")
        with pytest.raises(StorageError, match=r"^redis: .*") as caught:
            storage.compare_and_set(None, FRESH)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
        with pytest.raises(StorageError, match=r"^redis: "):
            storage.read()
    finally:
        client.close()


# ---------------------------------------------------------------------------- races


def test_admission_that_loses_a_race_steps_again_on_the_winning_record(clock: Any) -> None:
    storage = Contended(pybreaker.STATE_OPEN)  # open and due: the next call half-opens it
    here = pybreaker.CircuitBreaker(reset_timeout=30, state_storage=storage, clock=clock)
    there = pybreaker.CircuitBreaker(reset_timeout=30, state_storage=storage, clock=clock)
    # Another process opens the circuit afresh just before this one writes "half-open".
    storage.rival, storage.once = there.open, True
    ran: list[int] = []
    with pytest.raises(pybreaker.CircuitBreakerError, match="Timeout not elapsed yet"):
        here.call(lambda: ran.append(1))
    assert ran == []
    assert storage.contests == 1
    assert storage.state == pybreaker.STATE_OPEN
    clock.advance(30)
    assert here.call(ok, 3) == 3
    assert storage.state == pybreaker.STATE_CLOSED


def test_admission_that_keeps_losing_gives_up_and_uses_the_fallback(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Contended(pybreaker.STATE_CLOSED)  # (its fallback state: closed)
    here = pybreaker.CircuitBreaker(state_storage=storage, clock=clock)
    there = pybreaker.CircuitBreaker(state_storage=storage, clock=clock)
    there.half_open()
    storage.rival = there.half_open  # a new half-open generation before every write
    with caplog.at_level(logging.WARNING, LOGGER):
        assert here.call(ok, "admitted") == "admitted"  # the closed fallback admits it
    assert storage.contests == 64
    assert messages(caplog) == ["pybreaker storage: admission lost 64 races in a row"]
    assert storage.state == pybreaker.STATE_HALF_OPEN  # the fallback's call recorded nothing


def test_an_outcome_that_keeps_losing_is_dropped_after_a_bounded_retry(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Contended(pybreaker.STATE_CLOSED)
    here = pybreaker.CircuitBreaker(fail_max=1000, state_storage=storage, clock=clock)
    there = pybreaker.CircuitBreaker(fail_max=1000, state_storage=storage, clock=clock)

    def fail_there() -> None:
        with pytest.raises(Boom):
            there.call(boom)

    storage.rival = fail_there  # another failure is counted before every write of ours
    with caplog.at_level(logging.WARNING, LOGGER), pytest.raises(Boom):
        here.call(boom)
    storage.rival = None
    assert storage.contests == 64
    assert messages(caplog) == ["pybreaker storage: an outcome lost 64 races in a row"]
    assert storage.counter == 64  # the rival's failures; ours was given up
    assert here.fail_counter == 64


def test_a_manual_change_that_loses_once_is_written_on_the_winning_record(clock: Any) -> None:
    storage = Contended(pybreaker.STATE_CLOSED)
    changes = Changes()
    here = pybreaker.CircuitBreaker(
        reset_timeout=30, state_storage=storage, listeners=[changes], clock=clock
    )
    there = pybreaker.CircuitBreaker(reset_timeout=30, state_storage=storage, clock=clock)
    storage.rival, storage.once = there.half_open, True
    here.open()
    assert storage.contests == 1
    assert storage.state == pybreaker.STATE_OPEN
    # Noticed the rival's half-open first, then wrote its own open on top of it.
    assert changes.seen == [("closed", "half-open"), ("half-open", "open")]
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        here.call(ok)


def test_a_manual_change_that_keeps_losing_gives_up(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Contended(pybreaker.STATE_CLOSED)
    here = pybreaker.CircuitBreaker(state_storage=storage, clock=clock)
    there = pybreaker.CircuitBreaker(state_storage=storage, clock=clock)
    storage.rival = there.half_open
    with caplog.at_level(logging.WARNING, LOGGER):
        here.open()
    storage.rival = None
    assert storage.contests == 64
    assert messages(caplog) == ["pybreaker storage: a state change lost 64 races in a row"]
    assert storage.state == pybreaker.STATE_HALF_OPEN  # the rival's last write stands


def test_an_outcome_for_a_record_replaced_meanwhile_is_stale(clock: Any) -> None:
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    backup = storage.read()  # generation 0
    breaker = pybreaker.CircuitBreaker(fail_max=5, state_storage=storage, clock=clock)
    breaker.open()
    breaker.close()  # generation 2: calls are admitted on it

    def restored_then_failed() -> None:
        # Someone restores the old record while the call runs (an older generation).
        current = storage.read()
        assert storage.compare_and_set(current, backup or "") == (True, None)
        raise Boom("down")

    with pytest.raises(Boom):
        breaker.call(restored_then_failed)
    assert storage.read() == backup  # the failure of generation 2 was not applied to 0
    assert breaker.fail_counter == 0
    assert breaker.current_state == pybreaker.STATE_CLOSED


# ---------------------------------------------------------------------------- the breaker


@pytest.fixture(params=["own", "memory"])
def make(request: pytest.FixtureRequest, clock: Any) -> Callable[..., pybreaker.CircuitBreaker]:
    def build(**options: Any) -> pybreaker.CircuitBreaker:
        if request.param == "memory":
            options["state_storage"] = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        return pybreaker.CircuitBreaker(clock=clock, **options)

    return build


def test_calling_without_listeners_counts_the_block(
    make: Callable[..., pybreaker.CircuitBreaker],
) -> None:
    breaker = make(fail_max=3)
    for _ in range(2):
        with pytest.raises(Boom), breaker.calling():
            boom()
    assert breaker.fail_counter == 2
    with breaker.calling():
        pass
    assert breaker.fail_counter == 0
    for _ in range(2):
        with pytest.raises(Boom), breaker.calling():
            boom()
    with (
        pytest.raises(pybreaker.CircuitBreakerError, match="Failures threshold reached"),
        breaker.calling(),
    ):
        boom()
    assert breaker.current_state == pybreaker.STATE_OPEN


def test_a_raising_is_system_error_counts_the_exception_as_a_failure(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Strict(pybreaker.CircuitBreaker):
        def is_system_error(self, exception: BaseException) -> bool:
            raise RuntimeError("bug in the override")

    breaker = Strict(fail_max=2, name="strict", clock=clock)
    with caplog.at_level(logging.ERROR, LOGGER), pytest.raises(Boom):
        breaker.call(boom)
    assert breaker.fail_counter == 1
    assert messages(caplog) == ["breaker 'strict': is_system_error raised; counted as one"]
    assert "bug in the override" in caplog.text
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(boom)
    assert breaker.current_state == pybreaker.STATE_OPEN


def test_the_decorator_refuses_what_it_cannot_guard(clock: Any) -> None:
    breaker = pybreaker.CircuitBreaker(clock=clock)
    with pytest.raises(TypeError, match="a breaker decorates one function"):
        breaker(ok, boom)  # type: ignore[call-overload]
    with pytest.raises(ConfigError) as caught:
        breaker(42)  # type: ignore[call-overload]
    assert caught.value.field == "func"
    assert "must be callable" in str(caught.value)
    with pytest.raises(ConfigError, match="must be callable"):
        breaker()(None)  # type: ignore[arg-type]
    assert breaker()(ok)(5) == 5


def test_a_started_generator_dropped_unfinished_settles_quietly(
    make: Callable[..., pybreaker.CircuitBreaker], clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    breaker = make(fail_max=1, reset_timeout=10)

    @breaker
    def numbers() -> Iterator[int]:
        yield 0
        yield 1

    breaker.open()
    clock.advance(10)
    for number in numbers():  # the trial call, abandoned after its first item
        assert number == 0
        break
    gc.collect()
    assert breaker.call(ok) == 1  # the trial slot was freed, as documented
    assert breaker.current_state == pybreaker.STATE_CLOSED
    assert [str(hook.exc_value) for hook in unraisable] == []


def test_building_on_a_stored_open_circuit_notifies_nothing(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import pybreaker as original  # the original library (in the test dependency group)

    heard: list[tuple[str, str]] = []

    class Original(original.CircuitBreakerListener):  # type: ignore[misc,name-defined]
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            heard.append((old_state.name, new_state.name))

    built = original.CircuitBreaker(
        listeners=[Original()], state_storage=original.CircuitMemoryStorage("open")
    )
    assert built.current_state == "open"
    assert heard == []  # pybreaker: reading the storage when built is no state change

    class Reading(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            heard.append((old_state.name, cb.current_state))

    with caplog.at_level(logging.ERROR, LOGGER):
        ours = pybreaker.CircuitBreaker(
            listeners=[Reading()],
            state_storage=pybreaker.CircuitMemoryStorage(pybreaker.STATE_OPEN),
            clock=clock,
        )
    assert ours.current_state == pybreaker.STATE_OPEN
    assert messages(caplog) == []  # no listener error: the hook never saw a half-built breaker
    assert heard == []


# ---------------------------------------------------------------------------- aiobreaker


class Transitions(aiobreaker.CircuitBreakerListener):
    """Overrides state_change only: the other hooks are CircuitBreakerListener's."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        self.seen.append((old.state.name, new.state.name))


class Ready:
    """An awaitable that is not a coroutine (as an ``asyncio.Future`` or a Deferred)."""

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


TRIAL_RUNNING = "Trial call in progress, circuit breaker still half-open"


@pytest.mark.anyio
async def test_aiobreaker_hooks_a_listener_does_not_override_do_nothing(clock: Any) -> None:
    listener = Transitions()
    breaker = aiobreaker.CircuitBreaker(fail_max=2, listeners=[listener], clock=clock)

    async def fail() -> None:
        raise Boom("down")

    with pytest.raises(Boom):
        await breaker.call_async(fail)  # before_call and failure: the base class's
    with pytest.raises(aiobreaker.CircuitBreakerError, match="Failures threshold reached"):
        await breaker.call_async(fail)
    assert listener.seen == [("CLOSED", "OPEN")]
    base = aiobreaker.CircuitBreakerListener()
    assert base.before_call(breaker, fail) is None
    assert base.failure(breaker, Boom()) is None
    assert base.success(breaker) is None


@pytest.mark.anyio
async def test_aiobreaker_an_awaitable_that_is_not_a_coroutine(clock: Any) -> None:
    handed: list[str] = []

    class Deferred(aiobreaker.CircuitBreakerListener):
        def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> Ready:
            handed.append(func.__name__)
            return Ready()

    breaker = aiobreaker.CircuitBreaker(listeners=[Deferred()], clock=clock)
    with pytest.warns(RuntimeWarning, match=r"before_call\(\) returned an awaitable"):
        assert breaker.call(ok, 4) == 4  # nothing can await it here: warned, left alone

    async def work() -> str:
        return "awaited"

    assert await breaker.call_async(work) == "awaited"  # awaited there, without a warning
    assert handed == ["ok", "work"]


@pytest.mark.anyio
async def test_aiobreaker_an_async_state_change_hook_may_remove_its_listener(
    clock: Any,
) -> None:
    seen: list[object] = []

    class Once(aiobreaker.CircuitBreakerListener):
        async def state_change(self, breaker: Any, old: Any, new: Any) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append((old.state.name, new.state.name))
            if new.state is aiobreaker.CircuitBreakerState.CLOSED:
                breaker.remove_listener(self)

        def success(self, breaker: Any) -> None:
            seen.append("success")

    breaker = aiobreaker.CircuitBreaker(listeners=[Once()], clock=clock)
    with pytest.warns(RuntimeWarning, match=r"state_change\(\) returned an awaitable"):
        breaker.open()  # where nothing is awaited: the hook does not run
    clock.advance(60)

    async def trial() -> str:
        return "ok"

    assert await breaker.call_async(trial) == "ok"  # half-opens, then closes the circuit
    assert seen == [("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]  # no success: removed
    assert breaker.listeners == ()
    assert breaker.current_state is aiobreaker.CircuitBreakerState.CLOSED


@pytest.mark.anyio
async def test_aiobreaker_an_excluded_exception_with_listeners_is_a_success(
    clock: Any,
) -> None:
    log: list[object] = []

    class Recorder(aiobreaker.CircuitBreakerListener):
        def failure(self, breaker: Any, exception: Exception) -> None:
            log.append("failure")

        async def success(self, breaker: Any) -> None:
            await anyio.lowlevel.checkpoint()
            log.append("success")

        async def state_change(self, breaker: Any, old: Any, new: Any) -> None:
            log.append((old.state.name, new.state.name))

    breaker = aiobreaker.CircuitBreaker(
        fail_max=1, exclude=[KeyError], listeners=[Recorder()], clock=clock
    )

    async def lookup() -> None:
        raise KeyError("absent")

    with pytest.raises(KeyError):
        await breaker.call_async(lookup)
    assert log == ["success"]
    assert breaker.fail_counter == 0
    with pytest.warns(RuntimeWarning):
        breaker.open()
    clock.advance(60)
    with pytest.raises(KeyError):
        await breaker.call_async(lookup)  # the trial: excluded, so it closes the circuit
    assert log == ["success", ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED"), "success"]
    assert breaker.current_state is aiobreaker.CircuitBreakerState.CLOSED


def test_aiobreaker_sync_call_of_its_own_decorated_function_runs_it_once(clock: Any) -> None:
    breaker = aiobreaker.CircuitBreaker(fail_max=3, clock=clock)

    @breaker
    def flaky() -> None:
        raise Boom("down")

    with pytest.raises(Boom):
        breaker.call(flaky)
    assert breaker.fail_counter == 1  # not counted twice


def test_aiobreaker_sync_calls_half_open_and_meet_the_trial_in_progress(clock: Any) -> None:
    listener = Transitions()
    breaker = aiobreaker.CircuitBreaker(fail_max=1, listeners=[listener], clock=clock)
    with pytest.raises(aiobreaker.CircuitBreakerError):
        breaker.call(boom)
    clock.advance(60)

    def rows() -> Iterator[int]:
        yield 1
        yield 2

    trial = breaker.call(rows)  # admitted now: the trial call, still running
    assert listener.seen == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN")]
    with pytest.raises(aiobreaker.CircuitBreakerError, match=TRIAL_RUNNING):
        breaker.call(ok)
    assert list(trial) == [1, 2]  # the trial finishes: the circuit closes
    assert breaker.current_state is aiobreaker.CircuitBreakerState.CLOSED
    assert listener.seen[-1] == ("HALF_OPEN", "CLOSED")
    assert breaker.call(ok, 7) == 7
