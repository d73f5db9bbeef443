"""The errors a breaker raises: messages that name the breaker, and they survive pickling."""

from __future__ import annotations

import pickle

import pytest

from breaker_machines import (
    BreakerError,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    FailedResultError,
    State,
)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            CircuitOpenError("api", 1.5, State.OPEN),
            "circuit 'api' is open: rejected, retry after 1.500s",
        ),
        (CircuitOpenError("api", None, State.FORCED_OPEN), "rejected until closed by hand"),
        (BulkheadFullError("api", 3), "breaker 'api': all 3 bulkhead slots are busy"),
        (CircuitTimeoutError("api", 2.0), "breaker 'api': call timed out after 2.0s"),
        (FailedResultError("api", None), "breaker 'api': result None counted as a failure"),
    ],
)
def test_messages_name_the_breaker(error: BreakerError, words: str) -> None:
    assert words in str(error)
    assert repr(error).startswith(type(error).__name__ + "(")


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpenError("api", 1.5, State.OPEN),
        BulkheadFullError("api", 3),
        CircuitTimeoutError("api", 2.0),
    ],
)
def test_errors_survive_pickling(error: BreakerError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)


def test_circuit_open_error_fields() -> None:
    error = CircuitOpenError("api", 1.5, State.OPEN)
    assert (error.name, error.retry_after, error.state) == ("api", 1.5, State.OPEN)
    assert isinstance(CircuitTimeoutError("api", 1.0), TimeoutError)
