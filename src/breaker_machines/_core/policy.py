"""The breaker's configuration: trip rules, open duration, half-open limits.

A :class:`Policy` is validated once, on construction; every invalid value raises
:class:`~breaker_machines.ConfigError` naming the field and the value. It also precomputes
the few derived numbers ``step()`` needs (bucket widths, whether successes count at all) so
the transition function does no configuration arithmetic per event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["Policy"]

_MAX_BUCKETS = 1000
_DEFAULT_BUCKETS = 10
_DEFAULT_WINDOW_CALLS = 100
_SMALLEST_DURATION = math.nextafter(0.0, 1.0)
# Every count fits the storages' 32-bit integer columns and parameters.
_MAX_COUNT = 2**31 - 1
# Shared storages index time buckets as floor(epoch seconds / width) in a double: below a
# microsecond that index passes 2**53 and neighbouring buckets merge.
_SMALLEST_BUCKET = 1e-6


def _check_count(name: str, value: object, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer")
    if value < minimum:
        raise ConfigError(name, value, f"must be >= {minimum}")
    if value > _MAX_COUNT:
        raise ConfigError(name, value, f"must be <= {_MAX_COUNT:,}")


def _finite(value: int | float) -> bool:
    """A number that converts to a finite float (an int may be too large to)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_duration(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, value, "must be a number of seconds")
    if not _finite(value):
        raise ConfigError(name, value, "must be a finite number of seconds")
    if value <= 0:
        raise ConfigError(name, value, "must be > 0 seconds")


def _check_rate(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, value, "must be a number")
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ConfigError(name, value, "must be a rate in (0, 1]")


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return next(d for d in range(min(n, limit), 0, -1) if n % d == 0)


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything ``step()`` needs to know about how a breaker behaves.

    Trip rules (any combination; the circuit opens when any one of them fires):

    * ``consecutive_failures``: that many failures in a row.
    * ``failures`` within ``within`` seconds: a time-bucketed count of failures.
    * ``failure_rate``: the share of failures among the calls in the rate window, once it
      holds at least ``minimum_calls`` calls.
    * ``slow_call_rate`` with ``slow_call_duration``: the share of calls that took at least
      ``slow_call_duration`` seconds, under the same window and minimum.

    The rate window is either time based (``window`` seconds) or count based (the last
    ``window_calls`` calls; 100 when neither is given). Every window is a ring of
    ``buckets`` buckets (default 10): it holds the current, partial bucket and the previous
    full ones, so an outcome leaves the window a whole bucket at a time.

    Open duration: ``reset_after`` seconds, multiplied by ``backoff`` for each consecutive
    trip without a recovery in between, capped at ``max_reset_after`` (required when
    ``backoff > 1``), then spread by ``jitter`` (a fraction: the duration is multiplied by a
    factor drawn once, when the circuit opens, from ``[1 - jitter, 1 + jitter]``).

    Half-open: at most ``half_open_probes`` calls in flight; ``success_threshold``
    successes close the circuit; any failure (or, when a slow-call rule is set, a slow
    success) re-opens it. A probe that never reports loses its permit ``probe_lease``
    seconds after it was admitted.

    Limits: every count is at most 2,147,483,647 (the storages keep 32-bit counts), every
    duration is finite, and each bucket of a time window spans at least a microsecond.
    """

    consecutive_failures: int | None = None
    failures: int | None = None
    within: float | None = None
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    slow_call_duration: float | None = None
    minimum_calls: int = 10
    window: float | None = None
    window_calls: int | None = None
    buckets: int | None = None
    reset_after: float = 30.0
    backoff: float = 1.0
    max_reset_after: float | None = None
    jitter: float = 0.0
    half_open_probes: int = 1
    success_threshold: int = 1
    probe_lease: float = 60.0

    # Derived once, read by step() on every event.
    bucket_count: int = field(init=False, repr=False, compare=False)
    within_width: float = field(init=False, repr=False, compare=False)
    rate_width: float = field(init=False, repr=False, compare=False)
    rate_bucket_calls: int = field(init=False, repr=False, compare=False)
    counts_rates: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate_rules()
        self._validate_open_and_probes()
        self._derive()

    def _validate_rules(self) -> None:
        if self.consecutive_failures is not None:
            _check_count("consecutive_failures", self.consecutive_failures)
        if (self.failures is None) != (self.within is None):
            missing = "within" if self.within is None else "failures"
            raise ConfigError(missing, None, "failures and within must be given together")
        if self.failures is not None:
            _check_count("failures", self.failures)
            _check_duration("within", self.within)
        if self.failure_rate is not None:
            _check_rate("failure_rate", self.failure_rate)
        if (self.slow_call_rate is None) != (self.slow_call_duration is None):
            missing = "slow_call_duration" if self.slow_call_duration is None else "slow_call_rate"
            raise ConfigError(
                missing, None, "slow_call_rate and slow_call_duration must be given together"
            )
        if self.slow_call_rate is not None:
            _check_rate("slow_call_rate", self.slow_call_rate)
            _check_duration("slow_call_duration", self.slow_call_duration)
        _check_count("minimum_calls", self.minimum_calls)
        rates = self.failure_rate is not None or self.slow_call_rate is not None
        if self.window is not None and self.window_calls is not None:
            raise ConfigError(
                "window_calls", self.window_calls, "give window or window_calls, not both"
            )
        if self.window is not None:
            if not rates:
                raise ConfigError("window", self.window, "needs failure_rate or slow_call_rate")
            _check_duration("window", self.window)
        if self.window_calls is not None:
            if not rates:
                raise ConfigError(
                    "window_calls", self.window_calls, "needs failure_rate or slow_call_rate"
                )
            _check_count("window_calls", self.window_calls)
        if self.buckets is not None:
            _check_count("buckets", self.buckets)
            if self.buckets > _MAX_BUCKETS:
                raise ConfigError("buckets", self.buckets, f"must be <= {_MAX_BUCKETS}")
            if self.window_calls is not None and (
                self.buckets > self.window_calls or self.window_calls % self.buckets
            ):
                raise ConfigError(
                    "buckets",
                    self.buckets,
                    f"must divide window_calls={self.window_calls} (a bucket holds whole calls)",
                )

    def _validate_open_and_probes(self) -> None:
        _check_duration("reset_after", self.reset_after)
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, (int, float)):
            raise ConfigError("backoff", self.backoff, "must be a number")
        if not (_finite(self.backoff) and self.backoff >= 1.0):
            raise ConfigError("backoff", self.backoff, "must be a finite multiplier >= 1")
        if self.max_reset_after is not None:
            _check_duration("max_reset_after", self.max_reset_after)
            if self.max_reset_after < self.reset_after:
                raise ConfigError(
                    "max_reset_after",
                    self.max_reset_after,
                    f"must be >= reset_after={self.reset_after!r}",
                )
        elif self.backoff > 1.0:
            raise ConfigError(
                "max_reset_after",
                None,
                "is required when backoff > 1 (the open time must stay bounded)",
            )
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)):
            raise ConfigError("jitter", self.jitter, "must be a number")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError("jitter", self.jitter, "must be a fraction in [0, 1)")
        longest = self.reset_after if self.max_reset_after is None else self.max_reset_after
        if not math.isfinite(longest * (1.0 + self.jitter)):
            field_ = "reset_after" if self.max_reset_after is None else "max_reset_after"
            raise ConfigError(
                field_, longest, f"is too large: with jitter={self.jitter!r} it overflows"
            )
        _check_count("half_open_probes", self.half_open_probes)
        _check_count("success_threshold", self.success_threshold)
        _check_duration("probe_lease", self.probe_lease)

    def _derive(self) -> None:
        set_ = object.__setattr__
        rates = self.failure_rate is not None or self.slow_call_rate is not None
        window_calls = self.window_calls
        if rates and self.window is None and window_calls is None:
            window_calls = _DEFAULT_WINDOW_CALLS
        if self.buckets is not None:
            count = self.buckets
        elif window_calls is not None and self.window is None:
            count = _largest_divisor_at_most(window_calls, _DEFAULT_BUCKETS)
            if window_calls > _DEFAULT_BUCKETS and count < _DEFAULT_BUCKETS // 2:
                raise ConfigError(
                    "window_calls",
                    window_calls,
                    f"has no divisor between {_DEFAULT_BUCKETS // 2} and {_DEFAULT_BUCKETS} to "
                    "split it into buckets (the window would empty all at once): pass "
                    "buckets= (a divisor of window_calls) or choose a rounder window_calls",
                )
        else:
            count = _DEFAULT_BUCKETS
        set_(self, "bucket_count", count)
        set_(self, "within_width", (self.within / count) if self.within is not None else 0.0)
        set_(self, "rate_width", (self.window / count) if self.window is not None else 0.0)
        set_(self, "rate_bucket_calls", (window_calls // count) if window_calls is not None else 0)
        set_(self, "counts_rates", rates)
        if rates and window_calls is not None and self.minimum_calls > window_calls:
            raise ConfigError(
                "minimum_calls",
                self.minimum_calls,
                f"can never be reached: the window holds at most window_calls={window_calls} calls",
            )
        if self.within is not None and not self.within_width >= _SMALLEST_BUCKET:
            raise ConfigError(
                "within",
                self.within,
                f"is too small for {count} buckets: each must span at least a microsecond",
            )
        if self.window is not None and not self.rate_width >= _SMALLEST_BUCKET:
            raise ConfigError(
                "window",
                self.window,
                f"is too small for {count} buckets: each must span at least a microsecond",
            )

    def open_duration(self, trips: int, draw: float) -> float:
        """Seconds the circuit stays OPEN on its ``trips``-th consecutive trip.

        ``draw`` is a uniform random number in ``[0, 1]`` supplied by the caller (the core
        never draws one itself); it only matters when ``jitter`` is set. A ``trips`` below 1
        counts as the first trip (``reset_after``, never less).
        """
        duration = self.reset_after
        cap = self.max_reset_after  # set whenever backoff > 1 (checked on construction)
        if cap is not None and trips > 1:
            try:
                duration = min(cap, duration * self.backoff ** (trips - 1))
            except OverflowError:
                duration = cap
        if self.jitter:
            duration *= 1.0 + self.jitter * (2.0 * draw - 1.0)
        return max(duration, _SMALLEST_DURATION)  # a tiny reset_after never jitters to 0
