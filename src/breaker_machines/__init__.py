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
from .declarative import (
    Circuit,
    CircuitTemplate,
    InstanceCircuit,
    circuit,
    circuits_of,
    template,
    templates_of,
)
from .errors import (
    BreakerError,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    FailedResultError,
    FallbacksFailedError,
)
from .group import BreakerGroup, Cascade
from .hedging import ParallelFallback, parallel
from .introspection import BreakerReport, LoggedEvent, Report, report
from .registry import BreakerRegistry
from .stats import BreakerStats
from .storage.memory import MemoryStorage
from .storage.shared import StorageError
from .threaded import ThreadedBreaker, ThreadedGuard

__all__ = [
    "Breaker",
    "BreakerError",
    "BreakerGroup",
    "BreakerRegistry",
    "BreakerReport",
    "BreakerStats",
    "BulkheadFullError",
    "CallObserver",
    "Cascade",
    "Circuit",
    "CircuitOpenError",
    "CircuitTemplate",
    "CircuitTimeoutError",
    "ConfigError",
    "DegradedMode",
    "FailedResultError",
    "FallbacksFailedError",
    "Guard",
    "InstanceCircuit",
    "InvalidEvent",
    "LoggedEvent",
    "MemoryStorage",
    "Outcome",
    "ParallelFallback",
    "Policy",
    "Reason",
    "Rejection",
    "Report",
    "State",
    "StorageError",
    "StorageEvent",
    "ThreadedBreaker",
    "ThreadedGuard",
    "Transition",
    "circuit",
    "circuits_of",
    "parallel",
    "report",
    "running",
    "template",
    "templates_of",
]
