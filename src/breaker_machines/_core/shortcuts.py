"""Pure shortcuts for the runtimes' hot paths, each exactly equal to a case of ``step()``.

A runtime may call one of these instead of building an event and calling ``step()``, when it
only needs the answer. Each is a few attribute reads; a property test holds each to
``step()`` over random policies, states and times.
"""

from __future__ import annotations

import math

from .policy import Policy
from .records import BreakerState
from .status import State

__all__ = ["add_failures", "failures_until_trip", "inert_success", "rejection_delay"]

_CLOSED = State.CLOSED
_OPEN = State.OPEN
_FORCED_OPEN = State.FORCED_OPEN
_DISABLED = State.DISABLED


def inert_success(policy: Policy, state: BreakerState) -> bool:
    """True when a fast success of the current generation would change nothing.

    That is exactly when ``step()`` on ``CallFinished(SUCCESS, ...)`` with a duration under
    any slow-call limit returns ``state`` unchanged and no effects: CLOSED or DISABLED, no
    rate rule to feed, and no run of failures to break. Runtimes use it to skip building an
    event on the hot path.
    """
    status = state.status
    if status is _DISABLED:
        return True
    return status is _CLOSED and not policy.counts_rates and state.consecutive_failures == 0


def rejection_delay(state: BreakerState, now: float) -> float | None:
    """``retry_after`` when ``step(CallRequested(now))`` would only reject, else None.

    That is: OPEN before ``retry_at`` (the seconds left) and FORCED_OPEN (``math.inf``: no
    retry time). In both cases ``step()`` returns ``state`` unchanged with one ``Rejected``
    effect. None means "ask ``step()``": the call may be admitted or a transition is due.
    """
    status = state.status
    if status is _OPEN:
        retry_at = state.retry_at
        if retry_at is not None and now < retry_at:
            return retry_at - now
        return None
    if status is _FORCED_OPEN:
        return math.inf
    return None


def failures_until_trip(policy: Policy, state: BreakerState) -> int:
    """How many current-generation failures in a row would trip this CLOSED circuit.

    Only exact when the consecutive-failures rule is the policy's only rule (no window needs
    the failures' times); 0 otherwise, meaning "step every outcome". While fewer failures
    than this have arrived, ``step()`` would only raise ``consecutive_failures`` (see
    :func:`add_failures`), so a runtime may count them itself and fold them in before its
    next ``step()``.
    """
    limit = policy.consecutive_failures
    if (
        limit is None
        or state.status is not _CLOSED
        or policy.failures is not None
        or policy.counts_rates
    ):
        return 0
    return limit - state.consecutive_failures


def add_failures(state: BreakerState, count: int) -> BreakerState:
    """The state after ``count`` failures that trip nothing (``count < failures_until_trip``).

    Equal to stepping ``CallFinished(FAILURE, ...)`` of the current generation ``count``
    times: only ``consecutive_failures`` moves.
    """
    return state._replace(consecutive_failures=state.consecutive_failures + count)
