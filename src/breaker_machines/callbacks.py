"""What callbacks receive, and how they are called without ever disturbing the caller."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._core.errors import ConfigError
from ._core.status import Reason, State

__all__ = ["Callback", "Rejection", "Transition"]

logger = logging.getLogger("breaker_machines")


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


Callback = Callable[[], Any] | Callable[[Any], Any]
"""A callback: sync or async, taking no argument or the event record."""


class _Handler:
    """A user callback, inspected once: does it take the event, is it a coroutine function?"""

    __slots__ = ("fn", "is_async", "name", "wants_arg")

    def __init__(self, field: str, fn: object) -> None:
        if not callable(fn):
            raise ConfigError(field, fn, "must be a callable (sync or async)")
        self.fn: Callable[..., Any] = fn
        self.name = field
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        self.wants_arg = _takes_one_argument(field, fn)


def _takes_one_argument(field: str, fn: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: assume it takes one
        return True
    try:
        signature.bind(None)
    except TypeError:
        pass
    else:
        return True
    try:
        signature.bind()
    except TypeError:
        raise ConfigError(field, fn, "must accept no argument or one argument") from None
    return False


def handlers(field: str, value: object) -> tuple[_Handler, ...]:
    """Normalise ``None``, one callable or a sequence of callables into handlers."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        items: list[object] = list(value)  # pyright: ignore[reportUnknownArgumentType]
        return tuple(_Handler(field, item) for item in items)
    return (_Handler(field, value),)
