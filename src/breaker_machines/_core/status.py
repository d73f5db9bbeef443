"""Enumerations shared by the core and the runtime: circuit states, outcomes, reasons."""

from __future__ import annotations

import enum

__all__ = ["Outcome", "Reason", "State"]


class State(enum.Enum):
    """Where a circuit is.

    ``CLOSED`` admits and counts; ``OPEN`` rejects until ``retry_at``; ``HALF_OPEN`` admits a
    limited number of probes; ``FORCED_OPEN`` rejects until an operator closes it;
    ``DISABLED`` admits everything and counts nothing toward tripping.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class Outcome(enum.Enum):
    """How an admitted call ended, as classified by the runtime.

    ``SUCCESS`` and ``FAILURE`` count; ``TIMEOUT`` is a failure the breaker's own deadline
    caused; ``CANCELLED`` (cancelled from outside) and ``IGNORED`` (an exception configured as
    neutral) count as nothing but still release a half-open probe permit.
    """

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    IGNORED = "ignored"


class Reason(enum.Enum):
    """Why a transition happened."""

    CONSECUTIVE_FAILURES = "consecutive_failures"
    FAILURES_IN_WINDOW = "failures_in_window"
    FAILURE_RATE = "failure_rate"
    SLOW_CALL_RATE = "slow_call_rate"
    RESET_AFTER_ELAPSED = "reset_after_elapsed"
    PROBES_SUCCEEDED = "probes_succeeded"
    PROBE_FAILED = "probe_failed"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSE = "forced_close"
    RESET = "reset"
    DISABLED = "disabled"
    ENABLED = "enabled"
    REMOTE = "remote"


# Members are singletons compared by identity; hashing by identity is the C-level object
# hash instead of Enum's Python-level hash of the name (the transition table is looked up by
# state on every event). Assigned after the class bodies: a class-body alias reads as an
# ambiguous override to type checkers.
for _enum in (State, Outcome, Reason):
    setattr(_enum, "__hash__", object.__hash__)  # noqa: B010
del _enum
