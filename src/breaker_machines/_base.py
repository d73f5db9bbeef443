"""What every runtime shares: configuration, classification, applying steps, callbacks.

A runtime (the anyio :class:`~breaker_machines.Breaker`, the
:class:`~breaker_machines.ThreadedBreaker`) owns one of these. It feeds events to the pure
``step()``, installs the state it returns, performs the effects and calls the callbacks.
Nothing here awaits, and nothing here is held across the user's code.
"""

from __future__ import annotations

import inspect
import logging
import math
import random as _random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from ._core.errors import ConfigError
from ._core.policy import Policy
from ._core.records import (
    Admitted,
    BreakerState,
    CallFinished,
    CallRequested,
    Disable,
    Enable,
    Event,
    ForceClose,
    ForceOpen,
    Persist,
    Rejected,
    Reset,
    Step,
    Tick,
    Transitioned,
    WakeAt,
)
from ._core.shortcuts import add_failures, failures_until_trip, inert_success
from ._core.status import Outcome, State
from ._core.transitions import step
from ._core.window import totals_at
from .callbacks import (
    CallObserver,
    Rejection,
    StorageEvent,
    Transition,
    _Handler,
    accepts,
    check_function,
    handlers,
    logger,
    refuse_non_functions,
    with_observer,
    without_observer,
)
from .errors import CircuitOpenError
from .introspection import (
    LoggedEvent,
    RawFailure,
    Report,
    has_plain_str,
    logged_event,
    refused_entry,
    report,
    same_args,
    text_of,
    timeout_entry,
)
from .stats import BreakerStats
from .storage.memory import MemoryStorage
from .storage.shared import SharedStorage

if TYPE_CHECKING:
    from ._replica import Replica

__all__ = ["NO_FALLBACK", "BreakerBase", "DegradedMode", "ExceptionRule"]

_DEBUG: Final = logging.DEBUG


class _Switch:
    """``_LOG.debug``: may DEBUG records of the logger be emitted? False only once the
    logger said no, and until its levels change. Rejections can come at the rate of the
    calls: with DEBUG off, the guards pay one attribute read for logging them."""

    __slots__ = ("debug",)

    def __init__(self) -> None:
        self.debug = True


_LOG: Final = _Switch()
_LOG_LOCK: Final = threading.Lock()


class _LevelCache(dict[int, bool]):
    """The logger's own cache of ``isEnabledFor()`` answers (``logger._cache``), which the
    logging module clears in place on every level change (``setLevel()`` of any logger,
    ``logging.disable()``): clearing it turns ``_LOG.debug`` back on."""

    __slots__ = ()

    def clear(self) -> None:
        with _LOG_LOCK:
            super().clear()
            _LOG.debug = True


def _hook_level_cache() -> _LevelCache | None:
    """Put a _LevelCache in place of the logger's cache; None if it has no such cache (then
    ``_LOG.debug`` stays on and every rejection asks the logger)."""
    cache: object = getattr(logger, "_cache", None)
    if type(cache) is not dict:
        return None
    hooked = _LevelCache(cast("dict[int, bool]", cache))
    setattr(logger, "_cache", hooked)  # noqa: B010 - not a declared attribute of Logger
    return hooked


_LEVEL_CACHE: Final = _hook_level_cache()
_OBSERVERS_LOCK: Final = threading.Lock()

NO_FALLBACK: Final[Any] = object()
_DEFAULT_CONSECUTIVE_FAILURES: Final = 5
DegradedMode = Literal["local", "reject", "admit"]
"""How a breaker on shared storage admits calls while that storage is unreachable:
``"local"`` decides from its local replica (the default), ``"reject"`` rejects every call
(fail closed), ``"admit"`` admits every call (fail open)."""
_DEGRADED_MODES: Final = ("local", "reject", "admit")
_MAX_PENDING_CALLBACKS: Final = 1000
_MAX_REMEMBERED_TYPES: Final = 64

ExceptionRule = type[BaseException] | Callable[[BaseException], bool]
"""An exception type, or a predicate on the exception."""

_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
_TIMEOUT: Final = Outcome.TIMEOUT
_CANCELLED: Final = Outcome.CANCELLED
_IGNORED: Final = Outcome.IGNORED


def _rules(field: str, value: object) -> tuple[tuple[type[BaseException], ...], tuple[Any, ...]]:
    """Split ``record=``/``ignore=`` into exception types and predicates."""
    items: list[object] = (
        list(value)  # pyright: ignore[reportUnknownArgumentType]
        if isinstance(value, (list, tuple, set, frozenset))
        else [value]
    )
    types: list[type[BaseException]] = []
    predicates: list[Any] = []
    for entry in items:
        item: Any = entry
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                raise ConfigError(field, entry, "is a class but not an exception class")
            if field == "record" and not (
                issubclass(item, Exception) or issubclass(Exception, item)
            ):
                raise ConfigError(
                    field,
                    item,
                    "is never recorded: an exception that is not an Exception (a "
                    "cancellation, KeyboardInterrupt, SystemExit) always counts as cancelled",
                )
            types.append(item)
        elif callable(item):  # pyright: ignore[reportUnknownArgumentType]
            check_function(field, item, arguments=1, what="a predicate on the exception")
            predicates.append(item)
        else:
            refuse_non_functions(field, item)
            raise ConfigError(
                field, item, "must be an exception type, a predicate, or a list of them"
            )
    return tuple(types), tuple(predicates)


def _finite(value: float) -> bool:
    """A number that converts to a finite float (an int may be too large to)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _seconds(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number of seconds")
    if not (_finite(value) and value > 0.0):
        raise ConfigError(field, value, "must be a finite number of seconds > 0")
    return float(value)


# Policy fields with a default other than None: given beside policy=, they would be ignored.
_POLICY_DEFAULTS: Final[dict[str, object]] = {
    "minimum_calls": 10,
    "reset_after": 30.0,
    "backoff": 1.0,
    "jitter": 0.0,
    "half_open_probes": 1,
    "success_threshold": 1,
}


class BreakerBase:
    """Shared machinery of every runtime. Not public: use ``Breaker`` or ``ThreadedBreaker``."""

    __slots__ = (
        "__weakref__",
        "_bulkhead_rejections",
        "_bulkhead_wait",
        "_callback_errors",
        "_callbacks_dropped",
        "_cancelled",
        "_classify_predicates",
        "_clock",
        "_degraded_mode",
        "_events",
        "_failure_if",
        "_failures",
        "_fallbacks",
        "_free",
        "_gate",
        "_ignore_predicates",
        "_ignore_types",
        "_ignored",
        "_ignored_counts_as_success",
        "_inert",
        "_jitter",
        "_last_raw",
        "_max_concurrent",
        "_observers",
        "_on_close",
        "_on_degraded",
        "_on_half_open",
        "_on_open",
        "_on_reject",
        "_on_resynced",
        "_on_transition",
        "_outcomes_by_type",
        "_override",
        "_pending",
        "_quiet",
        "_random",
        "_record_predicates",
        "_record_types",
        "_rejections",
        "_replica",
        "_room",
        "_room_full",
        "_state",
        "_storage",
        "_successes",
        "_tally",
        "_tally_cap",
        "_tally_gen",
        "_timed",
        "_timeout",
        "_timeouts",
        "_transition_hooks",
        "_version",
        "_wake_at",
        "name",
        "policy",
    )

    def __init__(
        self,
        name: str,
        *,
        failures: int | None = None,
        within: float | None = None,
        consecutive_failures: int | None = None,
        failure_rate: float | None = None,
        slow_call_rate: float | None = None,
        slow_call_duration: float | None = None,
        minimum_calls: int = 10,
        window: float | None = None,
        window_calls: int | None = None,
        buckets: int | None = None,
        reset_after: float = 30.0,
        backoff: float = 1.0,
        max_reset_after: float | None = None,
        jitter: float = 0.0,
        half_open_probes: int = 1,
        success_threshold: int = 1,
        probe_lease: float | None = None,
        timeout: float | None = None,
        fallback: Any = NO_FALLBACK,
        record: ExceptionRule | Sequence[ExceptionRule] = Exception,
        ignore: ExceptionRule | Sequence[ExceptionRule] = (),
        ignored_counts_as_success: bool = False,
        failure_if: Callable[[Any], bool] | None = None,
        max_concurrent: int | None = None,
        bulkhead_wait: float = 0.0,
        storage: MemoryStorage | SharedStorage | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
        on_open: Any = None,
        on_close: Any = None,
        on_half_open: Any = None,
        on_reject: Any = None,
        on_transition: Any = None,
        degraded_mode: DegradedMode = "local",
        on_degraded: Any = None,
        on_resynced: Any = None,
        event_log: int = 50,
        policy: Policy | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise ConfigError("name", name, "must be a string")
        self.name: str = name
        self._timeout = _seconds("timeout", timeout)
        if policy is None:
            rules = (consecutive_failures, failures, within, failure_rate, slow_call_rate)
            if all(rule is None for rule in rules):
                consecutive_failures = _DEFAULT_CONSECUTIVE_FAILURES
            if probe_lease is None:
                probe_lease = max(2.0 * self._timeout, 1.0) if self._timeout else 60.0
            policy = Policy(
                consecutive_failures=consecutive_failures,
                failures=failures,
                within=within,
                failure_rate=failure_rate,
                slow_call_rate=slow_call_rate,
                slow_call_duration=slow_call_duration,
                minimum_calls=minimum_calls,
                window=window,
                window_calls=window_calls,
                buckets=buckets,
                reset_after=reset_after,
                backoff=backoff,
                max_reset_after=max_reset_after,
                jitter=jitter,
                half_open_probes=half_open_probes,
                success_threshold=success_threshold,
                probe_lease=probe_lease,
            )
        elif not isinstance(policy, Policy):
            raise ConfigError("policy", policy, "must be a breaker_machines.Policy")
        else:
            given = {
                "consecutive_failures": consecutive_failures,
                "failures": failures,
                "within": within,
                "failure_rate": failure_rate,
                "slow_call_rate": slow_call_rate,
                "slow_call_duration": slow_call_duration,
                "window": window,
                "window_calls": window_calls,
                "buckets": buckets,
                "max_reset_after": max_reset_after,
                "probe_lease": probe_lease,
            }
            for field, value in given.items():
                if value is not None:
                    raise ConfigError(field, value, "give it in the Policy, not beside policy=")
            beside = {
                "minimum_calls": minimum_calls,
                "reset_after": reset_after,
                "backoff": backoff,
                "jitter": jitter,
                "half_open_probes": half_open_probes,
                "success_threshold": success_threshold,
            }
            for field, value in beside.items():
                default = _POLICY_DEFAULTS[field]
                if type(value) is not type(default) or value != default:
                    raise ConfigError(field, value, "give it in the Policy, not beside policy=")
        self.policy: Policy = policy
        self._jitter = policy.jitter > 0.0
        self._observers: tuple[CallObserver, ...] = ()
        self._timed = policy.slow_call_duration is not None

        self._record_types, self._record_predicates = _rules("record", record)
        self._ignore_types, self._ignore_predicates = _rules("ignore", ignore)
        self._classify_predicates = bool(self._record_predicates or self._ignore_predicates)
        # With type rules only, an exception's class decides its outcome: remember it.
        self._outcomes_by_type: dict[type[BaseException], Outcome] = {}
        if not isinstance(ignored_counts_as_success, bool):
            raise ConfigError(
                "ignored_counts_as_success", ignored_counts_as_success, "must be True or False"
            )
        self._ignored_counts_as_success = ignored_counts_as_success
        if failure_if is not None:
            check_function("failure_if", failure_if, arguments=1, what="a predicate on the result")
        self._failure_if = failure_if
        chain: tuple[Any, ...]
        if isinstance(fallback, list):
            chain = tuple(cast(list[Any], fallback))  # type: ignore[redundant-cast]
            if not chain:
                raise ConfigError(
                    "fallback", cast(object, fallback), "an empty list of fallbacks answers nothing"
                )
        else:
            chain = () if fallback is NO_FALLBACK else (fallback,)
        for candidate in chain:
            refuse_non_functions("fallback", candidate)
            if callable(candidate) and not accepts(candidate, 1):
                raise ConfigError(
                    "fallback", candidate, "must accept one argument (the error it answers)"
                )
        self._fallbacks: tuple[Any, ...] = chain

        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise ConfigError("max_concurrent", max_concurrent, "must be an integer >= 1")
        self._max_concurrent = max_concurrent
        if (
            isinstance(bulkhead_wait, bool)
            or not isinstance(bulkhead_wait, (int, float))
            or not (_finite(bulkhead_wait) and bulkhead_wait >= 0.0)
        ):
            raise ConfigError("bulkhead_wait", bulkhead_wait, "must be a finite number >= 0")
        if bulkhead_wait > 0.0 and max_concurrent is None:
            raise ConfigError(
                "bulkhead_wait", bulkhead_wait, "needs max_concurrent (there is no bulkhead)"
            )
        self._bulkhead_wait = float(bulkhead_wait)

        if storage is None:
            storage = MemoryStorage()
        elif not isinstance(storage, (MemoryStorage, SharedStorage)):
            raise ConfigError("storage", storage, "must be a breaker_machines storage")
        self._storage = storage
        self._replica: Replica | None = None
        # Shared storage: the batch guards may append a quiet success to directly, for
        # generation _tally_gen, while it holds between 1 and _tally_cap outcomes.
        self._tally: list[str] | None = None
        self._tally_gen = 0
        self._tally_cap = 0
        if clock is not None:
            check_function("clock", clock, arguments=0, what="a callable returning seconds")
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        if random is not None:
            check_function(
                "random", random, arguments=0, what="a callable returning a float in [0, 1)"
            )
        self._random: Callable[[], float] = random if random is not None else _random.random

        self._on_open = handlers("on_open", on_open)
        self._on_close = handlers("on_close", on_close)
        self._on_half_open = handlers("on_half_open", on_half_open)
        self._on_reject = handlers("on_reject", on_reject)
        self._on_transition = handlers("on_transition", on_transition)
        self._on_degraded = handlers("on_degraded", on_degraded)
        self._on_resynced = handlers("on_resynced", on_resynced)
        if degraded_mode not in _DEGRADED_MODES:
            raise ConfigError(
                "degraded_mode", degraded_mode, "must be 'local', 'reject' or 'admit'"
            )
        if degraded_mode != "local" and not isinstance(storage, SharedStorage):
            raise ConfigError(
                "degraded_mode",
                degraded_mode,
                "applies only with a shared storage (Redis, PostgreSQL): memory is never down",
            )
        self._degraded_mode: DegradedMode = degraded_mode
        # While shared storage is down with degraded_mode 'reject' or 'admit': that mode
        # decides every admission (None: the circuit decides).
        self._override: DegradedMode | None = None
        self._pending: deque[tuple[str, Callable[[], Awaitable[Any]]]] = deque()

        if isinstance(event_log, bool) or not isinstance(event_log, int) or event_log < 0:
            raise ConfigError("event_log", event_log, "must be an integer >= 0 (0: no log)")
        self._events: deque[LoggedEvent | RawFailure] | None = (
            deque(maxlen=event_log) if event_log else None
        )
        # The newest entry of the log when it is a raw failure (a repeat only counts).
        self._last_raw: RawFailure | None = None
        # Coordinated recovery (BreakerGroup): whether a dependency holds this circuit, and
        # the hooks the group runs on each of its transitions.
        self._gate: Callable[[], bool] | None = None
        self._transition_hooks: tuple[Callable[[Transition], None], ...] = ()

        self._successes = self._failures = self._timeouts = 0
        self._ignored = self._cancelled = 0
        self._rejections = self._bulkhead_rejections = 0
        self._callback_errors = self._callbacks_dropped = 0
        self._setup()
        if isinstance(storage, SharedStorage):
            from ._replica import Replica

            self._replica = Replica(self, storage)
            self._install(BreakerState())  # the runner adopts the stored state on start
        else:
            self._install(storage.get(name) or BreakerState())

    def _setup(self) -> None:
        """Runtime-specific set-up, called at the end of ``__init__``."""

    # ------------------------------------------------------------------ state

    def _install(self, state: BreakerState) -> None:
        self._state = state
        self._version = state.version
        status = state.status
        self._free = (status is State.CLOSED or status is State.DISABLED) and not self._override
        quiet = inert_success(self.policy, state)
        self._quiet = quiet
        # With shared storage every outcome goes into the batch: no guard shortcut.
        shared = self._replica is not None
        self._inert = quiet and not shared
        # Failures the runtime may count without the core before the one that trips
        # (core.failures_until_trip): _room_full - _room of them are pending.
        self._room_full = 0 if shared else max(failures_until_trip(self.policy, state) - 1, 0)
        self._room = self._room_full
        # The only timed work is OPEN -> HALF_OPEN, due at retry_at: derive the wake-up from
        # the state itself so it survives restores, manual controls and re-trips.
        self._wake_at = state.retry_at if status is State.OPEN else None

    def _step(self, event: Event) -> tuple[Step, list[Transition]]:
        """Run ``step()`` and apply its state and effects; return transitions to announce.

        Runtimes that share a breaker between threads wrap this in their lock; callbacks
        are fired by the caller afterwards, outside any lock.
        """
        if self._room != self._room_full:
            self._fold()
        result = step(self.policy, self._state, event)
        new = result.state
        if new is self._state:
            if not result.effects:
                return result, []
        else:
            self._install(new)
        announced: list[Transition] = []
        replica = self._replica
        for effect in result.effects:
            kind = type(effect)
            if kind is Transitioned:
                assert isinstance(effect, Transitioned)
                transition = Transition(
                    self.name,
                    effect.source,
                    effect.target,
                    effect.reason,
                    effect.version,
                    event.now,
                    True,
                )
                if replica is None:
                    announced.append(transition)
                else:  # announced once written: this process may lose the race
                    replica.decided(transition)
            elif kind is Persist:
                if replica is None:
                    storage = self._storage
                    assert isinstance(storage, MemoryStorage)
                    storage.put(self.name, new)
            elif kind is WakeAt:
                self._wake_runner()  # _install() already derived the wake-up time
        return result, announced

    def _fold(self) -> None:
        """Fold the failures counted without the core into its state (see ``_count``)."""
        pending = self._room_full - self._room
        if pending:
            state = add_failures(self._state, pending)
            self._install(state)  # resets the pending count

    # ------------------------------------------------------------------ calls

    def _admit(self, now: float) -> Admitted:
        """The slow admission path: ask the core. Raises CircuitOpenError on rejection."""
        decision, announced = self._decide(now)
        if announced:
            self._announce(announced)
        if type(decision) is Rejected:
            assert isinstance(decision, Rejected)
            status = self._state.status
            if _LOG.debug:
                if status is State.FORCED_OPEN:
                    reason = "forced_open"
                elif decision.retry_after is None:
                    reason = "dependency"  # held by a breaker it depends on
                else:
                    reason = "open"
                self._log_rejection(reason, status, decision.retry_after)
            if self._on_reject:
                self._fire(self._on_reject, Rejection(self.name, status, decision.retry_after))
            raise CircuitOpenError(self.name, decision.retry_after, status)
        assert isinstance(decision, Admitted)
        return decision

    def _decide(self, now: float) -> tuple[Admitted | Rejected, list[Transition]]:
        """Step a CallRequested; count a rejection. (Threaded runtimes lock around it.)"""
        gate = self._gate
        held = gate is not None and self._state.status is not State.CLOSED and gate()
        result, announced = self._step(CallRequested(now, held))
        decision = result.effects[-1]
        if type(decision) is Rejected:
            self._rejections += 1
        assert isinstance(decision, (Admitted, Rejected))
        return decision, announced

    def _classify(self, error: BaseException) -> Outcome:
        """Failure, ignored (or success) or cancelled, for an exception out of the call."""
        if not isinstance(error, Exception):
            return _CANCELLED  # cancellation from outside, KeyboardInterrupt, SystemExit...
        if not self._classify_predicates:  # types only: the class decides
            if isinstance(error, self._ignore_types):
                outcome = _SUCCESS if self._ignored_counts_as_success else _IGNORED
            elif isinstance(error, self._record_types):
                outcome = _FAILURE
            else:
                outcome = _SUCCESS if self._ignored_counts_as_success else _IGNORED
            if len(self._outcomes_by_type) < _MAX_REMEMBERED_TYPES:
                self._outcomes_by_type[error.__class__] = outcome
            return outcome
        if isinstance(error, self._ignore_types) or self._matches(self._ignore_predicates, error):
            return _SUCCESS if self._ignored_counts_as_success else _IGNORED
        if isinstance(error, self._record_types) or self._matches(self._record_predicates, error):
            return _FAILURE
        return _SUCCESS if self._ignored_counts_as_success else _IGNORED

    def _matches(self, predicates: tuple[Any, ...], error: BaseException) -> bool:
        for predicate in predicates:
            try:
                if predicate(error):
                    return True
            except Exception:
                logger.exception(
                    "breaker %r: exception predicate %r raised; treated as no match",
                    self.name,
                    predicate,
                    extra={"breaker": self.name},
                )
        return False

    def _record(
        self, outcome: Outcome, duration: float, generation: int, probe: int | None
    ) -> None:
        """Count an outcome, feed it to the core, announce any transition."""
        announced = self._count(outcome, duration, generation, probe)
        if announced:
            self._announce(announced)

    def _count(
        self, outcome: Outcome, duration: float, generation: int, probe: int | None
    ) -> list[Transition] | None:
        """Count an outcome and step it unless it provably changes nothing.

        (Threaded runtimes lock around it.)
        """
        replica = self._replica
        if replica is not None:
            replica.note(outcome, duration, generation, probe)
        if outcome is _SUCCESS:
            self._successes += 1
            if self._quiet and probe is None:
                self._room = self._room_full  # a success breaks the run
                return None
        else:
            if outcome is _FAILURE:
                self._failures += 1
            elif outcome is _TIMEOUT:
                self._timeouts += 1
            if outcome is _FAILURE or outcome is _TIMEOUT:
                # A run of failures that cannot trip yet only raises the core's
                # consecutive count (core.failures_until_trip): count it here, fold it in
                # before the next step(), and step the failure that trips.
                if self._room and generation == self._version:
                    self._room -= 1
                    return None
            elif outcome is _CANCELLED:
                self._cancelled += 1
                if probe is None:
                    return None
            else:
                self._ignored += 1
                if probe is None:
                    return None
        draw = self._random() if self._jitter else 0.5
        gate = self._gate
        held = probe is not None and gate is not None and gate()
        event = CallFinished(outcome, self._clock(), duration, generation, probe, draw, held)
        return self._step(event)[1]

    def _give_back(self, generation: int, probe: int) -> None:
        """Release a probe permit of a call that never ran (no outcome is counted)."""
        event = CallFinished(_CANCELLED, self._clock(), 0.0, generation, probe, 0.5)
        announced = self._step(event)[1]
        if announced:
            self._announce(announced)

    def _refuses(self, result: object) -> bool:
        assert self._failure_if is not None
        try:
            return bool(self._failure_if(result))
        except Exception:
            logger.exception(
                "breaker %r: failure_if raised; the result counts as a success",
                self.name,
                extra={"breaker": self.name},
            )
            return False

    # ------------------------------------------------------------------ callbacks

    def _announce(self, transitions: list[Transition]) -> None:
        events = self._events
        for transition in transitions:
            target = transition.target
            if events is not None:
                detail = f"{transition.source.value} -> {target.value} ({transition.reason.value})"
                events.append(LoggedEvent(transition.at, "transition", target, detail))
                self._last_raw = None
            for hook in self._transition_hooks:
                try:
                    hook(transition)
                except Exception:
                    self._callback_failed("transition_hook")
            if target is State.OPEN or target is State.FORCED_OPEN:
                chosen = self._on_open
            elif target is State.CLOSED:
                chosen = self._on_close
            elif target is State.HALF_OPEN:
                chosen = self._on_half_open
            else:
                chosen = ()
            self._log_transition(transition)
            if chosen:
                self._fire(chosen, transition)
            if self._on_transition:
                self._fire(self._on_transition, transition)

    def _log_transition(self, transition: Transition) -> None:
        logger.info(
            "breaker %r: %s -> %s (%s)",
            self.name,
            transition.source.value,
            transition.target.value,
            transition.reason.value,
            extra={
                "breaker": self.name,
                "source": transition.source.value,
                "target": transition.target.value,
                "reason": transition.reason.value,
                "version": transition.version,
                "won": transition.won,
            },
        )

    def _log_rejection(self, reason: str, state: State, retry_after: float | None) -> None:
        """Log a rejected call at DEBUG (``reason``: see docs/observability.md).

        Callers check ``_LOG.debug`` first; this turns it off while DEBUG is disabled.
        """
        if not logger.isEnabledFor(_DEBUG):
            cache = _LEVEL_CACHE
            current: object = getattr(logger, "_cache", None)
            if cache is not None and current is cache:
                with _LOG_LOCK:  # a level change clearing the cache now turns it back on
                    if cache.get(_DEBUG) is False:
                        _LOG.debug = False
            return
        logger.debug(
            "breaker %r: call rejected (%s) while %s; retry after %s",
            self.name,
            reason,
            state.value,
            "n/a" if retry_after is None else f"{retry_after:.3f}s",
            extra={
                "breaker": self.name,
                "state": state.value,
                "retry_after": retry_after,
                "reason": reason,
            },
        )

    def _finish(self, outcome: Outcome, start: float, generation: int, probe: int | None) -> None:
        """Report a guarded call that started at ``start``: timed if the policy or an
        observer needs its duration, then observed."""
        if self._timed:
            duration = self._clock() - start
            self._record(outcome, duration, generation, probe)
            if self._observers:
                self._observe(outcome, duration)
        else:
            self._record(outcome, 0.0, generation, probe)

    def _observe(self, outcome: Outcome, duration: float) -> None:
        """Tell the call observers how a call ended; never raise into the caller."""
        for observer in self._observers:
            try:
                observer(outcome, duration)
            except Exception:
                self._callback_failed("call_observer")

    def _fire(self, chosen: tuple[_Handler, ...], payload: object) -> None:
        """Call sync callbacks now and queue async ones; never raise into the caller."""
        for handler in chosen:
            if handler.is_async:
                self._defer(handler, payload)
                continue
            try:
                result = handler.fn(payload) if handler.wants_arg else handler.fn()
            except Exception:
                self._callback_failed(handler.name)
                continue
            if inspect.isawaitable(result):
                awaitable: Awaitable[Any] = result

                def thunk(awaitable: Awaitable[Any] = awaitable) -> Awaitable[Any]:
                    return awaitable

                self._queue(handler.name, thunk, awaitable)

    def _defer(self, handler: _Handler, payload: object) -> None:
        fn = handler.fn

        def thunk() -> Awaitable[Any]:
            return fn(payload) if handler.wants_arg else fn()  # type: ignore[no-any-return]

        self._queue(handler.name, thunk, None)

    def _queue(
        self, name: str, thunk: Callable[[], Awaitable[Any]], created: Awaitable[Any] | None
    ) -> None:
        if len(self._pending) >= _MAX_PENDING_CALLBACKS:
            self._callbacks_dropped += 1
            if created is not None and inspect.iscoroutine(created):
                created.close()
            logger.warning(
                "breaker %r: %d async callbacks are waiting for a runner; dropped %s",
                self.name,
                len(self._pending),
                name,
                extra={"breaker": self.name, "callback": name},
            )
            return
        self._pending.append((name, thunk))
        self._wake_runner()

    def _wake_runner(self) -> None:
        """Runtimes with a runner override this to wake it up."""

    def _storage_changed(self, event: StorageEvent) -> None:
        """The replica's storage failed or answered again: switch the override, tell."""
        if self._degraded_mode != "local":
            if self._room != self._room_full:
                self._fold()
            self._override = self._degraded_mode if event.degraded else None
            self._install(self._state)  # re-derives the admission shortcut
        chosen = self._on_degraded if event.degraded else self._on_resynced
        if chosen:
            self._fire(chosen, event)

    def _callback_failed(self, name: str) -> None:
        self._callback_errors += 1
        logger.exception(
            "breaker %r: callback %s raised; the call was not affected",
            self.name,
            name,
            extra={"breaker": self.name, "callback": name},
        )

    # ------------------------------------------------------------------ public

    def add_call_observer(self, observer: CallObserver) -> None:
        """Call ``observer(outcome, duration)`` after every guarded call from now on.

        ``outcome`` is the call's :class:`~breaker_machines.Outcome` and ``duration`` the
        seconds it took by the breaker's clock (from admission, or from getting a bulkhead
        slot, to the end). It is called synchronously, in the caller's thread or task, right
        after the outcome is counted: keep it quick and non-blocking. An exception from it
        is logged and counted in ``stats().callback_errors``, never raised into the caller.
        Rejected calls are not observed (see ``stats()`` and the DEBUG log for those).

        Observing costs a clock read and a call per guarded call; a breaker with no observer
        pays nothing. A call already running when the first observer is added may not be
        observed. An observer (compared with ``==``, so a bound method works) is added once.
        """
        check_function("observer", observer, arguments=2, what="a function of (outcome, duration)")
        with _OBSERVERS_LOCK:
            self._observers = with_observer(self._observers, observer, "breaker")
            self._retime()

    def remove_call_observer(self, observer: CallObserver) -> None:
        """Stop calling ``observer`` (added by :meth:`add_call_observer`)."""
        with _OBSERVERS_LOCK:
            self._observers = without_observer(self._observers, observer, "breaker")
            self._retime()

    def _outcome_counts(self) -> tuple[tuple[Outcome, int], ...]:
        """The outcome totals, as ``stats()`` has them, read without folding pending
        failures into the state: safe from any thread (a metrics exporter's)."""
        return (
            (_SUCCESS, self._successes),
            (_FAILURE, self._failures),
            (_TIMEOUT, self._timeouts),
            (_IGNORED, self._ignored),
            (_CANCELLED, self._cancelled),
        )

    def _retime(self) -> None:
        """Derive whether calls are timed (runtimes extend it to re-derive their fast path)."""
        self._timed = self.policy.slow_call_duration is not None or bool(self._observers)

    @property
    def state(self) -> State:
        """The circuit's state as last decided (an OPEN circuit half-opens on the next
        call or runner tick after ``retry_at``)."""
        return self._state.status

    @property
    def snapshot(self) -> BreakerState:
        """The core's full state record (immutable; safe to keep or serialise)."""
        if self._room != self._room_full:
            self._fold()
        return self._state

    def stats(self) -> BreakerStats:
        """A frozen snapshot of the state and counters."""
        state = self.snapshot
        policy = self.policy
        now = self._clock()
        in_window = 0
        if policy.failures is not None and policy.within_width:
            index = int(now // policy.within_width)
            in_window = totals_at(state.failure_window, policy.bucket_count, index)[1]
        rate_window = state.rate_window
        if policy.window is not None and policy.rate_width:
            index = int(now // policy.rate_width)
            calls, failed, slow = totals_at(rate_window, policy.bucket_count, index)
        else:
            calls, failed, slow = rate_window.calls, rate_window.failures, rate_window.slow
        retry_after = None
        if state.retry_at is not None:
            retry_after = max(0.0, state.retry_at - now)
        return BreakerStats(
            name=self.name,
            state=state.status,
            version=state.version,
            successes=self._successes,
            failures=self._failures,
            timeouts=self._timeouts,
            ignored=self._ignored,
            cancelled=self._cancelled,
            rejections=self._rejections,
            bulkhead_rejections=self._bulkhead_rejections,
            consecutive_failures=state.consecutive_failures,
            failures_in_window=in_window,
            window_calls=calls,
            window_failures=failed,
            window_slow=slow,
            trips=state.trips,
            probes_in_flight=len(state.probes),
            retry_after=retry_after,
            callback_errors=self._callback_errors,
            callbacks_dropped=self._callbacks_dropped,
            **self._shared_stats(),
        )

    def _shared_stats(self) -> dict[str, Any]:
        replica = self._replica
        if replica is None:
            return {}
        return {
            "degraded": replica.degraded,
            "unflushed": len(replica.batch) + (len(replica.pending[1]) if replica.pending else 0),
            "stale": replica.stale,
            "dropped": replica.dropped,
            "delivered": replica.delivered,
            "corrupt_records": replica.corrupt,
            "storage_errors": replica.errors,
        }

    def _control(self, event: Event) -> None:
        announced = self._step_control(event)
        if announced:
            self._announce(announced)

    def _step_control(self, event: Event) -> list[Transition]:
        """Step an operator control or a tick. (Threaded runtimes lock around it.)"""
        return self._step(event)[1]

    def _operate(self, event: Event) -> None:
        """An operator's control: with shared storage it is written whatever is stored."""
        version = self._state.version
        self._control(event)
        replica = self._replica
        if replica is not None and self._state.version != version:
            replica.force = True
            replica.controls += 1

    def force_open(self) -> None:
        """Hold the circuit open (rejecting every call) until ``force_close()``/``reset()``."""
        self._operate(ForceOpen(self._clock()))

    def force_close(self) -> None:
        """Close the circuit now, with fresh windows (a no-op when it is CLOSED)."""
        self._operate(ForceClose(self._clock()))

    def reset(self) -> None:
        """Back to a fresh CLOSED circuit: windows, counters and backoff cleared."""
        self._operate(Reset(self._clock()))

    def disable(self) -> None:
        """Admit every call and count nothing until ``enable()``."""
        self._operate(Disable(self._clock()))

    def enable(self) -> None:
        """Leave DISABLED for a fresh CLOSED circuit (a no-op in any other state)."""
        self._operate(Enable(self._clock()))

    def _tick(self) -> None:
        """Send the core a Tick if one is due (OPEN -> HALF_OPEN on time)."""
        wake_at = self._wake_at
        if wake_at is None:
            return
        now = self._clock()
        if now < wake_at:
            return
        self._wake_at = None
        gate = self._gate
        held = gate is not None and gate()
        self._control(Tick(now, held))
        state = self._state
        if state.status is State.OPEN and self._wake_at is None and not held:
            self._wake_at = state.retry_at
        # Held: no wake-up until a dependency's transition re-arms it (_rearm).

    def _rearm(self) -> None:
        """A dependency moved: wake up again for a due OPEN -> HALF_OPEN (see _tick)."""
        state = self._state
        if state.status is State.OPEN and self._wake_at is None:
            self._wake_at = state.retry_at
            self._wake_runner()

    def _log_failure(self, outcome: Outcome, error: BaseException | None) -> None:
        """Add a recorded failure or timeout to the event log (if the breaker keeps one).

        A failure repeating the newest entry (same class, equal args) only bumps its count;
        Guard.__exit__ inlines that check on the counted-failure path.
        """
        events = self._events
        if events is None:
            return
        if error is not None and outcome is _FAILURE:
            kind = error.__class__
            args = error.args
            raw = self._last_raw
            if raw is not None and raw[2] is kind and same_args(raw[3], args):
                raw[4] += 1
                return
            # The text of an exception whose str() is BaseException's is made when the log
            # is read; any other is made now (its str() may read more than its args).
            text = None if has_plain_str(kind) else text_of(error)
            raw = [self._clock(), self._state.status, kind, args, 1, text]
            events.append(raw)
            self._last_raw = raw
            return
        self._last_raw = None
        if outcome is _TIMEOUT:
            assert self._timeout is not None
            events.append(timeout_entry(self._clock(), self._state.status, self._timeout))
        else:
            events.append(refused_entry(self._clock(), self._state.status))

    def event_log(self) -> tuple[LoggedEvent, ...]:
        """The most recent transitions and failures, oldest first (at most ``event_log``
        entries; see :class:`~breaker_machines.LoggedEvent`)."""
        events = self._events
        if events is None:
            return ()
        while True:
            try:
                items = tuple(events)
            except RuntimeError:  # another thread appended while copying: copy again
                continue
            return tuple(map(logged_event, items))

    def report(self) -> Report:
        """This breaker's :class:`~breaker_machines.Report` (its stats and event log)."""
        return report([self], events=len(self.event_log()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state.status.value}>"


#: What a template may set (a registry's, a group's): every keyword of a breaker but its name.
TEMPLATE_OPTIONS: Final = frozenset(inspect.signature(BreakerBase.__init__).parameters) - {
    "self",
    "name",
}


def check_template_options(options: dict[str, Any], *, name_is: str) -> None:
    """Refuse an option a breaker does not take (``name_is``: where names come from)."""
    for option, value in options.items():
        if option not in TEMPLATE_OPTIONS:
            reason = (
                name_is if option == "name" else "is not an option of Breaker (check its spelling)"
            )
            raise ConfigError(option, value, reason)
