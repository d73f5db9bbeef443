"""What callbacks receive, and how they are called without ever disturbing the caller."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._core.errors import ConfigError
from ._core.status import Outcome, Reason, State

__all__ = ["CallObserver", "Callback", "Rejection", "StorageEvent", "Transition"]

logger: logging.Logger = logging.getLogger("breaker_machines")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Transition:
    """Passed to ``on_open``, ``on_close``, ``on_half_open`` and ``on_transition``.

    ``at`` is the breaker's clock when the transition was applied. ``won`` is True when
    this process decided the transition and False when it adopted one decided elsewhere
    (shared storage), so an alert can be sent once per fleet.
    """

    breaker: str
    source: State
    target: State
    reason: Reason
    version: int
    at: float
    won: bool


@dataclass(frozen=True, slots=True)
class Rejection:
    """Passed to ``on_reject``: the circuit refused a call."""

    breaker: str
    state: State
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class StorageEvent:
    """Passed to ``on_degraded`` and ``on_resynced`` (shared storage only).

    ``degraded`` is True when the breaker's storage just failed (``error`` says how) and
    it starts deciding in its ``degraded_mode``; False when the storage answered again and
    the breaker exchanged its state with it (``downtime``: seconds it was degraded).
    ``dropped`` and ``stale`` are the breaker's totals so far of outcomes that were not
    delivered (see :class:`~breaker_machines.BreakerStats`). ``at`` is the breaker's clock.
    """

    breaker: str
    degraded: bool
    error: str | None
    at: float
    downtime: float | None
    dropped: int
    stale: int


Callback = Callable[[], Any] | Callable[[Any], Any]
"""A callback: sync or async, taking no argument or the event record."""

CallObserver = Callable[[Outcome, float], object]
"""A call observer (``breaker.add_call_observer``): a sync function of the outcome of a
guarded call and its duration in seconds, called after every guarded call."""


class _Handler:
    """A user callback, inspected once: does it take the event, is it a coroutine function?"""

    __slots__ = ("fn", "is_async", "name", "wants_arg")

    def __init__(self, field: str, fn: object) -> None:
        refuse_non_functions(field, fn)
        if not callable(fn):
            raise ConfigError(field, fn, "must be a callable (sync or async)")
        self.fn: Callable[..., Any] = fn
        self.name = field
        self.is_async = is_async(fn)
        self.wants_arg = _takes_one_argument(field, fn)


def is_async(fn: object) -> bool:
    """An async function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def accepts(fn: Callable[..., Any], arguments: int) -> bool:
    """Whether ``fn`` can be called with ``arguments`` positional arguments.

    True when it cannot be told (a builtin without a signature).
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(*([None] * arguments))
    except TypeError:
        return False
    return True


def refuse_non_functions(field: str, value: object) -> None:
    """ConfigError for what looks like a function but would never run as one."""
    if inspect.isawaitable(value) and not callable(value):
        raise ConfigError(
            field,
            value,
            "is a coroutine (an async function already called): pass the function itself",
        )
    if inspect.isgeneratorfunction(value) or inspect.isasyncgenfunction(value):
        raise ConfigError(field, value, "is a generator function: calling it runs nothing")


def check_function(
    field: str, value: object, *, arguments: int, what: str, allow_async: bool = False
) -> None:
    """ConfigError unless ``value`` is a function callable with ``arguments`` arguments.

    ``what`` says what is expected (``"a predicate on the result"``). Unless
    ``allow_async``, an async function is refused: its result would be a coroutine.
    """
    refuse_non_functions(field, value)
    if not callable(value):
        raise ConfigError(field, value, f"must be {what}")
    if not allow_async and is_async(value):
        raise ConfigError(
            field, value, f"must be a sync function ({what}): an async one returns a coroutine"
        )
    if not accepts(value, arguments):
        count = "no argument" if arguments == 0 else f"{arguments} positional argument"
        raise ConfigError(field, value, f"must accept {count}{'s' if arguments > 1 else ''}")


def with_observer(observers: tuple[T, ...], observer: T, where: str) -> tuple[T, ...]:
    """``observers`` plus ``observer``; ConfigError if it is there already (compared with
    ``==``, so a bound method matches its twin)."""
    if observer in observers:
        raise ConfigError("observer", observer, f"is already observing this {where}")
    return (*observers, observer)


def without_observer(observers: tuple[T, ...], observer: T, where: str) -> tuple[T, ...]:
    """``observers`` less ``observer``; ConfigError if it is not there."""
    kept = tuple(known for known in observers if known != observer)
    if len(kept) == len(observers):
        raise ConfigError("observer", observer, f"is not observing this {where}")
    return kept


def _takes_one_argument(field: str, fn: Callable[..., Any]) -> bool:
    if accepts(fn, 1):  # also a builtin without a signature: assume it takes one
        return True
    if not accepts(fn, 0):
        raise ConfigError(field, fn, "must accept no argument or one argument")
    return False


def handlers(field: str, value: object) -> tuple[_Handler, ...]:
    """Normalise ``None``, one callable or a sequence of callables into handlers."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        items: list[object] = list(value)  # pyright: ignore[reportUnknownArgumentType]
        return tuple(_Handler(field, item) for item in items)
    return (_Handler(field, value),)
