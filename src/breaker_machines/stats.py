"""A frozen snapshot of a breaker's state and counters."""

from __future__ import annotations

from dataclasses import dataclass

from ._core.status import State

__all__ = ["BreakerStats"]


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """What ``breaker.stats()`` returns. Counters are totals since the breaker was built.

    Window figures (``window_*``, ``failures_in_window``) are the core's, as of the last
    event: they count only since the last transition.
    """

    name: str
    state: State
    version: int
    successes: int
    failures: int
    timeouts: int
    ignored: int
    cancelled: int
    rejections: int
    bulkhead_rejections: int
    consecutive_failures: int
    failures_in_window: int
    window_calls: int
    window_failures: int
    window_slow: int
    trips: int
    probes_in_flight: int
    retry_after: float | None
    callback_errors: int
    callbacks_dropped: int
