"""A runtime for plain synchronous code in threads, on the same pure core.

A lock is held around ``step()`` and the counters, never around the user's call. Threads
cannot be cancelled, so this runtime has no ``timeout`` (use the client's own timeout, or
``slow_call_duration`` to count slow calls) and no async callbacks.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

from ._base import _LOG, BreakerBase
from ._core.errors import ConfigError
from ._core.records import Admitted, BreakerState, Event, Rejected
from ._core.status import Outcome, State
from .callbacks import Transition, is_async, refuse_non_functions
from .errors import BreakerError, BulkheadFullError, FailedResultError
from .hedging import ParallelFallback
from .storage.shared import SharedStorage

__all__ = ["ThreadedBreaker", "ThreadedGuard"]

P = ParamSpec("P")
T = TypeVar("T")

_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
_CANCELLED: Final = Outcome.CANCELLED


class ThreadedGuard:
    """One guarded call in a thread: ``with breaker.guard():``. Use one guard per call."""

    __slots__ = ("_b", "_gen", "_probe", "_slot", "_start")

    def __init__(self, breaker: ThreadedBreaker) -> None:
        self._b = breaker

    def __enter__(self) -> ThreadedGuard:
        b = self._b
        state = b._state  # one read: status and version from the same snapshot
        now = b._clock()
        self._start = now
        status = state.status
        if status is State.CLOSED or status is State.DISABLED:
            self._gen = state.version
            self._probe = None
        else:
            admitted = b._admit(now)
            self._gen = admitted.generation
            self._probe = admitted.probe
        self._slot = False
        semaphore = b._semaphore
        if semaphore is not None:
            wait = b._bulkhead_wait
            if not (semaphore.acquire(timeout=wait) if wait > 0.0 else semaphore.acquire(False)):
                self._refuse_bulkhead()
            self._slot = True
            if wait > 0.0 and b._timed:
                self._start = b._clock()  # time spent waiting for a slot is not the call's
        return self

    def _refuse_bulkhead(self) -> NoReturn:
        b = self._b
        with b._lock:
            b._bulkhead_rejections += 1
        if _LOG.debug:
            b._log_rejection("bulkhead", b._state.status, None)
        if self._probe is not None:
            b._record(_CANCELLED, 0.0, self._gen, self._probe)
        assert b._max_concurrent is not None
        raise BulkheadFullError(b.name, b._max_concurrent)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._settle(exc, failed_result=False)

    def _settle(self, exc: BaseException | None, *, failed_result: bool) -> Outcome:
        b = self._b
        if self._slot:
            self._slot = False
            assert b._semaphore is not None
            b._semaphore.release()
        if exc is None:
            outcome = _FAILURE if failed_result else _SUCCESS
        else:
            outcome = b._classify(exc)
        if outcome is _FAILURE and b._events is not None:
            with b._lock:  # a repeat bumps the newest entry's count: one thread at a time
                b._log_failure(outcome, exc)
        b._finish(outcome, self._start, self._gen, self._probe)
        return outcome


class ThreadedBreaker(BreakerBase):
    """A circuit breaker for synchronous code called from many threads.

    Takes the same options as :class:`~breaker_machines.Breaker` except ``timeout`` and
    async callbacks. ``with breaker.guard():``, ``breaker.call(fn, ...)`` or ``@breaker``.
    """

    __slots__ = ("_lock", "_semaphore")

    def _setup(self) -> None:
        if isinstance(self._storage, SharedStorage):
            raise ConfigError(
                "storage",
                self._storage,
                "shared storages need the anyio Breaker (its runner does the I/O)",
            )
        if self._timeout is not None:
            raise ConfigError(
                "timeout",
                self._timeout,
                "threads cannot be cancelled: use the client's own timeout, or "
                "slow_call_duration to count slow calls",
            )
        for handlers in (
            self._on_open,
            self._on_close,
            self._on_half_open,
            self._on_reject,
            self._on_transition,
            self._on_degraded,
            self._on_resynced,
        ):
            for handler in handlers:
                if handler.is_async:
                    raise ConfigError(
                        handler.name, handler.fn, "must be a sync callable in a ThreadedBreaker"
                    )
        for candidate in self._fallbacks:
            if isinstance(candidate, ParallelFallback):
                raise ConfigError(
                    "fallback",
                    candidate,
                    "parallel fallbacks race in a task group: use the anyio Breaker",
                )
            if is_async(candidate):
                raise ConfigError(
                    "fallback", candidate, "must be a value or a sync callable in a ThreadedBreaker"
                )
        self._lock = threading.Lock()
        self._semaphore = (
            threading.BoundedSemaphore(self._max_concurrent) if self._max_concurrent else None
        )

    # The core is stepped under the lock; callbacks run after it is released.

    def _decide(self, now: float) -> tuple[Admitted | Rejected, list[Transition]]:
        with self._lock:
            return super()._decide(now)

    def _count(
        self, outcome: Outcome, duration: float, generation: int, probe: int | None
    ) -> list[Transition] | None:
        with self._lock:
            return super()._count(outcome, duration, generation, probe)

    def _step_control(self, event: Event) -> list[Transition]:
        with self._lock:
            return super()._step_control(event)

    @property
    def snapshot(self) -> BreakerState:
        """The core's full state record (immutable; safe to keep or serialise).

        Taken under the lock: the failures counted without the core are folded into the
        state while no other thread counts one (``stats()`` reads it too).
        """
        with self._lock:
            return BreakerBase.snapshot.fget(self)  # type: ignore[attr-defined, no-any-return]

    def guard(self) -> ThreadedGuard:
        """A context manager guarding one call."""
        return ThreadedGuard(self)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker, applying the fallback."""
        guard = ThreadedGuard(self)
        try:
            guard.__enter__()
        except BreakerError as error:
            if not self._fallbacks:
                raise
            return self._apply_fallback(error)  # type: ignore[no-any-return]
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            outcome = guard._settle(error, failed_result=False)
            if outcome is _FAILURE and self._fallbacks:
                return self._apply_fallback(error)  # type: ignore[no-any-return]
            raise
        failed = self._failure_if is not None and self._refuses(result)
        guard._settle(None, failed_result=failed)
        if failed and self._fallbacks:
            return self._apply_fallback(FailedResultError(self.name, result))  # type: ignore[no-any-return]
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function so every call goes through :meth:`call`."""
        refuse_non_functions("fn", fn)
        if not callable(fn):
            raise ConfigError("fn", fn, "must be callable")
        if is_async(fn):
            raise ConfigError("fn", fn, "must be a sync function: decorate it with a Breaker")
        call = self.call

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return call(fn, *args, **kwargs)

        return guarded

    def _apply_fallback(self, error: BaseException) -> Any:
        last: BaseException = error
        for candidate in self._fallbacks:
            if not callable(candidate):
                return candidate
            try:
                return candidate(error)
            except Exception as fallback_error:
                last = fallback_error
        raise last from error
