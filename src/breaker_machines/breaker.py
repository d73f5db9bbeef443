"""The anyio runtime: ``Breaker``, its guard, ``call()``, the decorator and the runner.

Runs unchanged under asyncio and trio. Admission while CLOSED is an attribute read and the
outcome of a success that changes nothing is a counter increment: no event is built, no
lock is taken and nothing is held across the user's code. Everything else goes through
the pure ``step()``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, NoReturn, ParamSpec, TypeVar, cast

import anyio
import anyio.abc

from ._base import _LOG, BreakerBase
from ._core.shortcuts import rejection_delay
from ._core.status import Outcome, State
from .callbacks import Rejection, refuse_non_functions
from .errors import (
    BreakerError,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
    FailedResultError,
)
from .hedging import ParallelFallback, check_attempts, check_backends, check_delay, race
from .storage.shared import SharedStorage

__all__ = ["Breaker", "Guard", "running"]

P = ParamSpec("P")
T = TypeVar("T")

_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
_TIMEOUT: Final = Outcome.TIMEOUT
_CANCELLED: Final = Outcome.CANCELLED
_HALF_OPEN: Final = State.HALF_OPEN
_OPEN: Final = State.OPEN
# Admissions of one shared guard whose probe permit a new generation voided, at most.
_PROBE_ATTEMPTS: Final = 3
_ENTERED_PLAINLY: Final = object()


class Guard:
    """One guarded call: ``with breaker.guard():`` or ``async with breaker.guard():``.

    Entering asks the circuit for a permit (raising :class:`CircuitOpenError` or
    :class:`BulkheadFullError`), starts the timeout's cancel scope and takes a bulkhead
    slot; leaving classifies what happened and reports it. A guard never swallows an
    exception, except its own timeout's cancellation, which it turns into
    :class:`CircuitTimeoutError`. Use one guard per call.
    """

    __slots__ = ("_b", "_gen", "_probe", "_scope", "_slot", "_start")

    _gen: int
    _probe: int | None
    _scope: anyio.CancelScope | None
    _slot: bool
    _start: float

    def __init__(self, breaker: Breaker) -> None:
        self._b = breaker

    # -- entering

    def __enter__(self) -> Guard:
        b = self._b
        if b._plain and b._free:
            self._gen = b._version
            self._probe = None
            return self
        if b._quick_reject and b._override is None:
            delay = rejection_delay(b._state, b._clock())
            if delay is not None:  # the core would only reject: skip building an event
                b._rejections += 1
                retry_after = None if delay == math.inf else delay
                if _LOG.debug:  # False while the logger's DEBUG is off
                    b._log_rejection(
                        "open" if retry_after is not None else "forced_open",
                        b._state.status,
                        retry_after,
                    )
                raise CircuitOpenError(b.name, retry_after, b._state.status)
        self._permit()
        self._slot = False
        if b._limiter is not None:
            try:
                b._limiter.acquire_on_behalf_of_nowait(self)
            except anyio.WouldBlock:
                self._refuse_bulkhead()
            self._slot = True
        self._start_scope()
        return self

    async def __aenter__(self) -> Guard:
        b = self._b
        if b._replica is not None:
            return await self._enter_shared()
        if b._bulkhead_wait <= 0.0 or b._limiter is None:
            return self.__enter__()
        return await self._enter_waiting()

    async def _enter_shared(self) -> Guard:
        """Shared storage: a half-open probe needs one of the fleet's permits too."""
        b = self._b
        replica = b._replica
        assert replica is not None
        attempt = 0
        while True:
            status = b._state.status
            if (status is not _HALF_OPEN and status is not _OPEN) or b._override is not None:
                if b._bulkhead_wait <= 0.0 or b._limiter is None:
                    return self.__enter__()
                return await self._enter_waiting()
            now = b._clock()
            admitted = b._admit(now)  # the core decides; raises CircuitOpenError on rejection
            if admitted.probe is None:
                break
            try:
                allowed = await replica.take_probe(admitted.generation, admitted.probe)
            except BaseException:
                b._give_back(admitted.generation, admitted.probe)  # cancelled while admitted
                raise
            if allowed:
                break
            attempt += 1
            if b._version == admitted.generation or attempt >= _PROBE_ATTEMPTS:
                # The fleet's permits are all out: the soonest frees within a lease.
                self._refuse_probe(admitted.generation, admitted.probe, b.policy.probe_lease)
            # The circuit moved to a new generation while the permit was on its way (most
            # often: another process wrote the same OPEN -> HALF_OPEN transition first and
            # this one adopted it). That voids this permit, not the fleet's: ask again.
            b._give_back(admitted.generation, admitted.probe)  # stale: changes nothing
        self._gen = admitted.generation
        self._probe = admitted.probe
        self._start = now
        self._slot = False
        if b._limiter is not None:
            if b._bulkhead_wait > 0.0:
                await self._wait_for_slot()
            else:
                try:
                    b._limiter.acquire_on_behalf_of_nowait(self)
                except anyio.WouldBlock:
                    self._refuse_bulkhead()
                self._slot = True
        self._start_scope()
        return self

    def _refuse_probe(self, generation: int, probe: int, retry_after: float) -> NoReturn:
        """The fleet has no probe permit left: give the local one back and reject."""
        b = self._b
        b._give_back(generation, probe)
        b._rejections += 1
        status = b._state.status
        if _LOG.debug:
            b._log_rejection("fleet_probe", status, retry_after)
        if b._on_reject:
            b._fire(b._on_reject, Rejection(b.name, status, retry_after))
        raise CircuitOpenError(b.name, retry_after, status)

    async def _wait_for_slot(self) -> None:
        """Wait up to ``bulkhead_wait`` for a bulkhead slot for the admitted call; refuse it
        (giving a probe permit back) when none frees, or when cancelled meanwhile."""
        b = self._b
        assert b._limiter is not None
        try:
            with anyio.move_on_after(b._bulkhead_wait):
                await b._limiter.acquire_on_behalf_of(self)
                self._slot = True
        except BaseException:
            b._record(_CANCELLED, 0.0, self._gen, self._probe)
            raise
        if not self._slot:
            self._refuse_bulkhead()
        self._start = b._clock()  # a slow call is slow in the dependency, not in the queue

    async def _enter_waiting(self) -> Guard:
        self._permit()
        self._slot = False
        await self._wait_for_slot()
        self._start_scope()
        return self

    def _permit(self) -> None:
        b = self._b
        now = b._clock()
        self._start = now
        if b._free:
            self._gen = b._version
            self._probe = None
        elif b._override is not None:
            self._overridden(now)
        else:
            admitted = b._admit(now)
            self._gen = admitted.generation
            self._probe = admitted.probe
            replica = b._replica
            # No round trip from a sync guard: a probe uses a permit the runner reserved.
            if (
                replica is not None
                and admitted.probe is not None
                and not replica.claim(admitted.generation, admitted.probe)
            ):
                # The runner reserves a permit for the next sync caller: retry right away.
                self._refuse_probe(admitted.generation, admitted.probe, 0.0)

    def _overridden(self, now: float) -> None:
        """Shared storage is down and ``degraded_mode`` decides: reject, or admit all."""
        b = self._b
        status = b._state.status
        if b._override == "reject":
            b._rejections += 1
            replica = b._replica
            retry_after = None if replica is None else max(0.0, replica.retry_at - now)
            if _LOG.debug:
                b._log_rejection("degraded", status, retry_after)
            if b._on_reject:
                b._fire(b._on_reject, Rejection(b.name, status, retry_after))
            raise CircuitOpenError(b.name, retry_after, status)
        if status is State.FORCED_OPEN:  # an operator's hold is never overridden
            b._admit(now)  # raises CircuitOpenError
        # Admitted whatever the circuit says. Outside CLOSED its outcome is of the last
        # generation: the core and the fleet ignore it (counted as stale, not as a probe).
        self._probe = None
        self._gen = b._version if status is State.CLOSED else max(b._version - 1, 0)

    def _refuse_bulkhead(self) -> NoReturn:
        b = self._b
        b._bulkhead_rejections += 1
        if _LOG.debug:
            b._log_rejection("bulkhead", b._state.status, None)
        if self._probe is not None:
            b._record(_CANCELLED, 0.0, self._gen, self._probe)  # give the probe permit back
        assert b._max_concurrent is not None
        raise BulkheadFullError(b.name, b._max_concurrent)

    def _start_scope(self) -> None:
        timeout = self._b._timeout
        if timeout is None:
            self._scope = None
            return
        scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
        scope.__enter__()
        self._scope = scope

    # -- leaving

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        b = self._b
        if b._plain:
            if exc is None:
                if b._inert:
                    b._successes += 1
                    b._room = b._room_full
                    return
                tally = b._tally
                if (
                    tally is not None
                    and b._quiet
                    and self._gen == b._tally_gen
                    and 0 < len(tally) < b._tally_cap
                ):  # shared storage: a quiet success only joins the batch
                    tally.append("s")
                    b._successes += 1
                    return
                b._record(_SUCCESS, 0.0, self._gen, self._probe)
                return
            kind = exc.__class__
            outcome = b._outcomes_by_type.get(kind) or b._classify(exc)
            if outcome is _FAILURE:
                if b._events is not None:
                    # The event log: a repeat of the newest entry (same class and args)
                    # only counts, the common case while a dependency is down.
                    raw = b._last_raw
                    try:
                        same = raw is not None and raw[2] is kind and raw[3] == exc.args
                    except Exception:  # an argument's == raised: log it as new
                        same = False
                    if same:
                        raw[4] += 1  # type: ignore[index]
                    else:
                        b._log_failure(outcome, exc)
                # The common case inline: a failure that cannot trip yet.
                if b._room and self._gen == b._version:
                    b._failures += 1
                    b._room -= 1
                    return
            b._record(outcome, 0.0, self._gen, self._probe)
            return
        self._settle(exc_type, exc, tb, failed_result=False)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _settle(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        *,
        failed_result: bool,
    ) -> Outcome:
        """Close the scope, free the slot, report the outcome; raise our own timeout."""
        b = self._b
        # No scope, no slot, no timing when the guard entered the fast way (while the
        # breaker was plain, or before an observer made it leave the plain path).
        scope = None if b._plain else getattr(self, "_scope", _ENTERED_PLAINLY)
        if scope is _ENTERED_PLAINLY or b._plain:
            if exc is None:
                outcome = _FAILURE if failed_result else _SUCCESS
            else:
                outcome = b._classify(exc)
            if outcome is _FAILURE:
                b._log_failure(outcome, exc)
            b._record(outcome, 0.0, self._gen, self._probe)
            return outcome
        assert scope is None or isinstance(scope, anyio.CancelScope)
        timed_out = False
        try:
            if scope is not None:
                self._scope = None
                timed_out = bool(scope.__exit__(exc_type, exc, tb)) and scope.cancelled_caught
        finally:
            if self._slot:
                self._slot = False
                assert b._limiter is not None
                b._limiter.release_on_behalf_of(self)
            if timed_out:
                outcome = _TIMEOUT
            elif exc is None:
                outcome = _FAILURE if failed_result else _SUCCESS
            else:
                outcome = b._classify(exc)
            if outcome is _FAILURE or outcome is _TIMEOUT:
                b._log_failure(outcome, exc)
            b._finish(outcome, self._start, self._gen, self._probe)
        if timed_out:
            assert b._timeout is not None
            raise CircuitTimeoutError(b.name, b._timeout) from exc
        return outcome


class Breaker(BreakerBase):
    """A circuit breaker for async code, under asyncio or trio (through anyio).

    ``Breaker(name, **options)``; see the :ref:`options reference <breaker-options>` for
    every option. Without a trip rule it opens after 5 consecutive failures. Use it as
    ``with breaker.guard():``, ``async with breaker.guard():``, ``await breaker.call(fn,
    ...)`` or as a decorator on an async function. With the default memory storage it works
    with no runner; start :meth:`run` (or :func:`running`) in a task group for async
    callbacks and on-time half-opening.
    """

    __slots__ = (
        "_async_enter",
        "_kick",
        "_limiter",
        "_plain",
        "_quick_reject",
        "_runner_active",
        "guard",
    )

    guard: Callable[[], Guard]
    """``breaker.guard()``: a context manager guarding one call (``with`` or ``async with``).

    (An attribute holding ``functools.partial(Guard, breaker)`` rather than a method: one
    Python frame less on every guarded call.)
    """

    def _setup(self) -> None:
        self._limiter = (
            anyio.CapacityLimiter(self._max_concurrent) if self._max_concurrent else None
        )
        self._retime()
        self._quick_reject = not self._on_reject  # on_reject callbacks need the slow path
        self.guard = functools.partial(Guard, self)
        self._kick: anyio.Event | None = None
        self._runner_active = False
        shared = isinstance(self._storage, SharedStorage)
        self._async_enter = self._bulkhead_wait > 0.0 or shared

    def _retime(self) -> None:
        super()._retime()
        # An observer needs the duration: a breaker with one leaves the plain path.
        self._plain = self._limiter is None and self._timeout is None and not self._timed

    # ------------------------------------------------------------------ calling

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` through the breaker, applying the fallback.

        The fallback (if any) answers a rejection, a recorded failure (an exception, or a
        result ``failure_if`` refuses) and a timeout. Without a fallback those raise, except
        a refused result, which is still returned after being counted.
        """
        guard = Guard(self)
        try:
            if self._async_enter:
                await guard.__aenter__()
            else:
                guard.__enter__()
        except BreakerError as error:
            if not self._fallbacks:
                raise
            return cast(T, await self._apply_fallback(error))
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            try:
                outcome = guard._settle(
                    type(error), error, error.__traceback__, failed_result=False
                )
            except CircuitTimeoutError as timeout_error:
                if not self._fallbacks:
                    raise
                return cast(T, await self._apply_fallback(timeout_error))
            if outcome is _FAILURE and self._fallbacks:
                return cast(T, await self._apply_fallback(error))
            raise
        failed = self._failure_if is not None and self._refuses(result)
        guard._settle(None, None, None, failed_result=failed)
        if failed and self._fallbacks:
            return cast(T, await self._apply_fallback(FailedResultError(self.name, result)))
        return result

    async def hedged(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        delay: float = 0.05,
        max_attempts: int = 2,
        **kwargs: Any,
    ) -> T:
        """A hedged request: ``await fn(*args, **kwargs)``, started again while it is slow.

        The first attempt starts at once; each next one starts ``delay`` seconds after the
        one before it, or as soon as an attempt fails (raises an ``Exception``, or returns
        a result ``failure_if`` refuses), up to ``max_attempts`` in all. The first attempt to
        succeed wins: its result is returned and the other attempts are cancelled. It
        returns only once every attempt has ended.

        When no attempt succeeds, the **primary's** error (that of the first attempt
        started) is raised, whatever the others raised; when some returned results
        ``failure_if`` refuses, the first of those (in starting order) is returned instead,
        and counts as a failed result as in :meth:`call`.

        The whole race is one call through the breaker, as in :meth:`call`: it is admitted
        once (one bulkhead slot), the breaker's ``timeout`` bounds the whole race, ONE
        outcome is recorded and the fallback answers a rejection or a failure. ``delay``
        and ``max_attempts`` are this method's own: ``fn`` cannot take arguments of those
        names through it. Only idempotent operations should be hedged.

        Raises :class:`ConfigError` when ``delay`` is not a finite number >= 0 or
        ``max_attempts`` not an integer >= 1.
        """
        refuse_non_functions("fn", fn)
        if not callable(fn):
            raise ConfigError("fn", fn, "must be an async function")
        seconds = check_delay(delay)
        count = check_attempts(max_attempts)
        attempt = functools.partial(fn, *args, **kwargs)
        return await self._hedge((attempt,) * count, seconds)

    async def hedged_race(
        self, backends: Sequence[Callable[[], Awaitable[T]]], /, *, delay: float = 0.05
    ) -> T:
        """Race ``backends`` (zero-argument async callables) as one hedged call.

        Each backend starts ``delay`` seconds after the one before it (backend ``i`` at
        ``i * delay`` while none fails), or at once when an attempt fails; ``delay=0``
        starts them all at once. Otherwise as :meth:`hedged`: the first to succeed wins
        and the others are cancelled; when none succeeds, the first backend's error is
        raised; the whole race is one call through the breaker.

        Raises :class:`ConfigError` when ``backends`` is not a non-empty sequence of
        callables or ``delay`` not a finite number >= 0.
        """
        chosen = check_backends(backends)
        return await self._hedge(chosen, check_delay(delay))

    async def _hedge(self, attempts: Sequence[Callable[[], Awaitable[T]]], delay: float) -> T:
        refuses = self._refuses if self._failure_if is not None else None

        async def hedge() -> T:
            ended = await race(attempts, delay, refuses)
            if isinstance(ended, tuple):
                return ended[0]
            if ended.refused:
                return ended.refused[min(ended.refused)]  # call() counts it as failed
            primary = ended.errors[0]
            assert primary is not None  # every attempt started, and none succeeded
            raise primary

        return await self.call(hedge)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so every call goes through :meth:`call`."""
        refuse_non_functions("fn", fn)
        if not callable(fn):
            raise ConfigError("fn", fn, "must be an async function")
        if self._fallbacks or self._failure_if is not None or self._async_enter:
            call = self.call

            @functools.wraps(fn)
            async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
                return await call(fn, *args, **kwargs)

            return guarded

        breaker = self

        @functools.wraps(fn)
        async def guarded_plainly(*args: P.args, **kwargs: P.kwargs) -> T:
            # Nothing to apply after the call: the guard alone, with no extra coroutine.
            with Guard(breaker):
                return await fn(*args, **kwargs)

        return guarded_plainly

    async def _apply_fallback(self, error: BaseException) -> Any:
        """Answer with the fallback: a value, a (sync or async) callable, or a list of them."""
        last: BaseException = error
        exception = error if isinstance(error, Exception) else None  # (always, in practice)
        for candidate in self._fallbacks:
            if not callable(candidate):
                return candidate
            try:
                if exception is not None and isinstance(candidate, ParallelFallback):
                    result = candidate(exception, self.name)  # names the breaker in its error
                else:
                    result = candidate(error)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as fallback_error:
                last = fallback_error
                continue
            return result
        raise last from error

    # ------------------------------------------------------------------ the runner

    def _wake_runner(self) -> None:
        kick = self._kick
        if kick is not None:
            kick.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Perform the effects that need a task: async callbacks and on-time wake-ups.

        Start it in your own task group (``await tg.start(breaker.run)``); it runs until
        that task group is cancelled. At most one runner per breaker.
        """
        if self._runner_active:
            raise RuntimeError(f"breaker {self.name!r} already has a runner")
        self._runner_active = True
        replica = self._replica
        stop_watching: Callable[[], None] | None = None
        stop_gap: Callable[[], None] | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._kick = anyio.Event()
                if replica is not None:
                    stop_watching = replica.storage.watch(self.name, replica.observe)
                    stop_gap = replica.storage.on_gap(replica.missed)
                    await replica.service()  # adopt the stored state before reporting ready
                task_status.started()
                while True:
                    if replica is not None:
                        await replica.service()
                    while self._pending:
                        name, thunk = self._pending.popleft()
                        tg.start_soon(self._run_callback, name, thunk)
                    now = self._clock()
                    delay = math.inf
                    if self._wake_at is not None:
                        delay = max(0.0, self._wake_at - now)
                    if replica is not None:
                        delay = min(delay, replica.next_due(now))
                    with anyio.move_on_after(delay):
                        await self._kick.wait()
                    if self._kick.is_set():
                        self._kick = anyio.Event()
                    self._tick()
            raise AssertionError("unreachable: the runner loops until cancelled")
        finally:
            self._kick = None
            self._runner_active = False
            if stop_watching is not None:
                stop_watching()
            if stop_gap is not None:
                stop_gap()
            if replica is not None:
                # Deliver what is still batched, within the storage's timeout.
                with anyio.CancelScope(shield=True), anyio.move_on_after(replica.storage.timeout):
                    replica.flush_due = -math.inf
                    await replica.service()

    async def sync(self) -> None:
        """Shared storage: write decided transitions, flush the batch and refresh, now.

        Raises :class:`~breaker_machines.storage.StorageError` if the storage fails (the
        runner itself never raises: it retries). With memory storage it does nothing.
        """
        replica = self._replica
        if replica is None:
            return
        replica.refresh_due = -math.inf
        for _ in range(1000):  # a batch larger than flush_size takes several round trips
            replica.flush_due = -math.inf
            replica.retry_at = -math.inf
            await replica.service(raise_errors=True)
            if not (
                replica.batch
                or replica.pending
                or replica.released
                or replica.force
                or replica.unwritten()
            ):
                return

    async def _run_callback(self, name: str, thunk: Callable[[], Awaitable[Any]]) -> None:
        try:
            await thunk()
        except Exception:
            self._callback_failed(name)


@asynccontextmanager
async def running(*breakers: Breaker) -> AsyncGenerator[None, None]:
    """Run the runners of ``breakers`` for the duration of an ``async with`` block.

    ``async with running(a, b): ...`` starts one runner per breaker in a task group of its
    own and cancels them when the block exits.
    """
    for breaker in breakers:
        if not isinstance(breaker, Breaker):
            raise ConfigError("breakers", breaker, "must be anyio Breakers (they have runners)")
    async with anyio.create_task_group() as tg:
        for breaker in breakers:
            await tg.start(breaker.run)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()
