"""A frozen snapshot of a breaker's state and counters."""

from __future__ import annotations

from dataclasses import dataclass

from ._core.status import State

__all__ = ["BreakerStats"]


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """What ``breaker.stats()`` returns. Counters are totals since the breaker was built.

    Window figures (``window_*``, ``failures_in_window``) are the core's, as of the last
    event: they count only since the last transition. With a shared storage they are the
    fleet's as of the last flush plus what this process counted since (that part is also
    in ``unflushed``, on its way to the fleet).
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
    degraded: bool = False
    """Shared storage only: its last operation failed; decisions are local until it answers."""
    unflushed: int = 0
    """Shared storage only: outcomes counted here and not yet flushed."""
    stale: int = 0
    """Shared storage only: outcomes not flushed because their generation ended first."""
    dropped: int = 0
    """Shared storage only: outcomes not delivered because storage was down too long: the
    batch was full (its oldest tenth goes), or they were counted longer ago than the
    policy's longest time window."""
    delivered: int = 0
    """Shared storage only: outcomes the storage acknowledged. Every outcome counted for
    the fleet ends in exactly one of ``delivered``, ``dropped``, ``stale`` or ``unflushed``."""
    corrupt_records: int = 0
    """Shared storage only: stored records that failed validation; each was reported
    (logged as an error) and replaced by this breaker's state, never trusted."""
    storage_errors: int = 0
    """Shared storage only: failed storage operations of this breaker."""
