"""pybreaker 1.4's public API on breaker-machines' core: change one import.

Replace ``import pybreaker`` with ``import breaker_machines.compat.pybreaker as pybreaker``.
The names, arguments (in pybreaker's order), listener hooks (and the order listeners see
them), error messages and storages are pybreaker's; underneath, every decision is the
core's ``step()``: a breaker without ``state_storage`` keeps its circuit in a
:class:`~breaker_machines.ThreadedBreaker`, one with a storage reads the circuit from it,
steps the core and writes the result back by compare-and-set. So:

* no lock is held across the guarded call: threads run their calls concurrently (pybreaker
  holds one lock per breaker across every call);
* a half-open circuit runs one trial call at a time (across every process sharing a Redis
  storage); the others are rejected with :class:`CircuitBreakerError` until it decides;
* :class:`CircuitRedisStorage` keeps the circuit in one key: a call costs one round trip (a
  ``GET``) while the circuit is closed and healthy, two when it writes (the ``GET``, then one
  compare-and-set script), and concurrent processes never lose an update;
* ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` (a guarded generator closed
  early) are not failures; a listener or an ``exclude`` predicate that raises is logged and
  never breaks the call;
* invalid arguments raise :class:`~breaker_machines.ConfigError` (a ``ValueError``) naming
  pybreaker's argument.

Not supported: ``call_async`` and ``@breaker(__pybreaker_call_async=True)`` (Tornado; guard
async code with :class:`~breaker_machines.Breaker`), async functions (refused), and custom
storages written against pybreaker's nine storage methods (a storage here implements
:meth:`CircuitBreakerStorage.read` and :meth:`CircuitBreakerStorage.compare_and_set`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import threading
import time
import types
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Final, ParamSpec, Protocol, TypeVar, cast, overload

from .._base import _LOG
from .._core.errors import ConfigError, InvalidEvent
from .._core.policy import Policy
from .._core.records import (
    EMPTY_WINDOW,
    Admitted,
    BreakerState,
    CallFinished,
    CallRequested,
    Effect,
    Event,
    Probe,
    Rejected,
    RemoteObserved,
    Reset,
    Transitioned,
)
from .._core.shortcuts import inert_success, rejection_delay
from .._core.status import Outcome, State
from .._core.transitions import step
from ..callbacks import Transition, is_async
from ..errors import CircuitOpenError
from ..storage.shared import StorageError
from ..threaded import ThreadedBreaker
from ._rules import ExcludeRule, is_excluded

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "STATE_CLOSED",
    "STATE_HALF_OPEN",
    "STATE_OPEN",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitBreakerListener",
    "CircuitBreakerState",
    "CircuitBreakerStorage",
    "CircuitClosedState",
    "CircuitHalfOpenState",
    "CircuitMemoryStorage",
    "CircuitOpenState",
    "CircuitRedisStorage",
]

P = ParamSpec("P")
T = TypeVar("T")

logger: logging.Logger = logging.getLogger("breaker_machines.compat.pybreaker")

STATE_OPEN: Final = "open"
"""``current_state`` of an open circuit (pybreaker's constant)."""
STATE_CLOSED: Final = "closed"
"""``current_state`` of a closed circuit (pybreaker's constant)."""
STATE_HALF_OPEN: Final = "half-open"
"""``current_state`` of a half-open circuit (pybreaker's constant)."""

# pybreaker's names of the core's states. FORCED_OPEN and DISABLED are never entered
# through this API; they are named as what they do, should a state record carry them.
_NAMES: Final[dict[State, str]] = {
    State.CLOSED: STATE_CLOSED,
    State.OPEN: STATE_OPEN,
    State.HALF_OPEN: STATE_HALF_OPEN,
    State.FORCED_OPEN: STATE_OPEN,
    State.DISABLED: STATE_CLOSED,
}
_STATUSES: Final[dict[str, State]] = {
    STATE_CLOSED: State.CLOSED,
    STATE_OPEN: State.OPEN,
    STATE_HALF_OPEN: State.HALF_OPEN,
}
_CLOSED: Final = State.CLOSED
_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
_CANCELLED: Final = Outcome.CANCELLED
_GENERATOR: Final = types.GeneratorType
_COROUTINE: Final = types.CoroutineType
_TRIPPED: Final[dict[State, str]] = {
    State.CLOSED: "Failures threshold reached, circuit breaker opened",
    State.HALF_OPEN: "Trial call failed, circuit breaker opened",
}
_REJECTED: Final[dict[State, str]] = {
    State.OPEN: "Timeout not elapsed yet, circuit breaker still open",
    State.HALF_OPEN: "Trial call in progress, circuit breaker half-open",
}
_NO_TORNADO: Final = (
    "call_async (Tornado coroutines) is not supported by breaker_machines.compat.pybreaker: "
    "guard async code with breaker_machines.Breaker (asyncio and trio), or with "
    "breaker_machines.compat.aiobreaker when migrating from aiobreaker"
)
# A storage that keeps losing its compare-and-set this many times in a row for one
# operation is treated as unreachable for that operation.
_MAX_ATTEMPTS: Final = 64

"""What ``exclude`` holds: an exception type, or a predicate on the exception."""


def _status_of(field: str, value: object) -> State:
    status = _STATUSES.get(value) if isinstance(value, str) else None
    if status is None:
        raise ConfigError(
            field, value, f"must be one of {STATE_CLOSED!r}, {STATE_OPEN!r}, {STATE_HALF_OPEN!r}"
        )
    return status


# ---------------------------------------------------------------------------- states


class CircuitBreakerState:
    """A state of the circuit as pybreaker shows it: :attr:`CircuitBreaker.state`, and the
    ``old_state``/``new_state`` a listener's ``state_change`` receives.

    One immutable instance per state: compare ``.name`` with the ``STATE_*`` constants, or
    use ``isinstance`` with :class:`CircuitClosedState`, :class:`CircuitOpenState` and
    :class:`CircuitHalfOpenState`. ``str()`` is the name.
    """

    __slots__ = ()
    _state_name: ClassVar[str] = ""

    @property
    def name(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (as pybreaker's)."""
        return self._state_name

    def __str__(self) -> str:
        return self._state_name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state_name!r}>"


class CircuitClosedState(CircuitBreakerState):
    """The closed state: calls run; ``fail_max`` failures in a row open the circuit."""

    __slots__ = ()
    _state_name: ClassVar[str] = STATE_CLOSED


class CircuitOpenState(CircuitBreakerState):
    """The open state: calls are rejected until ``reset_timeout`` has elapsed."""

    __slots__ = ()
    _state_name: ClassVar[str] = STATE_OPEN


class CircuitHalfOpenState(CircuitBreakerState):
    """The half-open state: one trial call at a time runs; ``success_threshold``
    successes close the circuit, a failure opens it again."""

    __slots__ = ()
    _state_name: ClassVar[str] = STATE_HALF_OPEN


_CLOSED_STATE: Final = CircuitClosedState()
_OPEN_STATE: Final = CircuitOpenState()
_HALF_OPEN_STATE: Final = CircuitHalfOpenState()
_STATE_OBJECTS: Final[dict[State, CircuitBreakerState]] = {
    State.CLOSED: _CLOSED_STATE,
    State.OPEN: _OPEN_STATE,
    State.HALF_OPEN: _HALF_OPEN_STATE,
    State.FORCED_OPEN: _OPEN_STATE,
    State.DISABLED: _CLOSED_STATE,
}


# ---------------------------------------------------------------------------- errors


class CircuitBreakerError(Exception):
    """The circuit rejected the call (as pybreaker's).

    Raised instead of running a call while the circuit is open (or half-open with its trial
    call running), and, with ``throw_new_error_on_trip=True``, by the call whose failure
    opens the circuit: that one is chained from the call's own exception (``__cause__``).
    """


# ---------------------------------------------------------------------------- listeners


class CircuitBreakerListener:
    """Base class of listeners (as pybreaker's): override the hooks you need.

    For one call, listeners see: ``state_change`` (an open circuit becoming half-open for
    this trial call), ``before_call``, the call, then ``failure`` followed by
    ``state_change`` (the failure opened the circuit), or ``state_change`` (the success
    closed it) followed by ``success``. A rejected call calls no hook. An excluded
    exception counts as a success. Hooks run in the calling thread; one that raises is
    logged (logger ``breaker_machines.compat.pybreaker``) and never breaks the call or the
    hooks after it. Any object with some of these methods can be a listener.
    """

    def before_call(
        self, cb: CircuitBreaker, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Called before the circuit breaker ``cb`` calls ``func`` (once it is admitted)."""

    def failure(self, cb: CircuitBreaker, exc: BaseException) -> None:
        """Called when a call guarded by ``cb`` raised ``exc``, a system error."""

    def success(self, cb: CircuitBreaker) -> None:
        """Called when a call guarded by ``cb`` succeeded (or raised an excluded exception)."""

    def state_change(
        self,
        cb: CircuitBreaker,
        old_state: CircuitBreakerState | None,
        new_state: CircuitBreakerState,
    ) -> None:
        """Called when the state of ``cb`` changes, or when ``cb`` notices that another
        breaker sharing its storage changed it."""


_HOOKS: Final = ("before_call", "success", "failure", "state_change")


def _hook(listener: object, name: str) -> Callable[..., object] | None:
    """``listener``'s bound hook ``name``; None if it has none or keeps the base no-op."""
    method: object = getattr(listener, name, None)
    if method is None or not callable(method):
        return None
    inherited: object = getattr(type(listener), name, None)
    if inherited is not None and inherited is getattr(CircuitBreakerListener, name):
        return None  # the base class's no-op: not worth a call per guarded call
    return method


# ---------------------------------------------------------------------------- records

# A circuit is stored as one JSON text: [1, status, version, consecutive failures,
# half-open successes, opened_at, retry_at, trips, next probe id, [[probe id, lease
# end], ...]]. Times are the breakers' clock (the wall clock by default with a storage).


def _json_time(value: float | None) -> str:
    return "null" if value is None else repr(float(value))  # JSON's text of a finite float


def _encode(state: BreakerState) -> str:
    """The record of ``state`` (what ``json.dumps`` would write, built directly)."""
    probes = ",".join(f"[{probe.id},{_json_time(probe.lease_until)}]" for probe in state.probes)
    return (
        f'[1,"{state.status.value}",{state.version:d},{state.consecutive_failures:d},'
        f"{state.half_open_successes:d},{_json_time(state.opened_at)},"
        f"{_json_time(state.retry_at)},{state.trips:d},{state.next_probe:d},[{probes}]]"
    )


_STORED_STATUSES: Final = {status.value: status for status in State}


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a time")
    return float(value)


def _decode(text: str) -> BreakerState:
    """A stored circuit, validated field by field (ValueError if it is not one)."""
    data: object = json.loads(text)
    if not isinstance(data, list):
        raise TypeError("not a list")
    fields = cast("list[object]", data)
    if len(fields) != 10 or fields[0] != 1:
        raise ValueError("not a version-1 record")
    status = _STORED_STATUSES.get(fields[1]) if isinstance(fields[1], str) else None
    if status is None:
        raise ValueError(f"{fields[1]!r} is not a state")
    next_probe = _count(fields[8])
    raw_probes = fields[9]
    if not isinstance(raw_probes, list):
        raise TypeError("probes are not a list")
    probes: list[Probe] = []
    for item in cast("list[object]", raw_probes):
        if not isinstance(item, list) or len(cast("list[object]", item)) != 2:
            raise ValueError(f"{item!r} is not a probe")
        pair = cast("list[object]", item)
        probe_id = _count(pair[0])
        lease = _time(pair[1])
        if probe_id >= next_probe or lease is None:
            raise ValueError(f"{item!r} is not a probe")
        probes.append(Probe(probe_id, lease))
    retry_at = _time(fields[6])
    if status is State.OPEN and retry_at is None:
        raise ValueError("an open circuit without a retry time")
    return BreakerState(
        status,
        _count(fields[2]),
        _count(fields[3]),
        _count(fields[4]),
        EMPTY_WINDOW,
        EMPTY_WINDOW,
        _time(fields[5]),
        retry_at,
        _count(fields[7]),
        tuple(probes),
        next_probe,
    )


def _initial(status: State) -> BreakerState:
    """A fresh circuit in ``status``. An open one has no opening time and is due at once:
    the next call is a trial call (as pybreaker's storages given ``"open"``)."""
    if status is State.OPEN:
        return BreakerState(State.OPEN, retry_at=0.0, trips=1)
    if status is State.HALF_OPEN:
        return BreakerState(State.HALF_OPEN, trips=1)
    return BreakerState()


def _datetime(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- storage


class CircuitBreakerStorage(ABC):
    """Where a circuit's state lives (as pybreaker's, with a smaller protocol).

    The whole circuit is one opaque text record. A storage implements two operations,
    :meth:`read` and :meth:`compare_and_set`; breakers do everything else (every decision
    is the core's ``step()``, made in the calling process), so a storage shared by several
    processes needs only an atomic compare-and-set. An operation that raises (the store is
    unreachable) makes the breaker decide as :attr:`fallback_circuit_state` says for that
    call; it is logged, never raised into the caller.

    pybreaker's read side is here too (:attr:`state`, :attr:`counter`,
    :attr:`success_counter`, :attr:`opened_at`); its setters and ``increment_*``/
    ``reset_*`` methods are not: change the circuit through the breaker.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._fallback: State = State.CLOSED

    @property
    def name(self) -> str:
        """What kind of storage this is (``"memory"``, ``"redis"``), as pybreaker's."""
        return self._name

    @property
    def fallback_circuit_state(self) -> str:
        """The state a breaker assumes while this storage fails, or when it holds no
        (or an unreadable) record: ``"closed"`` admits every call, ``"open"`` rejects
        every call, ``"half-open"`` admits one call at a time per breaker. Outcomes are
        not recorded meanwhile."""
        return _NAMES[self._fallback]

    @abstractmethod
    def read(self) -> str | None:
        """The stored record, or None when there is none."""

    @abstractmethod
    def compare_and_set(self, expected: str | None, record: str) -> tuple[bool, str | None]:
        """Store ``record`` if the stored record is still ``expected`` (None: no record).

        Atomically. Returns ``(True, None)`` when it stored it, ``(False, current)`` with
        the record now stored (None: none) when it did not.
        """

    def _current(self) -> BreakerState:
        try:
            text = self.read()
            return _initial(self._fallback) if text is None else _decode(text)
        except Exception:
            return _initial(self._fallback)

    @property
    def state(self) -> str:
        """The circuit's state (``"closed"``, ``"open"``, ``"half-open"``); the fallback
        state while the storage fails."""
        return _NAMES[self._current().status]

    @property
    def counter(self) -> int:
        """Consecutive failures of the closed circuit (0 while the storage fails)."""
        return self._current().consecutive_failures

    @property
    def success_counter(self) -> int:
        """Successful trial calls of the half-open circuit (0 while the storage fails)."""
        return self._current().half_open_successes

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened (UTC), if it is open or half-open and the
        breakers use the wall clock (the default with a storage); else None."""
        return _datetime(self._current().opened_at)


class CircuitMemoryStorage(CircuitBreakerStorage):
    """A circuit kept in this process's memory, starting in ``state`` (as pybreaker's).

    Breakers given the same instance share one circuit. A breaker given no storage keeps
    its circuit in a ``ThreadedBreaker`` of its own, which is faster.
    """

    def __init__(self, state: str) -> None:
        super().__init__("memory")
        self._fallback = _status_of("state", state)
        self._lock = threading.Lock()
        self._record: str | None = _encode(_initial(self._fallback))

    def read(self) -> str | None:
        """The stored record."""
        return self._record

    def compare_and_set(self, expected: str | None, record: str) -> tuple[bool, str | None]:
        """Store ``record`` if the stored record is still ``expected``."""
        with self._lock:
            current = self._record
            if current != expected:
                return False, current
            self._record = record
            return True, None


# Compare-and-set of the record in one round trip. ARGV: expected ('' for none), record.
# Replies 1 when it stored the record, else the stored record ('' for none).
_COMPARE_AND_SET: Final = """
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return current
"""


class _SyncRedis(Protocol):
    """What :class:`CircuitRedisStorage` uses of a sync redis-py client."""

    def get(self, name: str, /) -> Any: ...

    def set(self, name: str, value: str, /, *, nx: bool = ...) -> Any: ...

    def register_script(self, script: str, /) -> Callable[..., Any]: ...


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


class CircuitRedisStorage(CircuitBreakerStorage):
    """A circuit kept in Redis, shared by every breaker (every process) using the same
    server and ``namespace`` (as pybreaker's).

    ``redis_object`` is a sync redis-py client (``redis.Redis``, a ``django_redis``
    connection; ``decode_responses`` may be either). The circuit is one key,
    ``<namespace>:pybreaker:circuit`` (``pybreaker:circuit`` without a namespace), written
    with ``state`` when it does not exist yet. Reading it is one ``GET``; changing it is
    one compare-and-set script (``EVALSHA``); no other command is sent. While Redis fails
    (or the key is missing or unreadable) breakers decide as ``fallback_circuit_state``.
    ``cluster_mode`` is accepted for compatibility: one key is always cluster-safe.
    The breakers' clocks must agree: the wall clock (the default), kept in sync by NTP.
    """

    BASE_NAMESPACE: ClassVar[str] = "pybreaker"

    def __init__(
        self,
        state: str,
        redis_object: _SyncRedis,
        namespace: str | None = None,
        fallback_circuit_state: str = STATE_CLOSED,
        cluster_mode: bool = False,
    ) -> None:
        try:
            from redis.exceptions import RedisError
        except ImportError as error:  # pragma: no cover - redis is a test dependency
            raise ImportError(
                "CircuitRedisStorage needs redis-py: pip install 'breaker-machines[redis]'"
            ) from error
        super().__init__("redis")
        initial = _status_of("state", state)
        self._fallback = _status_of("fallback_circuit_state", fallback_circuit_state)
        if namespace is not None and not isinstance(namespace, str):
            raise ConfigError("namespace", namespace, "must be a string or None")
        self._errors: tuple[type[Exception], ...] = (RedisError, UnicodeError)
        self._redis = redis_object
        parts = [self.BASE_NAMESPACE, "circuit"]
        if namespace:
            parts.insert(0, namespace)
        self._key = ":".join(parts)
        self._cluster_mode = bool(cluster_mode)
        self._script = redis_object.register_script(_COMPARE_AND_SET)
        try:
            redis_object.set(self._key, _encode(_initial(initial)), nx=True)
        except self._errors:
            logger.warning(
                "CircuitRedisStorage %r: could not write the initial state; breakers use "
                "fallback_circuit_state=%r until the key exists",
                self._key,
                _NAMES[self._fallback],
                exc_info=True,
            )

    @property
    def key(self) -> str:
        """The Redis key holding the circuit."""
        return self._key

    def read(self) -> str | None:
        """The stored record (one ``GET``). Raises StorageError when Redis fails."""
        try:
            return _text(self._redis.get(self._key))
        except self._errors as error:
            raise StorageError(f"redis: {error}") from error

    def compare_and_set(self, expected: str | None, record: str) -> tuple[bool, str | None]:
        """Store ``record`` if the stored record is still ``expected`` (one ``EVALSHA``).
        Raises StorageError when Redis fails."""
        try:
            # Bytes, so that a record that is not UTF-8 (read with surrogateescape) goes
            # back exactly as stored and can be compared, then replaced.
            args = [(expected or "").encode("utf-8", "surrogateescape"), record.encode()]
            reply: object = self._script(keys=[self._key], args=args)
        except self._errors as error:
            raise StorageError(f"redis: {error}") from error
        if reply == 1:
            return True, None
        return False, _text(reply) or None


# ---------------------------------------------------------------------------- runtimes

_Permit = Any  # what a runtime's admit() returns and its settling methods take back


class _Local(threading.local):
    """Per thread: the state a failure settled in this thread opened the circuit from."""

    tripped: State | None = None


class _Threaded:
    """The circuit of a breaker with no storage: a ThreadedBreaker of its own.

    Calls are admitted and counted by that breaker's runtime (its lock is held around the
    core's ``step()`` and its counters, never around the call), without a guard object:
    a closed circuit admits on one read of its state, an open one rejects on the core's
    ``rejection_delay`` shortcut, anything else asks the core (``_admit``); outcomes are
    counted by ``_record``, the runtime's own path. Manual controls step the core under the
    lock: ``open()`` and ``half_open()`` adopt a new generation (the core's remote
    adoption: it has no timed manual open), ``close()`` is a reset.

    A permit is the generation of a call admitted closed (an int), else the core's
    ``Admitted`` (generation and half-open probe id).
    """

    __slots__ = ("_changed", "_local", "breaker")

    def __init__(
        self,
        name: str,
        policy: Policy,
        clock: Callable[[], float],
        changed: Callable[[State, State], None],
    ) -> None:
        self._changed = changed
        self._local = _Local()
        # No event log, observers, bulkhead or timeout: calls are never timed, so an
        # outcome is reported with _record() (what the runtime's guards end with).
        self.breaker = ThreadedBreaker(
            name, policy=policy, clock=clock, on_transition=self._transitioned, event_log=0
        )

    def _transitioned(self, transition: Transition) -> None:
        if transition.target is State.OPEN:
            self._local.tripped = transition.source
        self._changed(transition.source, transition.target)

    def admit(self) -> _Permit:
        b = self.breaker
        state = b._state  # one read: status and version from the same record
        status = state.status
        if status is _CLOSED:
            return state.version
        now = b._clock()
        delay = rejection_delay(state, now)
        if delay is None:
            try:
                return b._admit(now)  # the core decides (and counts, logs a rejection)
            except CircuitOpenError as error:
                status = error.state
        else:  # the core would only reject: skip building an event (as the guards do)
            with b._lock:
                b._rejections += 1
            if _LOG.debug:
                b._log_rejection("open", status, None if delay == math.inf else delay)
        # Raised outside the handler: the rejection carries no context of ours.
        raise CircuitBreakerError(_REJECTED.get(status, _REJECTED[State.OPEN]))

    def succeed(self, permit: _Permit) -> None:
        b = self.breaker
        if permit.__class__ is int:
            if b._quiet:  # BreakerBase._count's first case, inline: a success that only
                with b._lock:  # breaks a run of failures not yet folded into the core
                    if b._quiet:
                        b._successes += 1
                        b._room = b._room_full
                        return
            b._record(_SUCCESS, 0.0, permit, None)
        else:
            b._record(_SUCCESS, 0.0, permit.generation, permit.probe)

    def fail(self, permit: _Permit, error: BaseException) -> State | None:
        b = self.breaker
        if permit.__class__ is int:
            generation, probe = permit, None
            if b._room:  # BreakerBase._count's failure case, inline: one that cannot trip
                with b._lock:  # yet only lowers the room the runtime counts in
                    if b._room and generation == b._version:
                        b._failures += 1
                        b._room -= 1
                        return None
        else:
            generation, probe = permit.generation, permit.probe
        local = self._local
        local.tripped = None  # set by _transitioned if this failure opens the circuit
        b._record(_FAILURE, 0.0, generation, probe)
        return local.tripped

    def cancel(self, permit: _Permit, error: BaseException) -> None:
        if permit.__class__ is int:
            self.breaker._record(_CANCELLED, 0.0, permit, None)
        else:
            self.breaker._record(_CANCELLED, 0.0, permit.generation, permit.probe)

    def status(self) -> State:
        return self.breaker.state

    def snapshot(self) -> BreakerState:
        return self.breaker.snapshot  # folds failures counted without the core, locked

    def control(self, make: Callable[[BreakerState, float], Event]) -> None:
        breaker = self.breaker
        with breaker._lock:
            announced = breaker._step(make(breaker._state, breaker._clock()))[1]
        if announced:
            breaker._announce(announced)

    def set_policy(self, policy: Policy) -> None:
        breaker = self.breaker
        with breaker._lock:
            if breaker._room != breaker._room_full:
                breaker._fold()  # failures counted without the core (snapshot, unlocked)
            state = breaker._state
            breaker.policy = policy
            breaker._install(state)  # re-derives what the runtime derives from the policy

    def rename(self, name: str) -> None:
        self.breaker.name = name


class _Ticket:
    """A call admitted from a stored circuit: the record it was admitted on (the basis
    its outcome is stepped on first) and its permit."""

    __slots__ = ("generation", "probe", "record", "state")

    def __init__(
        self, record: str | None, state: BreakerState, generation: int, probe: int | None
    ) -> None:
        self.record = record
        self.state = state
        self.generation = generation
        self.probe = probe


_DEGRADED: Final = object()  # admitted by a closed fallback: nothing to record
_TRIAL: Final = object()  # admitted by a half-open fallback: holds the local trial slot


class _Stored:
    """The circuit of a breaker with a storage: read, step, compare-and-set.

    Every operation reads the record (or starts from the record its call was admitted
    on), steps the core on it and, when the state changed, writes it back by
    compare-and-set; losing the race means stepping again on the record that won. No lock
    is held across the user's call, nor across the storage's I/O.
    """

    __slots__ = (
        "_cache",
        "_changed",
        "_clock",
        "_degraded",
        "_policy",
        "_seen",
        "_seen_lock",
        "_storage",
        "_trial",
    )

    def __init__(
        self,
        storage: CircuitBreakerStorage,
        policy: Policy,
        clock: Callable[[], float],
        changed: Callable[[State, State], None],
    ) -> None:
        self._storage = storage
        self._policy = policy
        self._clock = clock
        self._changed = changed
        self._cache: tuple[str | None, BreakerState] = (None, BreakerState())
        self._degraded = False
        self._trial = threading.Lock()
        self._seen_lock = threading.Lock()
        self._seen = (-1, State.CLOSED)
        # As pybreaker reads its storage when built: no notification (the listeners would
        # hear of a change from a state this breaker never had, on a half-built breaker).
        loaded = self._load(notify=False)
        if loaded is not None:
            self._seen = (loaded[1].version, loaded[1].status)

    # -- storage access

    def _parse(self, text: str | None) -> BreakerState:
        if text is None:
            return _initial(self._storage._fallback)
        cached_text, cached = self._cache
        if text == cached_text:
            return cached
        try:
            state = _decode(text)
        except (ValueError, TypeError):
            logger.exception(
                "pybreaker storage %s holds an unreadable record %.80r: using "
                "fallback_circuit_state=%r until a breaker replaces it",
                type(self._storage).__name__,
                text,
                self._storage.fallback_circuit_state,
            )
            state = _initial(self._storage._fallback)
        self._cache = (text, state)
        return state

    def _failed(self) -> None:
        if not self._degraded:
            self._degraded = True
            logger.warning(
                "pybreaker storage %s failed: deciding as fallback_circuit_state=%r until "
                "it answers",
                type(self._storage).__name__,
                self._storage.fallback_circuit_state,
                exc_info=True,
            )

    def _answered(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning("pybreaker storage %s answers again", type(self._storage).__name__)

    def _load(self, *, notify: bool = True) -> tuple[str | None, BreakerState] | None:
        try:
            text = self._storage.read()
        except Exception:
            self._failed()
            return None
        self._answered()
        state = self._parse(text)
        if notify:
            self._notice(state)
        return text, state

    def _swap(
        self, expected: str | None, new: BreakerState
    ) -> tuple[bool, str | None, BreakerState] | None:
        """Compare-and-set ``new``: (won, the record now stored, its state); None if the
        storage failed."""
        record = _encode(new)
        try:
            won, current = self._storage.compare_and_set(expected, record)
        except Exception:
            self._failed()
            return None
        self._answered()
        if won:
            self._cache = (record, new)
            return True, record, new
        state = self._parse(current)
        self._notice(state)
        return False, current, state

    # -- notifications

    def _notice(self, state: BreakerState) -> None:
        """Tell the listeners about a state another breaker wrote (as pybreaker's)."""
        if state.version <= self._seen[0]:
            return
        with self._seen_lock:
            seen_version, seen_status = self._seen
            if state.version <= seen_version:
                return
            self._seen = (state.version, state.status)
        if _NAMES[seen_status] != _NAMES[state.status]:
            self._changed(seen_status, state.status)

    def _announce(self, effects: tuple[Effect, ...]) -> State | None:
        """Tell the listeners about the transitions this breaker just wrote; the state the
        circuit opened from, if it did."""
        tripped = None
        for effect in effects:
            if not isinstance(effect, Transitioned):
                continue
            transition = effect
            with self._seen_lock:
                fresh = transition.version > self._seen[0]
                if fresh:
                    self._seen = (transition.version, transition.target)
            if fresh:  # else this breaker already noticed it, from another thread
                self._changed(transition.source, transition.target)
            if transition.target is State.OPEN:
                tripped = transition.source
        return tripped

    # -- calls

    def _fallback_admit(self) -> object:
        status = self._storage._fallback
        if status is State.CLOSED:
            return _DEGRADED
        if status is State.HALF_OPEN and self._trial.acquire(blocking=False):
            return _TRIAL
        raise CircuitBreakerError(
            f"Circuit breaker storage unavailable, fallback_circuit_state is {_NAMES[status]!r}"
        )

    def admit(self) -> object:
        now = self._clock()
        loaded = self._load()
        if loaded is None:
            return self._fallback_admit()
        text, state = loaded
        # The core's shortcuts for the common cases (each equal to a case of step()): a
        # closed circuit admits, changing nothing; an open one not yet due only rejects.
        if state.status is _CLOSED:
            return _Ticket(text, state, state.version, None)
        if rejection_delay(state, now) is not None:
            raise CircuitBreakerError(_REJECTED.get(state.status, _REJECTED[State.OPEN]))
        event = CallRequested(now)
        for _ in range(_MAX_ATTEMPTS):
            result = step(self._policy, state, event)
            decision = result.effects[-1]
            if result.state is not state:
                swapped = self._swap(text, result.state)
                if swapped is None:
                    return self._fallback_admit()
                won, text, state = swapped
                if not won:
                    continue
                self._announce(result.effects)
            if type(decision) is Rejected:
                raise CircuitBreakerError(_REJECTED.get(state.status, _REJECTED[State.OPEN]))
            admitted = cast("Admitted", decision)
            return _Ticket(text, state, admitted.generation, admitted.probe)
        logger.warning("pybreaker storage: admission lost %d races in a row", _MAX_ATTEMPTS)
        return self._fallback_admit()

    def _settle(self, permit: object, outcome: Outcome) -> State | None:
        if permit is _DEGRADED:
            return None
        if permit is _TRIAL:
            self._trial.release()
            return None
        ticket = cast("_Ticket", permit)
        text, state = ticket.record, ticket.state
        if outcome is _SUCCESS and ticket.probe is None and inert_success(self._policy, state):
            return None  # the core's shortcut: a success that changes nothing
        event = CallFinished(outcome, self._clock(), 0.0, ticket.generation, ticket.probe)
        for _ in range(_MAX_ATTEMPTS):
            if event.generation > state.version or (
                event.probe is not None and event.probe >= state.next_probe
            ):
                return None  # the record was lost or replaced since: the outcome is stale
            try:
                result = step(self._policy, state, event)
            except InvalidEvent:  # pragma: no cover - the checks above rule it out
                return None
            if result.state is state:
                return None  # changes nothing (a success in a healthy circuit, a stale one)
            swapped = self._swap(text, result.state)
            if swapped is None:
                return None  # the storage failed: the outcome is lost (logged)
            won, text, state = swapped
            if won:
                return self._announce(result.effects)
        logger.warning("pybreaker storage: an outcome lost %d races in a row", _MAX_ATTEMPTS)
        return None

    def succeed(self, permit: object) -> None:
        self._settle(permit, _SUCCESS)

    def fail(self, permit: object, error: BaseException) -> State | None:
        return self._settle(permit, _FAILURE)

    def cancel(self, permit: object, error: BaseException) -> None:
        self._settle(permit, _CANCELLED)

    # -- monitoring and controls

    def snapshot(self) -> BreakerState:
        loaded = self._load()
        return _initial(self._storage._fallback) if loaded is None else loaded[1]

    def status(self) -> State:
        return self.snapshot().status

    def control(self, make: Callable[[BreakerState, float], Event]) -> None:
        loaded = self._load()
        if loaded is None:
            logger.warning("pybreaker storage failed: the state was not changed")
            return
        text, state = loaded
        for _ in range(_MAX_ATTEMPTS):
            result = step(self._policy, state, make(state, self._clock()))
            if result.state is state:
                return
            swapped = self._swap(text, result.state)
            if swapped is None:
                logger.warning("pybreaker storage failed: the state was not changed")
                return
            won, text, state = swapped
            if won:
                self._announce(result.effects)
                return
        logger.warning("pybreaker storage: a state change lost %d races in a row", _MAX_ATTEMPTS)

    def set_policy(self, policy: Policy) -> None:
        self._policy = policy

    def rename(self, name: str) -> None:
        pass  # the record is named by the storage (its namespace), not by the breaker


# ---------------------------------------------------------------------------- the breaker


def _policy(fail_max: object, reset_timeout: object, success_threshold: object) -> Policy:
    try:
        return Policy(
            consecutive_failures=cast("int", fail_max),
            reset_after=cast("float", reset_timeout),
            success_threshold=cast("int", success_threshold),
            half_open_probes=1,
        )
    except ConfigError as error:
        field = {"consecutive_failures": "fail_max", "reset_after": "reset_timeout"}.get(
            error.field, error.field
        )
        raise ConfigError(field, error.value, error.reason) from None


def _check_rule(rule: object) -> ExcludeRule:
    if isinstance(rule, type):
        if not issubclass(rule, BaseException):
            raise ConfigError("exclude", cast("object", rule), "is not an exception class")
        return rule
    if not callable(rule):
        raise ConfigError("exclude", rule, "must be an exception type or a predicate")
    return cast("ExcludeRule", rule)


class _Calling:
    """``with breaker.calling():``: the block is one guarded call."""

    __slots__ = ("_breaker", "_permit")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def __enter__(self) -> None:
        breaker = self._breaker
        self._permit = breaker._engine.admit()
        if breaker._before_call:
            breaker._fire_before_call(breaker.calling, (), {})

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        if exc is None:
            breaker._engine.succeed(self._permit)
            if breaker._success:
                breaker._fire_success()
            return
        breaker._settle_error(self._permit, exc)  # raises CircuitBreakerError on a trip


class _PendingCall:
    """A guarded generator's admission, settled once: when the generator finishes, or when
    it is collected without having been started."""

    __slots__ = ("finalizer", "permit")

    def __init__(self, permit: _Permit) -> None:
        self.permit: _Permit | None = permit
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def take(self) -> _Permit | None:
        """The permit, once; None when it was settled already (a generator dropped while
        suspended is finalized before it is closed: the close finds nothing to settle)."""
        permit, self.permit = self.permit, None
        if self.finalizer is not None:
            self.finalizer.detach()
        return permit


def _abandoned(breaker: CircuitBreaker, pending: _PendingCall) -> None:
    permit = pending.permit
    if permit is not None:
        pending.permit = None
        breaker._engine.cancel(permit, GeneratorExit())


class CircuitBreaker:
    """A circuit breaker with pybreaker's API, on breaker-machines' core.

    ``fail_max`` consecutive failures open the circuit; it rejects calls with
    :class:`CircuitBreakerError` for ``reset_timeout`` seconds, then lets one trial call
    through at a time; ``success_threshold`` successful trials close it, a failed one opens
    it again. ``exclude`` holds exception types and predicates on the exception: a match is
    not a system error and counts as a success. ``listeners``: listener objects (see
    :class:`CircuitBreakerListener`). ``state_storage`` is where the circuit lives (by
    default in this breaker: the fastest). ``throw_new_error_on_trip``: the call whose
    failure opens the circuit raises :class:`CircuitBreakerError` (chained from its own
    error) instead of its own error.

    ``clock`` (keyword-only, not in pybreaker) is the time in seconds the breaker reads:
    ``time.monotonic`` by default, ``time.time`` with a ``state_storage`` (breakers sharing
    a storage must share a clock). Tests pass a fake clock to move time by hand.

    Thread-safe, and no lock is held while the guarded call runs.
    """

    def __init__(  # noqa: PLR0917 - pybreaker's signature, positional arguments and all
        self,
        fail_max: int = 5,
        reset_timeout: float = 60,
        success_threshold: int = 1,
        exclude: Iterable[ExcludeRule] | None = None,
        listeners: Sequence[CircuitBreakerListener] | None = None,
        state_storage: CircuitBreakerStorage | None = None,
        name: str | None = None,
        throw_new_error_on_trip: bool = True,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise ConfigError("name", name, "must be a string or None")
        if not isinstance(throw_new_error_on_trip, bool):
            raise ConfigError("throw_new_error_on_trip", throw_new_error_on_trip, "must be a bool")
        self._policy = _policy(fail_max, reset_timeout, success_threshold)
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._success_threshold = success_threshold
        self._name = name
        self._throw_new_error_on_trip = throw_new_error_on_trip
        self._config_lock = threading.Lock()
        self._excluded: tuple[ExcludeRule, ...] = tuple(_check_rule(r) for r in exclude or ())
        self._listeners: tuple[CircuitBreakerListener, ...] = ()
        self._before_call: tuple[Callable[..., object], ...] = ()
        self._success: tuple[Callable[..., object], ...] = ()
        self._failure: tuple[Callable[..., object], ...] = ()
        self._state_change: tuple[Callable[..., object], ...] = ()
        self._set_listeners(tuple(listeners or ()))
        self._engine: _Threaded | _Stored
        if state_storage is None:
            self._engine = _Threaded(
                self._runtime_name(), self._policy, clock or time.monotonic, self._changed
            )
        elif isinstance(state_storage, CircuitBreakerStorage):
            self._engine = _Stored(state_storage, self._policy, clock or time.time, self._changed)
        else:
            raise ConfigError(
                "state_storage",
                state_storage,
                "must be a storage of breaker_machines.compat.pybreaker "
                "(CircuitMemoryStorage, CircuitRedisStorage or a CircuitBreakerStorage)",
            )
        self._state_storage = state_storage

    def _runtime_name(self) -> str:
        return self._name if self._name is not None else "pybreaker"

    # -- configuration

    @property
    def fail_max(self) -> int:
        """Consecutive failures that open the circuit (settable)."""
        return self._fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self._reconfigure(number, self._reset_timeout, self._success_threshold)
        self._fail_max = number

    @property
    def reset_timeout(self) -> float:
        """Seconds the circuit stays open before a trial call (settable; a new value
        applies from the next time the circuit opens)."""
        return self._reset_timeout

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        self._reconfigure(self._fail_max, timeout, self._success_threshold)
        self._reset_timeout = timeout

    @property
    def success_threshold(self) -> int:
        """Successful trial calls that close a half-open circuit (settable)."""
        return self._success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        self._reconfigure(self._fail_max, self._reset_timeout, threshold)
        self._success_threshold = threshold

    def _reconfigure(self, fail_max: object, reset_timeout: object, threshold: object) -> None:
        with self._config_lock:
            self._policy = _policy(fail_max, reset_timeout, threshold)
            self._engine.set_policy(self._policy)

    @property
    def name(self) -> str | None:
        """The breaker's name, for logging (settable)."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        if name is not None and not isinstance(name, str):
            raise ConfigError("name", name, "must be a string or None")
        self._name = name
        self._engine.rename(self._runtime_name())

    # -- excluded exceptions

    @property
    def excluded_exceptions(self) -> tuple[ExcludeRule, ...]:
        """The exception types and predicates whose exceptions are not system errors."""
        return self._excluded

    def add_excluded_exception(self, exception: ExcludeRule) -> None:
        """Exclude an exception type (and its subclasses) or a predicate's matches."""
        rule = _check_rule(exception)
        with self._config_lock:
            self._excluded = (*self._excluded, rule)

    def add_excluded_exceptions(self, *exceptions: ExcludeRule) -> None:
        """Exclude several exception types or predicates."""
        for exception in exceptions:
            self.add_excluded_exception(exception)

    def remove_excluded_exception(self, exception: ExcludeRule) -> None:
        """Stop excluding ``exception`` (ValueError if it is not excluded)."""
        with self._config_lock:
            rules = list(self._excluded)
            rules.remove(exception)
            self._excluded = tuple(rules)

    def is_system_error(self, exception: BaseException) -> bool:
        """Whether ``exception`` signals a malfunction (counts as a failure): True unless
        it is an instance of an excluded type or an excluded predicate returns true for it.
        A predicate that raises is logged and does not exclude."""
        return not is_excluded(self._excluded, exception, breaker=self._name, log=logger)

    # -- listeners

    @property
    def listeners(self) -> tuple[CircuitBreakerListener, ...]:
        """The registered listeners, in the order they are called."""
        return self._listeners

    def add_listener(self, listener: CircuitBreakerListener) -> None:
        """Register a listener (its hooks are called after those registered before it)."""
        with self._config_lock:
            self._set_listeners((*self._listeners, listener))

    def add_listeners(self, *listeners: CircuitBreakerListener) -> None:
        """Register several listeners."""
        with self._config_lock:
            self._set_listeners((*self._listeners, *listeners))

    def remove_listener(self, listener: CircuitBreakerListener) -> None:
        """Unregister a listener (ValueError if it is not registered)."""
        with self._config_lock:
            kept = list(self._listeners)
            kept.remove(listener)
            self._set_listeners(tuple(kept))

    def _set_listeners(self, listeners: tuple[CircuitBreakerListener, ...]) -> None:
        bound: dict[str, list[Callable[..., object]]] = {name: [] for name in _HOOKS}
        for listener in listeners:
            for name in _HOOKS:
                hook = _hook(listener, name)
                if hook is not None:
                    bound[name].append(hook)
        self._listeners = listeners
        self._before_call = tuple(bound["before_call"])
        self._success = tuple(bound["success"])
        self._failure = tuple(bound["failure"])
        self._state_change = tuple(bound["state_change"])

    def _listener_failed(self, hook: Callable[..., object]) -> None:
        logger.exception(
            "breaker %r: listener hook %s raised; the call was not affected",
            self._name,
            getattr(hook, "__qualname__", hook),
        )

    def _fire_before_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        for hook in self._before_call:
            try:
                hook(self, func, *args, **kwargs)
            except Exception:
                self._listener_failed(hook)

    def _fire_success(self) -> None:
        for hook in self._success:
            try:
                hook(self)
            except Exception:
                self._listener_failed(hook)

    def _fire_failure(self, error: BaseException) -> None:
        for hook in self._failure:
            try:
                hook(self, error)
            except Exception:
                self._listener_failed(hook)

    def _changed(self, source: State, target: State) -> None:
        hooks = self._state_change
        if not hooks:
            return
        old, new = _STATE_OBJECTS[source], _STATE_OBJECTS[target]
        for hook in hooks:
            try:
                hook(self, old, new)
            except Exception:
                self._listener_failed(hook)

    # -- calls

    def call(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``func(*args, **kwargs)`` through the breaker and return its result.

        Raises :class:`CircuitBreakerError` without calling it while the circuit rejects
        calls. If ``func`` returns a generator, the generator is guarded: the call's outcome
        is how its iteration ends (pybreaker's generator support).
        """
        engine = self._engine
        permit = engine.admit()
        if self._before_call:
            self._fire_before_call(func, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            self._settle_error(permit, error)
            raise
        kind = result.__class__
        if kind is _GENERATOR:
            return cast(
                "T", self._guard_generator(permit, cast("Generator[Any, Any, Any]", result))
            )
        if kind is _COROUTINE:
            engine.cancel(permit, GeneratorExit())
            cast("types.CoroutineType[Any, Any, Any]", result).close()
            raise ConfigError("func", func, "is an async function: " + _NO_TORNADO)
        engine.succeed(permit)
        if self._success:
            self._fire_success()
        return result

    def _system_error(self, error: BaseException) -> bool:
        try:
            return self.is_system_error(error)
        except Exception:
            logger.exception("breaker %r: is_system_error raised; counted as one", self._name)
            return True

    def _settle_error(self, permit: _Permit, error: BaseException) -> None:
        """Count the exception a guarded call raised; raise CircuitBreakerError (chained
        from it) if it opened the circuit and ``throw_new_error_on_trip`` is set."""
        engine = self._engine
        if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit, GeneratorExit
            engine.cancel(permit, error)
            return
        if not self._system_error(error):
            engine.succeed(permit)
            if self._success:
                self._fire_success()
            return
        if self._failure:
            self._fire_failure(error)
        source = engine.fail(permit, error)
        if source is not None and self._throw_new_error_on_trip:
            raise CircuitBreakerError(_TRIPPED.get(source, _TRIPPED[State.CLOSED])) from error

    def _guard_generator(
        self, permit: _Permit, inner: Generator[Any, Any, Any]
    ) -> Generator[Any, Any, Any]:
        pending = _PendingCall(permit)
        outer = self._iterate(pending, inner)
        pending.finalizer = weakref.finalize(outer, _abandoned, self, pending)
        return outer

    def _iterate(
        self, pending: _PendingCall, inner: Generator[Any, Any, Any]
    ) -> Generator[Any, Any, Any]:
        try:
            result = yield from inner
        except BaseException as error:
            permit = pending.take()
            if permit is not None:
                self._settle_error(permit, error)
            raise
        permit = pending.take()
        assert permit is not None  # the finalizer runs only once the generator is unreachable
        self._engine.succeed(permit)
        if self._success:
            self._fire_success()
        return result

    def calling(self) -> _Calling:
        """A context manager: ``with breaker.calling(): ...`` runs the block as one guarded
        call (``before_call`` listeners receive ``breaker.calling`` as the function)."""
        return _Calling(self)

    def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Not supported: pybreaker's ``call_async`` runs Tornado coroutines. Raises
        NotImplementedError; guard async code with :class:`breaker_machines.Breaker`."""
        raise NotImplementedError(_NO_TORNADO)

    @overload
    def __call__(self, func: Callable[P, T], /) -> Callable[P, T]: ...

    @overload
    def __call__(self, **options: bool) -> Callable[[Callable[P, T]], Callable[P, T]]: ...

    def __call__(self, *call_args: Any, **call_kwargs: Any) -> Any:
        """Decorate a function (or a generator function): ``@breaker``, or ``@breaker()``.

        Every call of the decorated function goes through :meth:`call`. Async functions are
        refused (a ConfigError), and so is ``__pybreaker_call_async=True`` (Tornado).
        """
        call_async = call_kwargs.pop("__pybreaker_call_async", False)
        if call_kwargs:
            raise TypeError(f"unexpected keyword arguments: {', '.join(call_kwargs)}")
        if call_async:
            raise NotImplementedError(_NO_TORNADO)
        if len(call_args) > 1:
            raise TypeError("a breaker decorates one function")
        if call_args:
            return self._decorate(call_args[0])
        return self._decorate

    def _decorate(self, func: Callable[P, T]) -> Callable[P, T]:
        if not callable(func):
            raise ConfigError("func", func, "must be callable")
        if is_async(func) or inspect.isasyncgenfunction(func):
            raise ConfigError("func", func, "is an async function: " + _NO_TORNADO)
        call = self.call

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return call(func, *args, **kwargs)

        return guarded

    # -- state

    @property
    def current_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (an open circuit becomes half-open
        with the first call after ``reset_timeout``)."""
        return _NAMES[self._engine.status()]

    @property
    def state(self) -> CircuitBreakerState:
        """The current state as an object with ``.name`` (see :class:`CircuitBreakerState`)."""
        return _STATE_OBJECTS[self._engine.status()]

    @property
    def fail_counter(self) -> int:
        """Consecutive failures of the closed circuit (0 once it opened)."""
        return self._engine.snapshot().consecutive_failures

    @property
    def success_counter(self) -> int:
        """Successful trial calls of the half-open circuit."""
        return self._engine.snapshot().half_open_successes

    def open(self) -> bool:
        """Open the circuit: calls are rejected until ``reset_timeout`` has elapsed. Returns
        ``throw_new_error_on_trip`` (as pybreaker's)."""
        reset_after = self._policy.reset_after

        def opened(state: BreakerState, now: float) -> Event:
            version, trips = state.version + 1, state.trips + 1
            return RemoteObserved(State.OPEN, version, now, now + reset_after, trips, now)

        self._engine.control(opened)
        return self._throw_new_error_on_trip

    def half_open(self) -> None:
        """Half-open the circuit: the next call is a trial call."""

        def half_opened(state: BreakerState, now: float) -> Event:
            version = state.version + 1
            return RemoteObserved(State.HALF_OPEN, version, state.opened_at, None, state.trips, now)

        self._engine.control(half_opened)

    def close(self) -> None:
        """Close the circuit, with its counters reset."""
        self._engine.control(lambda state, now: Reset(now))

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self.current_state}>"
