"""Exceptions raised by breakers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._core.errors import ConfigError, InvalidEvent
from ._core.status import State

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

__all__ = [
    "BreakerError",
    "BulkheadFullError",
    "CircuitOpenError",
    "CircuitTimeoutError",
    "ConfigError",
    "FailedResultError",
    "FallbacksFailedError",
    "InvalidEvent",
]


class BreakerError(Exception):
    """Base class of the errors a breaker raises instead of running the call."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class CircuitOpenError(BreakerError):
    """The circuit rejected the call.

    ``retry_after`` is the number of seconds until the circuit will admit a call again
    (``None`` while it is forced open: only an operator closes it; or while a breaker it
    depends on holds it, see :class:`~breaker_machines.BreakerGroup`). A fresh, cheap instance
    is raised on every rejection: nothing is shared between rejections, so tracebacks never
    accumulate.
    """

    # No __init__ of our own: BaseException's C-level one stores the arguments, which keeps a
    # rejection cheap; the fields read them back.
    args: tuple[str, float | None, State]

    if TYPE_CHECKING:

        def __init__(self, name: str, retry_after: float | None, state: State) -> None: ...

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.args[0]

    @property
    def retry_after(self) -> float | None:
        """Seconds until the circuit admits again; None while forced open or held by a
        dependency."""
        return self.args[1]

    @property
    def state(self) -> State:
        """The circuit's state when it rejected the call."""
        return self.args[2]

    def __str__(self) -> str:
        if self.retry_after is None:
            if self.state is not State.FORCED_OPEN:  # held by a dependency (BreakerGroup)
                return (
                    f"circuit {self.name!r} is {self.state.value}: "
                    "rejected until the breakers it depends on recover"
                )
            return f"circuit {self.name!r} is {self.state.value}: rejected until closed by hand"
        return (
            f"circuit {self.name!r} is {self.state.value}: "
            f"rejected, retry after {self.retry_after:.3f}s"
        )


class BulkheadFullError(BreakerError):
    """The breaker's bulkhead (``max_concurrent``) had no free slot. Never a failure."""

    __slots__ = ("limit", "name")

    def __init__(self, name: str, limit: int) -> None:
        self.name: str = name
        self.limit: int = limit

    def __str__(self) -> str:
        return f"breaker {self.name!r}: all {self.limit} bulkhead slots are busy"

    def __reduce__(self) -> tuple[type[BulkheadFullError], tuple[str, int]]:
        return (BulkheadFullError, (self.name, self.limit))


class CircuitTimeoutError(BreakerError, TimeoutError):
    """The call ran past the breaker's ``timeout`` and was cancelled. Counts as a failure."""

    __slots__ = ("name", "timeout")

    def __init__(self, name: str, timeout: float) -> None:
        self.name: str = name
        self.timeout: float = timeout

    def __str__(self) -> str:
        return f"breaker {self.name!r}: call timed out after {self.timeout}s"

    def __reduce__(self) -> tuple[type[CircuitTimeoutError], tuple[str, float]]:
        return (CircuitTimeoutError, (self.name, self.timeout))


class FailedResultError(BreakerError):
    """``failure_if`` classified a returned value as a failure.

    Only a fallback ever sees it: without a fallback the caller still gets ``result``.
    """

    __slots__ = ("name", "result")

    def __init__(self, name: str, result: object) -> None:
        self.name: str = name
        self.result: object = result

    def __str__(self) -> str:
        return f"breaker {self.name!r}: result {self.result!r} counted as a failure"


class FallbacksFailedError(ExceptionGroup[Exception]):
    """Every fallback of a :func:`~breaker_machines.parallel` group raised.

    An ``ExceptionGroup``: ``exceptions`` holds each fallback's error, in the order the
    fallbacks were given, so ``except*`` (Python 3.11+) and ``split()`` see them. ``error``
    is the error the group was answering (a failure of the call, a rejection, a timeout),
    also its ``__cause__``; ``breaker`` is the breaker's name (``None`` when the group was
    called by hand, outside a breaker).
    """

    # BaseExceptionGroup builds its instances in __new__: the fields are set there too.
    breaker: str | None
    error: BaseException

    def __new__(
        cls, breaker: str | None, error: BaseException, exceptions: Sequence[Exception]
    ) -> FallbacksFailedError:
        where = "" if breaker is None else f"breaker {breaker!r}: "
        self = super().__new__(cls, f"{where}every parallel fallback failed", exceptions)
        self.breaker = breaker
        self.error = error
        return self

    def __init__(
        self, breaker: str | None, error: BaseException, exceptions: Sequence[Exception]
    ) -> None:
        super().__init__(self.message, exceptions)

    def derive(self, excs: Sequence[Any], /) -> Any:
        """The same failure with some of the errors (``split()`` and ``subgroup()``)."""
        return FallbacksFailedError(self.breaker, self.error, excs)

    def __reduce__(
        self,
    ) -> tuple[type[FallbacksFailedError], tuple[str | None, BaseException, list[Exception]]]:
        return (FallbacksFailedError, (self.breaker, self.error, list(self.exceptions)))
