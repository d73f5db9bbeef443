"""Racing attempts: hedged requests (``Breaker.hedged``) and parallel fallbacks (``parallel``).

Both run their attempts as tasks of one anyio task group. The first attempt to succeed wins:
the task group's cancel scope is cancelled, which cancels every other attempt, and the race
returns once every attempt has ended (no task outlives it). An attempt fails when it raises
an :class:`Exception` (or, for a hedged call, returns a result the breaker's ``failure_if``
refuses); anything else it raises (a cancellation, ``KeyboardInterrupt``) is not caught and
ends the whole race, as in any task group.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import anyio

from ._core.errors import ConfigError
from .callbacks import accepts, check_function, refuse_non_functions
from .errors import FallbacksFailedError

__all__ = ["ParallelFallback", "parallel"]

T = TypeVar("T")


def check_delay(value: object) -> float:
    """``delay`` of a hedged call: a finite number of seconds >= 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("delay", value, "must be a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = float("inf")
    if not (seconds >= 0.0 and seconds != float("inf")):
        raise ConfigError("delay", value, "must be a finite number of seconds >= 0")
    return seconds


def check_attempts(value: object) -> int:
    """``max_attempts`` of a hedged call: an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("max_attempts", value, "must be an integer >= 1")
    return value


def check_backends(value: object) -> tuple[Callable[[], Awaitable[Any]], ...]:
    """``backends`` of a hedged race: a non-empty sequence of zero-argument callables."""
    given: object = value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError("backends", given, "must be a sequence of zero-argument async callables")
    backends: tuple[Any, ...] = tuple(cast("Sequence[object]", value))
    if not backends:
        raise ConfigError("backends", given, "an empty sequence has nothing to race")
    for backend in backends:
        check_function(
            "backends",
            backend,
            arguments=0,
            what="a zero-argument async callable",
            allow_async=True,
        )
    return backends


class _Race(Generic[T]):
    """The shared record of one race, written by its attempts and read by its starter."""

    __slots__ = ("errors", "pending", "refused", "refuses", "scope", "wake", "won")

    scope: anyio.CancelScope

    def __init__(self, count: int, refuses: Callable[[T], bool] | None) -> None:
        self.refuses = refuses
        self.won: list[T] = []  # the winner's result, once there is one
        self.errors: list[Exception | None] = [None] * count
        self.refused: dict[int, T] = {}
        self.pending = 0  # failures that have not started the next attempt yet
        self.wake = anyio.Event()

    async def attempt(self, index: int, fn: Callable[[], Awaitable[T]]) -> None:
        try:
            result = await fn()
        except Exception as error:
            self.errors[index] = error
            self._lost()
            return
        if self.won:
            return  # finished without a checkpoint after the winner: it lost
        if self.refuses is not None and self.refuses(result):
            self.refused[index] = result
            self._lost()
            return
        self.won.append(result)
        self.scope.cancel()

    def _lost(self) -> None:
        """A failed attempt starts the next one at once: wake the starter."""
        self.pending += 1
        self.wake.set()


class _Lost(Generic[T]):
    """How a race without a winner ended: each attempt's error, the refused results."""

    __slots__ = ("errors", "refused")

    def __init__(self, errors: list[Exception | None], refused: dict[int, T]) -> None:
        self.errors = errors
        self.refused = refused


async def race(
    attempts: Sequence[Callable[[], Awaitable[T]]],
    delay: float,
    refuses: Callable[[T], bool] | None = None,
) -> tuple[T] | _Lost[T]:
    """Race ``attempts``: attempt ``i`` starts ``delay`` seconds after attempt ``i - 1``,
    or as soon as an attempt fails, whichever comes first (all at once when ``delay`` is 0).

    Returns ``(result,)`` for the first attempt to succeed, after cancelling the others, or
    a :class:`_Lost` when none did (every attempt raised, or returned a result ``refuses``).
    Returns only once every attempt it started has ended.
    """
    state = _Race(len(attempts), refuses)
    async with anyio.create_task_group() as tg:
        state.scope = tg.cancel_scope
        for index, fn in enumerate(attempts):
            if index:
                if not state.pending and delay > 0.0:
                    state.wake = anyio.Event()
                    with anyio.move_on_after(delay):
                        await state.wake.wait()
                if state.won:
                    break
                if state.pending:
                    state.pending -= 1
            tg.start_soon(state.attempt, index, fn)
    if state.won:
        return (state.won[0],)
    return _Lost(state.errors, state.refused)


@dataclass(frozen=True, slots=True)
class ParallelFallback:
    """Fallbacks that answer concurrently: the first to succeed wins. Build it with
    :func:`parallel`.

    Each of ``fallbacks`` is a sync or async callable taking the error it answers, like an
    ordinary fallback. Called with that error, the group runs them all at once in a task
    group: the first to return wins and the others are cancelled. When every one of them
    raises, it raises :class:`~breaker_machines.FallbacksFailedError` with their errors.
    Only an async fallback can be cancelled, or wait while the others run: a sync one runs
    to its end when its task starts.

    Only the anyio :class:`~breaker_machines.Breaker` can race fallbacks: a
    :class:`~breaker_machines.ThreadedBreaker` refuses a group with a
    :class:`~breaker_machines.ConfigError`.
    """

    fallbacks: tuple[Callable[[Exception], Any], ...]
    """The fallbacks raced, in the order given (their errors keep that order)."""

    def __post_init__(self) -> None:
        fallbacks: object = self.fallbacks
        if not isinstance(fallbacks, tuple):
            raise ConfigError("fallback", fallbacks, "parallel() takes the fallbacks one by one")
        if not fallbacks:
            raise ConfigError("fallback", fallbacks, "parallel() needs at least one fallback")
        for candidate in fallbacks:  # pyright: ignore[reportUnknownVariableType]
            refuse_non_functions("fallback", candidate)
            if not callable(candidate):
                raise ConfigError(
                    "fallback",
                    candidate,
                    "a parallel fallback must be a callable taking the error it answers",
                )
            if not accepts(candidate, 1):
                raise ConfigError(
                    "fallback", candidate, "must accept one argument (the error it answers)"
                )

    async def __call__(self, error: Exception, /, breaker: str | None = None) -> Any:
        """Answer ``error`` with the first of the fallbacks to succeed.

        ``breaker`` names the breaker in a :class:`~breaker_machines.FallbacksFailedError`
        (a :class:`~breaker_machines.Breaker` passes its name).
        """

        def answering(candidate: Callable[[Exception], Any]) -> Callable[[], Awaitable[Any]]:
            async def answer() -> Any:
                result = candidate(error)
                if inspect.isawaitable(result):
                    result = await result
                return result

            return answer

        ended = await race([answering(candidate) for candidate in self.fallbacks], 0.0)
        if isinstance(ended, tuple):
            return ended[0]
        errors = [failure for failure in ended.errors if failure is not None]
        raise FallbacksFailedError(breaker, error, errors) from error


def parallel(*fallbacks: Callable[[Exception], Any]) -> ParallelFallback:
    """Race ``fallbacks`` as one fallback: ``Breaker(fallback=parallel(a, b))``.

    Each is a sync or async callable taking the error it answers. They run concurrently and
    the first to succeed answers; the others are cancelled. When every one raises, the group
    raises :class:`~breaker_machines.FallbacksFailedError` (an ``ExceptionGroup`` of their
    errors). It can also be one element of a list of fallbacks (``fallback=[parallel(a, b),
    default]``): a group that fails passes on to the next element, as a fallback that
    raises does. Raises :class:`~breaker_machines.ConfigError` when there is no fallback or
    one is not a callable of one argument.
    """
    return ParallelFallback(fallbacks)
