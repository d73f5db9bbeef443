"""breaker-machines: circuit breakers for structured concurrency.

A pure transition function (``step``) decides everything; an anyio runtime
(:class:`Breaker`, under asyncio and trio) and a threaded one (:class:`ThreadedBreaker`)
drive it; storage keeps the state (memory by default; Redis shares a breaker between
processes: :mod:`breaker_machines.storage`).
"""

from ._base import DegradedMode
from ._core.errors import ConfigError, InvalidEvent
from ._core.policy import Policy
from ._core.status import Outcome, Reason, State
from .breaker import Breaker, Guard, running
from .callbacks import CallObserver, Rejection, StorageEvent, Transition
from .errors import (
    BreakerError,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    FailedResultError,
)
from .registry import BreakerRegistry
from .stats import BreakerStats
from .storage.memory import MemoryStorage
from .storage.shared import StorageError
from .threaded import ThreadedBreaker, ThreadedGuard

__all__ = [
    "Breaker",
    "BreakerError",
    "BreakerRegistry",
    "BreakerStats",
    "BulkheadFullError",
    "CallObserver",
    "CircuitOpenError",
    "CircuitTimeoutError",
    "ConfigError",
    "DegradedMode",
    "FailedResultError",
    "Guard",
    "InvalidEvent",
    "MemoryStorage",
    "Outcome",
    "Policy",
    "Reason",
    "Rejection",
    "State",
    "StorageError",
    "StorageEvent",
    "ThreadedBreaker",
    "ThreadedGuard",
    "Transition",
    "running",
]
