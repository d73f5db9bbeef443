"""aiobreaker 1.2's public API on breaker_machines' anyio runtime: change one import.

Replace ``from aiobreaker import CircuitBreaker, CircuitBreakerError, ...`` with
``from breaker_machines.compat.aiobreaker import CircuitBreaker, CircuitBreakerError, ...``.
The names, arguments, listener hooks (and their order) and error messages are aiobreaker's;
the circuit underneath is a :class:`~breaker_machines.Breaker`, so:

* it runs under asyncio **and trio** (aiobreaker is asyncio-only);
* nothing is locked or serialised: concurrent calls run concurrently;
* a half-open circuit admits **one** trial call at a time (aiobreaker lets every caller
  through as a trial); the others are rejected with :class:`CircuitBreakerError` until the
  trial has decided, or until it has run for ``timeout_duration``;
* cancellation (``asyncio.CancelledError``, ``trio.Cancelled``) and other ``BaseException``
  counts as nothing, as in aiobreaker, and frees the trial slot;
* async listener hooks are awaited (aiobreaker calls them and drops the coroutine);
* times are consistent naive local datetimes (aiobreaker mixes UTC and local time), and
  ``opens_at``/``time_until_open`` answer ``None`` instead of raising when there is nothing
  to wait for.

Not supported: custom storages and ``CircuitRedisStorage`` (aiobreaker's drives a *sync*
Redis client from inside the event loop, blocking it on every call; share a circuit between
processes with :class:`~breaker_machines.Breaker` and
:class:`~breaker_machines.storage.RedisStorage` instead), and use from several threads at
once (use :class:`~breaker_machines.ThreadedBreaker` for threads). Invalid arguments raise
:class:`~breaker_machines.ConfigError` (a ``ValueError``) naming the argument.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import time
import types
import warnings
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, ParamSpec, Protocol, TypeVar, cast, overload

import anyio

from .._base import _LOG
from .._core.errors import ConfigError
from .._core.records import BreakerState
from .._core.shortcuts import rejection_delay
from .._core.status import Reason, State
from ..breaker import Breaker, Guard
from ..callbacks import Transition, check_function, is_async, logger
from ..errors import BreakerError, CircuitOpenError
from ..storage.memory import MemoryStorage
from ._rules import ExcludeRule, is_excluded

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerBaseState",
    "CircuitBreakerError",
    "CircuitBreakerListener",
    "CircuitBreakerState",
    "CircuitClosedState",
    "CircuitHalfOpenState",
    "CircuitMemoryStorage",
    "CircuitOpenState",
]

P = ParamSpec("P")
T = TypeVar("T")

"""An excluded exception: an exception class, or a predicate on the exception."""

_DEFAULT_TIMEOUT: Final = timedelta(seconds=60)
_MAX_COUNT: Final = 2**31 - 1
_UNNAMED: Final = "aiobreaker"
# The attribute a decorated function carries: the breaker whose call() runs it directly.
_OWNER: Final = "_breaker_machines_aiobreaker_owner"
_HOOKS: Final = ("before_call", "failure", "success", "state_change")

# aiobreaker's messages, word for word, and one for the rejection it does not have.
_TRIPPED: Final = "Failures threshold reached, circuit breaker opened."
_TRIAL_FAILED: Final = "Trial call failed, circuit breaker opened."
_STILL_OPEN: Final = "Timeout not elapsed yet, circuit breaker still open"
_TRIAL_RUNNING: Final = "Trial call in progress, circuit breaker still half-open"

_CLOSED: Final = State.CLOSED
_OPEN: Final = State.OPEN
_HALF_OPEN: Final = State.HALF_OPEN


# --------------------------------------------------------------------------- states


class CircuitBreakerBaseState:
    """A circuit state as ``breaker.state`` and listeners' ``state_change`` see it.

    Its :attr:`state` is the :class:`CircuitBreakerState` member. As in aiobreaker, a new
    object is made on every transition: compare ``state`` members, not these objects.
    """

    __slots__ = ()
    _member: ClassVar[str]

    @property
    def state(self) -> CircuitBreakerState:
        """The :class:`CircuitBreakerState` member this object stands for."""
        return CircuitBreakerState[self._member]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class CircuitClosedState(CircuitBreakerBaseState):
    """CLOSED: calls run; ``fail_max`` failures in a row open the circuit."""

    __slots__ = ()
    _member = "CLOSED"


class CircuitOpenState(CircuitBreakerBaseState):
    """OPEN: calls are rejected until ``timeout_duration`` has elapsed; then the next call
    half-opens the circuit and runs as its trial call."""

    __slots__ = ()
    _member = "OPEN"


class CircuitHalfOpenState(CircuitBreakerBaseState):
    """HALF_OPEN: one trial call at a time; its success closes the circuit, its failure
    opens it again for another ``timeout_duration``."""

    __slots__ = ()
    _member = "HALF_OPEN"


class CircuitBreakerState(enum.Enum):
    """The three states of a circuit. As in aiobreaker, each member's value is the class of
    the state objects that stand for it (``CircuitBreakerState.OPEN.value`` is
    :class:`CircuitOpenState`)."""

    OPEN = CircuitOpenState
    CLOSED = CircuitClosedState
    HALF_OPEN = CircuitHalfOpenState


# The runtime's states as aiobreaker's: FORCED_OPEN and DISABLED are not reachable through
# this API (only through the runtime's own controls) and read as the closest state.
_VIEW: Final[dict[State, type[CircuitBreakerBaseState]]] = {
    State.CLOSED: CircuitClosedState,
    State.OPEN: CircuitOpenState,
    State.HALF_OPEN: CircuitHalfOpenState,
    State.FORCED_OPEN: CircuitOpenState,
    State.DISABLED: CircuitClosedState,
}
_MEMBER: Final[dict[State, CircuitBreakerState]] = {
    status: CircuitBreakerState[view._member] for status, view in _VIEW.items()
}
_StateChange = tuple[CircuitBreakerBaseState, CircuitBreakerBaseState]


# --------------------------------------------------------------------------- error, listener


def _wall(seconds: float) -> datetime:
    """The naive local datetime ``seconds`` from now (``datetime.max`` beyond its range)."""
    try:
        return datetime.fromtimestamp(time.time() + seconds)  # 3x datetime.now() + timedelta
    except (OverflowError, OSError, ValueError):
        return datetime.max if seconds > 0.0 else datetime.min


class CircuitBreakerError(BreakerError):
    """The circuit did not run the call, or the call just opened it.

    Raised instead of running the call while the circuit is OPEN (or HALF_OPEN with a trial
    call in flight), and by the call whose failure opened the circuit (chained to that
    failure: ``__cause__``). ``message`` says which (aiobreaker's words); ``reopen_time`` is
    the naive local datetime at which the circuit lets a call through again.
    ``str(error)`` is the message. A :class:`~breaker_machines.BreakerError`, so
    ``except BreakerError`` catches it too.
    """

    # No __init__ of our own: BaseException's C-level one stores the arguments (a rejection
    # stays cheap); the properties read them back.
    args: tuple[str, datetime]

    if TYPE_CHECKING:

        def __init__(self, message: str, reopen_time: datetime) -> None: ...

    @property
    def message(self) -> str:
        """What happened, in aiobreaker's words."""
        return self.args[0]

    @property
    def reopen_time(self) -> datetime:
        """When the circuit lets a call through again (a naive local datetime)."""
        return self.args[1]

    def __str__(self) -> str:
        return self.message

    @property
    def time_remaining(self) -> timedelta:
        """``reopen_time`` minus now (negative once it has passed)."""
        return self.reopen_time - datetime.now()

    async def sleep_until_open(self) -> None:
        """Sleep until ``reopen_time`` (under asyncio or trio); return at once if it has
        passed."""
        await anyio.sleep(max(0.0, self.time_remaining.total_seconds()))


class CircuitBreakerListener:
    """Subclass it and override the hooks you need; pass instances as ``listeners=``.

    Each hook may be a plain method or an ``async def`` one. In :meth:`CircuitBreaker.call_async`
    (and async decorated functions) an async hook is awaited before the next hook runs; where
    nothing can be awaited (:meth:`CircuitBreaker.call`, ``open()``, ``half_open()``,
    ``close()``) it is not run and a ``RuntimeWarning`` says so. An exception raised by a hook
    propagates to the caller, as in aiobreaker (a ``before_call`` that raises stops the call
    before it runs; nothing is counted).

    Order, as in aiobreaker: ``before_call`` once the call is admitted (after a
    ``state_change`` to HALF_OPEN if the call is the trial); then on success a
    ``state_change`` (if the trial closed the circuit) before ``success``; on a counted
    failure ``failure`` before the ``state_change`` to OPEN. An excluded exception is a
    success. A rejected call calls no hook.
    """

    def before_call(
        self, breaker: CircuitBreaker, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Awaitable[None] | None:
        """Called when ``func(*args, **kwargs)`` is admitted, just before it runs."""
        return None

    def failure(self, breaker: CircuitBreaker, exception: Exception) -> Awaitable[None] | None:
        """Called when a call raised an exception that is not excluded (a counted failure)."""
        return None

    def success(self, breaker: CircuitBreaker) -> Awaitable[None] | None:
        """Called when a call returned, or raised an excluded exception."""
        return None

    def state_change(
        self,
        breaker: CircuitBreaker,
        old: CircuitBreakerBaseState,
        new: CircuitBreakerBaseState,
    ) -> Awaitable[None] | None:
        """Called when the circuit moves from ``old`` to ``new`` (by a call or by hand;
        ``open()``, ``half_open()`` and ``close()`` always call it, even to the same
        state)."""
        return None


# --------------------------------------------------------------------------- storage


class CircuitMemoryStorage:
    """Where a circuit's state lives: in this process's memory (the only storage here).

    ``CircuitMemoryStorage(state)`` sets the state a new breaker starts in (CLOSED by
    default); an OPEN start half-opens on the first call, as in aiobreaker. Once given to a
    breaker as ``state_storage`` it reads that breaker's live state. A storage serves one
    breaker: giving it to a second one raises :class:`~breaker_machines.ConfigError`
    (aiobreaker would let the two overwrite each other's counters).
    """

    __slots__ = ("_breaker", "_initial")

    def __init__(self, state: CircuitBreakerState = CircuitBreakerState.CLOSED) -> None:
        if not isinstance(state, CircuitBreakerState):
            raise ConfigError("state", state, "must be a CircuitBreakerState member")
        self._initial = state
        self._breaker: CircuitBreaker | None = None

    @property
    def name(self) -> str:
        """``"memory"``."""
        return "memory"

    @property
    def state(self) -> CircuitBreakerState:
        """The circuit's current state (before it serves a breaker: its initial state)."""
        breaker = self._breaker
        return self._initial if breaker is None else breaker.current_state

    @property
    def counter(self) -> int:
        """The breaker's ``fail_counter`` (0 before it serves a breaker)."""
        breaker = self._breaker
        return 0 if breaker is None else breaker.fail_counter

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened, as a naive local datetime; None while CLOSED, or
        when it has not opened since it was made (a storage made OPEN)."""
        breaker = self._breaker
        return None if breaker is None else breaker._opened_at()


def _initial_state(member: CircuitBreakerState, now: float) -> BreakerState:
    if member is CircuitBreakerState.OPEN:  # due at once, as aiobreaker's (no opened_at)
        return BreakerState(status=_OPEN, retry_at=now, trips=1)
    if member is CircuitBreakerState.HALF_OPEN:
        return BreakerState(status=_HALF_OPEN, trips=1)
    return BreakerState()


# --------------------------------------------------------------------------- validation


def _check_fail_max(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("fail_max", value, "must be an integer >= 1")
    if value < 1:
        raise ConfigError("fail_max", value, "must be an integer >= 1")
    if value > _MAX_COUNT:
        raise ConfigError("fail_max", value, f"must be <= {_MAX_COUNT:,}")
    return value


def _check_timeout(value: object) -> tuple[timedelta, float]:
    if value is None:
        return _DEFAULT_TIMEOUT, _DEFAULT_TIMEOUT.total_seconds()
    if not isinstance(value, timedelta):
        raise ConfigError(
            "timeout_duration",
            value,
            "must be a datetime.timedelta (e.g. timedelta(seconds=60)), or None for 60 seconds",
        )
    if value <= timedelta(0):
        raise ConfigError("timeout_duration", value, "must be longer than zero")
    return value, value.total_seconds()


def _check_name(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError("name", value, "must be a string or None")
    return value


def _check_rule(field: str, rule: object) -> ExcludeRule:
    if isinstance(rule, type):
        if not issubclass(rule, BaseException):
            raise ConfigError(field, cast(object, rule), "is a class but not an exception class")
        return rule
    check_function(
        field, rule, arguments=1, what="an exception class or a predicate on the exception"
    )
    return cast("Callable[[BaseException], object]", rule)


def _check_listener(field: str, listener: object) -> CircuitBreakerListener:
    for hook in _HOOKS:
        if not callable(getattr(listener, hook, None)):
            raise ConfigError(
                field,
                listener,
                f"has no {hook}() method: listeners need before_call, failure, success and "
                "state_change (subclass CircuitBreakerListener)",
            )
    return cast("CircuitBreakerListener", listener)


def _items(field: str, value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(field, value, "must be a list (or another iterable), or None")
    return list(cast("Iterable[object]", value))


class _Abandoned(BaseException):
    """Reported to a guard whose call never ran (a ``before_call`` hook raised): neutral."""


def _unawaited(awaitable: Awaitable[object], hook: str) -> None:
    """An async hook where nothing can be awaited: close it, and say so."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    warnings.warn(
        f"aiobreaker listener hook {hook}() returned an awaitable where it cannot be awaited "
        "(breaker.call(), open(), half_open(), close()): it did not run; make it a plain "
        "method, or call through call_async()",
        RuntimeWarning,
        stacklevel=4,
    )


class _Decorator(Protocol):
    def __call__(self, func: Callable[P, T], /) -> Callable[P, T]: ...


# --------------------------------------------------------------------------- the breaker


class CircuitBreaker:
    """aiobreaker's ``CircuitBreaker``, on a :class:`~breaker_machines.Breaker`.

    ``fail_max`` failures in a row open the circuit; the call whose failure opens it raises
    :class:`CircuitBreakerError` (chained to that failure). While OPEN, calls are rejected
    with :class:`CircuitBreakerError` until ``timeout_duration`` (a ``timedelta``, default
    60 seconds) has elapsed; the next call is then the trial call of the HALF_OPEN circuit:
    its success closes the circuit, its failure opens it again. An exception matched by
    ``exclude`` (exception classes, or predicates on the exception) counts as a success and
    propagates unchanged. Exceptions that are not ``Exception`` (cancellation,
    ``KeyboardInterrupt``) count as nothing.

    ``clock`` (not in aiobreaker) is a function returning seconds, ``time.monotonic`` by
    default; tests pass a fake one to drive ``timeout_duration``.

    Use it from one thread (an event loop's, or plain sync code): it is not thread-safe,
    and neither is aiobreaker's.

    Raises :class:`~breaker_machines.ConfigError` for a ``fail_max`` that is not an integer
    >= 1, a ``timeout_duration`` that is not a positive ``timedelta`` (or None), an
    ``exclude`` entry that is neither an exception class nor a one-argument predicate, a
    listener without the four hooks, a ``state_storage`` that is not a fresh
    :class:`CircuitMemoryStorage`, or a ``name`` that is not a string.
    """

    def __init__(  # noqa: PLR0917 - aiobreaker's six positional parameters, in its order
        self,
        fail_max: int = 5,
        timeout_duration: timedelta | None = None,
        exclude: Iterable[ExcludeRule] | None = None,
        listeners: Iterable[CircuitBreakerListener] | None = None,
        state_storage: CircuitMemoryStorage | None = None,
        name: str | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._fail_max = _check_fail_max(fail_max)
        self._timeout, seconds = _check_timeout(timeout_duration)
        self._exclude: tuple[ExcludeRule, ...] = tuple(
            _check_rule("exclude", rule) for rule in _items("exclude", exclude)
        )
        self._listeners: tuple[CircuitBreakerListener, ...] = tuple(
            _check_listener("listeners", listener) for listener in _items("listeners", listeners)
        )
        self._name = _check_name(name)
        if state_storage is None:
            state_storage = CircuitMemoryStorage()
        elif not isinstance(state_storage, CircuitMemoryStorage):
            raise ConfigError(
                "state_storage",
                state_storage,
                "must be a CircuitMemoryStorage (custom and Redis storages are not supported: "
                "share a circuit between processes with breaker_machines.Breaker and "
                "breaker_machines.storage.RedisStorage)",
            )
        if state_storage._breaker is not None:
            raise ConfigError(
                "state_storage", state_storage, "already serves another CircuitBreaker"
            )
        if clock is not None:
            check_function("clock", clock, arguments=0, what="a callable returning seconds")
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        label = self._name if self._name is not None else _UNNAMED
        memory = MemoryStorage()
        memory.put(label, _initial_state(state_storage._initial, self._clock()))
        self._breaker = Breaker(
            label,
            consecutive_failures=self._fail_max,
            reset_after=seconds,
            # A trial call still running after timeout_duration no longer blocks the next.
            probe_lease=seconds,
            storage=memory,
            clock=self._clock,
        )
        state_storage._breaker = self
        self._storage = state_storage
        self._status: State = self._breaker.state  # the runtime's state the view stands for
        self._view: CircuitBreakerBaseState = _VIEW[self._status]()
        # fail_counter outside CLOSED: the runtime starts each state with fresh counts,
        # aiobreaker keeps counting until the circuit closes.
        self._held = 0

    # ------------------------------------------------------------------ configuration

    @property
    def name(self) -> str | None:
        """The breaker's name (None unless given); settable. Logs and the runtime use
        ``"aiobreaker"`` for an unnamed breaker."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._name = _check_name(name)
        self._breaker.name = name if name is not None else _UNNAMED

    @property
    def fail_max(self) -> int:
        """The number of failures in a row that opens the circuit; settable (it applies
        from the next failure on)."""
        return self._fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self._fail_max = _check_fail_max(number)
        self._reconfigure(consecutive_failures=number)

    @property
    def timeout_duration(self) -> timedelta:
        """How long the circuit stays OPEN; settable (an OPEN circuit's wait is then
        counted from when it opened, with the new duration, as in aiobreaker)."""
        return self._timeout

    @timeout_duration.setter
    def timeout_duration(self, timeout: timedelta) -> None:
        self._timeout, seconds = _check_timeout(timeout)
        self._reconfigure(reset_after=seconds, probe_lease=seconds)

    def _reconfigure(self, **changes: Any) -> None:
        """Give the runtime a new policy, keeping its state (and, for a new open duration,
        moving an OPEN circuit's retry time to ``opened_at`` + the new duration)."""
        breaker = self._breaker
        state = breaker.snapshot  # folds the failures counted on the fast path
        breaker.policy = dataclasses.replace(breaker.policy, **changes)
        reset_after = changes.get("reset_after")
        if reset_after is not None and state.status is _OPEN and state.opened_at is not None:
            state = state._replace(retry_at=state.opened_at + reset_after)
        breaker._install(state)  # re-derives the fast paths from the new policy

    @property
    def excluded_exceptions(self) -> tuple[ExcludeRule, ...]:
        """The excluded exception classes and predicates, in the order given."""
        return self._exclude

    def add_excluded_exception(self, exception: ExcludeRule) -> None:
        """Exclude an exception class (or a predicate on the exception) from now on."""
        self._exclude = (*self._exclude, _check_rule("exception", exception))

    def add_excluded_exceptions(self, *exceptions: ExcludeRule) -> None:
        """Exclude each of ``exceptions`` (classes or predicates)."""
        checked = tuple(_check_rule("exceptions", rule) for rule in exceptions)
        self._exclude = (*self._exclude, *checked)

    def remove_excluded_exception(self, exception: ExcludeRule) -> None:
        """Stop excluding ``exception``. Raises :class:`~breaker_machines.ConfigError` (a
        ``ValueError``, as aiobreaker's ``list.remove``) when it is not excluded."""
        rules = list(self._exclude)
        try:
            rules.remove(exception)
        except ValueError:
            raise ConfigError("exception", exception, "is not excluded") from None
        self._exclude = tuple(rules)

    def is_system_error(self, exception: BaseException) -> bool:
        """Whether ``exception`` counts as a failure: True unless it is excluded."""
        return not self._excluded(exception)

    def _excluded(self, error: BaseException) -> bool:
        return is_excluded(self._exclude, error, breaker=self._breaker.name, log=logger)

    @property
    def listeners(self) -> tuple[CircuitBreakerListener, ...]:
        """The registered listeners, in the order they are called."""
        return self._listeners

    def add_listener(self, listener: CircuitBreakerListener) -> None:
        """Register ``listener`` (called after the ones already registered)."""
        self._listeners = (*self._listeners, _check_listener("listener", listener))

    def add_listeners(self, *listeners: CircuitBreakerListener) -> None:
        """Register each of ``listeners``."""
        checked = tuple(_check_listener("listeners", listener) for listener in listeners)
        self._listeners = (*self._listeners, *checked)

    def remove_listener(self, listener: CircuitBreakerListener) -> None:
        """Unregister ``listener``. Raises :class:`~breaker_machines.ConfigError` (a
        ``ValueError``) when it is not registered."""
        listeners = list(self._listeners)
        try:
            listeners.remove(listener)
        except ValueError:
            raise ConfigError("listener", listener, "is not a listener of this breaker") from None
        self._listeners = tuple(listeners)

    # ------------------------------------------------------------------ state

    @property
    def current_state(self) -> CircuitBreakerState:
        """The circuit's state. An OPEN circuit stays OPEN after ``timeout_duration`` until
        the next call half-opens it, as in aiobreaker."""
        return _MEMBER[self._breaker.state]

    @property
    def state(self) -> CircuitBreakerBaseState:
        """The current state object (its ``.state`` is :attr:`current_state`). Settable:
        ``breaker.state = CircuitBreakerState.OPEN`` is ``breaker.open()``, and so on."""
        status = self._breaker.state
        if status is not self._status:  # pragma: no cover - every change updates the view
            self._status, self._view = status, _VIEW[status]()
        return self._view

    @state.setter
    def state(self, state: CircuitBreakerState) -> None:
        if state is CircuitBreakerState.OPEN:
            self.open()
        elif state is CircuitBreakerState.HALF_OPEN:
            self.half_open()
        elif state is CircuitBreakerState.CLOSED:
            self.close()
        else:
            raise ConfigError("state", state, "must be a CircuitBreakerState member")

    @property
    def fail_counter(self) -> int:
        """The current number of consecutive failures.

        While CLOSED, the failures in a row since the last success. While OPEN or
        HALF_OPEN, as in aiobreaker, the count that opened the circuit (``fail_max``, or the
        count when ``open()``/``half_open()`` was called), plus one per failed trial call.
        A success, or closing the circuit, resets it.
        """
        breaker = self._breaker
        if breaker.state is _CLOSED:
            return breaker.snapshot.consecutive_failures
        return self._held

    def _remaining(self) -> float | None:
        """Seconds until an OPEN circuit lets a call through; None when nothing to wait."""
        state = self._breaker.snapshot
        if state.status is not _OPEN or state.retry_at is None:
            return None
        remaining = state.retry_at - self._clock()
        return remaining if remaining > 0.0 else None

    def _opened_at(self) -> datetime | None:
        state = self._breaker.snapshot
        if state.status is _CLOSED or state.opened_at is None:
            return None
        return _wall(state.opened_at - self._clock())

    @property
    def opens_at(self) -> datetime | None:
        """When the OPEN circuit lets a call through again (a naive local datetime); None
        when it is not OPEN or ``timeout_duration`` has already elapsed."""
        remaining = self._remaining()
        return None if remaining is None else _wall(remaining)

    @property
    def time_until_open(self) -> timedelta | None:
        """How long until the OPEN circuit lets a call through again; None when it is not
        OPEN or ``timeout_duration`` has already elapsed."""
        remaining = self._remaining()
        if remaining is None:
            return None
        try:
            return timedelta(seconds=remaining)
        except OverflowError:  # a float just above timedelta.max, from timedelta.max
            return timedelta.max

    async def sleep_until_open(self) -> None:
        """Sleep (under asyncio or trio) until the OPEN circuit lets a call through again;
        return at once when there is nothing to wait for."""
        remaining = self._remaining()
        if remaining is not None:
            await anyio.sleep(remaining)

    # ------------------------------------------------------------------ manual control

    def open(self) -> None:
        """Open the circuit now: calls are rejected until ``timeout_duration`` has elapsed
        (then the next call is a trial). Listeners get a ``state_change``."""
        breaker = self._breaker
        old = breaker.snapshot
        now = self._clock()
        if old.status is _CLOSED:
            self._held = old.consecutive_failures
        new = BreakerState(
            status=_OPEN,
            version=old.version + 1,
            opened_at=now,
            retry_at=now + breaker.policy.reset_after,
            trips=old.trips + 1,
            next_probe=old.next_probe,
        )
        self._adopt(old, new, Reason.FORCED_OPEN, now)

    def half_open(self) -> None:
        """Half-open the circuit now: the next call is its trial call. Listeners get a
        ``state_change``."""
        breaker = self._breaker
        old = breaker.snapshot
        now = self._clock()
        if old.status is _CLOSED:
            self._held = old.consecutive_failures
        new = BreakerState(
            status=_HALF_OPEN,
            version=old.version + 1,
            opened_at=old.opened_at,
            trips=max(old.trips, 1),
            next_probe=old.next_probe,
        )
        # The runtime has no reason for a half-open by hand: it is "the wait is over, now".
        self._adopt(old, new, Reason.RESET_AFTER_ELAPSED, now)

    def close(self) -> None:
        """Close the circuit now, with a fresh failure count. Listeners get a
        ``state_change`` (even from CLOSED, as in aiobreaker)."""
        self._breaker.reset()
        self._notify(self._replace_view())

    def _adopt(self, old: BreakerState, new: BreakerState, reason: Reason, now: float) -> None:
        """Install a state decided by hand (a new generation: calls in flight are stale)."""
        breaker = self._breaker
        breaker._install(new)
        breaker._announce(
            [Transition(breaker.name, old.status, new.status, reason, new.version, now, True)]
        )
        self._notify(self._replace_view())

    def _replace_view(self) -> _StateChange:
        old = self._view
        self._status = self._breaker.state
        self._view = _VIEW[self._status]()
        return old, self._view

    def _moved(self) -> _StateChange | None:
        """A call moved the circuit: the new view and the (old, new) pair to announce."""
        status = self._breaker.state
        if status is self._status:
            return None
        before = self._status
        if before is _CLOSED:
            self._held = self._fail_max  # tripped by failures in a row
        elif before is _HALF_OPEN and status is _OPEN:
            self._held += 1  # the trial call failed
        return self._replace_view()

    # ------------------------------------------------------------------ listeners

    def _hooks(self, hook: str, *args: Any, **kwargs: Any) -> Iterator[Awaitable[object]]:
        """Call ``hook`` on every listener, in order; yield what async hooks return."""
        for listener in self._listeners:
            result = getattr(listener, hook)(self, *args, **kwargs)
            if inspect.isawaitable(result):
                yield result

    def _notify(self, change: _StateChange | None, hook: str = "state_change") -> None:
        if change is not None and self._listeners:
            for pending in self._hooks(hook, *change):
                _unawaited(pending, hook)

    def _call_hooks(self, hook: str, *args: Any) -> None:
        if self._listeners:
            for pending in self._hooks(hook, *args):
                _unawaited(pending, hook)

    async def _notify_async(self, change: _StateChange | None) -> None:
        if change is not None and self._listeners:
            for pending in self._hooks("state_change", *change):
                await pending

    async def _call_hooks_async(self, hook: str, *args: Any) -> None:
        if self._listeners:
            for pending in self._hooks(hook, *args):
                await pending

    def _trip_error(self, change: _StateChange | None, error: BaseException) -> None:
        """Raise CircuitBreakerError when the failing call just opened the circuit."""
        if change is None or change[1].state is not CircuitBreakerState.OPEN:
            return
        message = _TRIAL_FAILED if change[0].state is CircuitBreakerState.HALF_OPEN else _TRIPPED
        remaining = self._remaining()
        raise CircuitBreakerError(message, _wall(remaining or 0.0)) from error

    def _reject_if_open(self, breaker: Breaker) -> None:
        """An OPEN circuit before its retry time rejects: raise our error directly, as the
        guard would (counted in the runtime's rejections), without the guard's own error.
        (Called while the circuit is OPEN.)"""
        delay = rejection_delay(breaker._state, self._clock())
        if delay is None:  # due: the guard half-opens the circuit
            return
        breaker._rejections += 1
        if _LOG.debug:  # False while the logger's DEBUG is off
            breaker._log_rejection("open", _OPEN, delay)
        raise CircuitBreakerError(_STILL_OPEN, _wall(delay))

    def _rejected(self, rejection: CircuitOpenError) -> CircuitBreakerError:
        message = _TRIAL_RUNNING if rejection.state is _HALF_OPEN else _STILL_OPEN
        retry_after = rejection.retry_after
        return CircuitBreakerError(
            message, datetime.max if retry_after is None else _wall(retry_after)
        )

    # ------------------------------------------------------------------ calling

    async def call_async(
        self, func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``await func(*args, **kwargs)`` through the circuit and return its result.

        Raises :class:`CircuitBreakerError` instead of running it while the circuit is OPEN
        (or HALF_OPEN with a trial call in flight), and when its failure opens the circuit;
        any other exception of ``func`` propagates unchanged. A function decorated by this
        breaker (with ``ignore_on_call``, the default) is run directly: it guards itself.
        """
        if getattr(func, _OWNER, None) is self:
            return await func(*args, **kwargs)
        breaker = self._breaker
        if breaker._state.status is _OPEN:
            self._reject_if_open(breaker)
        guard = Guard(breaker)
        try:
            guard.__enter__()
        except CircuitOpenError as rejection:
            raise self._rejected(rejection) from None
        if breaker._state.status is not self._status:  # this call half-opened the circuit
            await self._notify_async(self._moved())
        if self._listeners:
            try:
                for pending in self._hooks("before_call", func, *args, **kwargs):
                    await pending
            except BaseException:
                guard.__exit__(_Abandoned, _Abandoned(), None)
                raise
        try:
            result = await func(*args, **kwargs)
        except BaseException as error:
            if self._listeners:
                await self._finish_async(guard, error)
            elif self._exclude:
                self._finish(guard, error)  # nothing to await: no coroutine to make
            else:  # the guard classifies it (an Exception fails, anything else is neutral)
                guard.__exit__(error.__class__, error, error.__traceback__)
                if breaker._state.status is not self._status:
                    self._trip_error(self._moved(), error)
            raise
        guard.__exit__(None, None, None)
        if self._listeners:
            await self._notify_async(self._moved())
            await self._call_hooks_async("success")
        elif breaker._state.status is not self._status:
            self._moved()
        return result

    async def _finish_async(self, guard: Guard, error: BaseException) -> None:
        """Report a call that raised ``error``; raises CircuitBreakerError if it tripped."""
        if not isinstance(error, Exception):
            guard.__exit__(type(error), error, error.__traceback__)  # neutral
            return
        if self._exclude and self._excluded(error):
            guard.__exit__(None, None, None)
            await self._notify_async(self._moved())
            await self._call_hooks_async("success")
            return
        guard.__exit__(type(error), error, error.__traceback__)
        change = self._moved()
        await self._call_hooks_async("failure", error)
        await self._notify_async(change)
        self._trip_error(change, error)

    def call(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``func(*args, **kwargs)`` (a sync function) through the circuit.

        As :meth:`call_async`, for sync code. When ``func`` returns a generator, the
        generator is guarded instead: the call is admitted now, and counts when the
        generator finishes (a success), raises (a failure, unless excluded) or is closed
        early (nothing); a generator never started holds a half-open circuit's trial slot
        until ``timeout_duration`` has passed. Raises ``TypeError`` when ``func`` returns a
        coroutine (use :meth:`call_async`; aiobreaker would count the coroutine, unrun, as a
        success).
        """
        if getattr(func, _OWNER, None) is self:
            return func(*args, **kwargs)
        breaker = self._breaker
        if breaker._state.status is _OPEN:
            self._reject_if_open(breaker)
        guard = Guard(breaker)
        try:
            guard.__enter__()
        except CircuitOpenError as rejection:
            raise self._rejected(rejection) from None
        if breaker.state is not self._status:
            self._notify(self._moved())
        if self._listeners:
            try:
                for pending in self._hooks("before_call", func, *args, **kwargs):
                    _unawaited(pending, "before_call")
            except BaseException:
                guard.__exit__(_Abandoned, _Abandoned(), None)
                raise
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            self._finish(guard, error)
            raise
        if isinstance(result, types.GeneratorType):
            return cast(T, self._generator(guard, cast("Generator[Any, Any, Any]", result)))
        if inspect.iscoroutine(result):
            result.close()
            guard.__exit__(_Abandoned, _Abandoned(), None)
            raise TypeError(
                f"{func!r} returned a coroutine: use 'await breaker.call_async(...)' for "
                "async functions"
            )
        self._finish(guard, None)
        return result

    def _finish(self, guard: Guard, error: BaseException | None) -> None:
        """Report how a sync call ended; raises CircuitBreakerError if it tripped."""
        if error is not None and not isinstance(error, Exception):
            guard.__exit__(type(error), error, error.__traceback__)  # neutral
            return
        if error is None or (self._exclude and self._excluded(error)):
            guard.__exit__(None, None, None)
            self._notify(self._moved())
            self._call_hooks("success")
            return
        guard.__exit__(type(error), error, error.__traceback__)
        change = self._moved()
        self._call_hooks("failure", error)
        self._notify(change)
        self._trip_error(change, error)

    def _generator(
        self, guard: Guard, generator: Generator[Any, Any, Any]
    ) -> Generator[Any, Any, Any]:
        try:
            result = yield from generator
        except BaseException as error:
            self._finish(guard, error)
            raise
        self._finish(guard, None)
        return result

    # ------------------------------------------------------------------ decorator

    @overload
    def __call__(
        self, func: Callable[P, T], /, *, ignore_on_call: bool = True
    ) -> Callable[P, T]: ...

    @overload
    def __call__(self, *, ignore_on_call: bool = True) -> _Decorator: ...

    def __call__(self, *call_args: Any, ignore_on_call: bool = True) -> Any:
        """Decorate a function so every call goes through the circuit: ``@breaker``,
        ``@breaker()`` or ``@breaker(ignore_on_call=False)``.

        An async function (or a callable with an async ``__call__``) goes through
        :meth:`call_async`, anything else through :meth:`call` (so a generator function is
        guarded as a generator). ``ignore_on_call`` (default True): passing the decorated
        function to *this* breaker's ``call``/``call_async`` runs it directly instead of
        guarding it twice (aiobreaker skips every breaker's ``call``, not just its own).
        Raises :class:`~breaker_machines.ConfigError` for an async generator function
        (aiobreaker leaves it unguarded) and ``TypeError`` for other positional arguments.
        """
        if not isinstance(ignore_on_call, bool):
            raise ConfigError("ignore_on_call", ignore_on_call, "must be True or False")
        if not call_args:
            return functools.partial(self._decorate, ignore_on_call=ignore_on_call)
        if len(call_args) == 1 and callable(call_args[0]):
            return self._decorate(call_args[0], ignore_on_call=ignore_on_call)
        raise TypeError("Decorator does not accept positional arguments.")

    def _decorate(self, func: Callable[..., Any], *, ignore_on_call: bool) -> Callable[..., Any]:
        if not callable(func):
            raise TypeError("Decorator does not accept positional arguments.")
        if inspect.isasyncgenfunction(func):
            raise ConfigError(
                "func", func, "is an async generator function: a breaker cannot guard it"
            )
        wrapper: Callable[..., Any]
        if is_async(func):
            call_async = self.call_async

            @functools.wraps(func)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                return await call_async(func, *args, **kwargs)

            wrapper = guarded_async
        else:
            call = self.call

            @functools.wraps(func)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                return call(func, *args, **kwargs)

            wrapper = guarded
        setattr(wrapper, _OWNER, self if ignore_on_call else None)
        return wrapper

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self.current_state.name}>"
