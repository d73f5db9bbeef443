"""Reading a shared record back: every field is validated, nothing is trusted.

``parse_record`` and ``parse_inspection`` turn what Redis's scripts and PostgreSQL's
functions answer (decoded JSON) into records. A malformed answer raises ``KeyError``,
``TypeError`` or ``ValueError``, which both storages turn into ``CorruptRecordError``
(end to end in tests/test_storage_corrupt.py); here each refusal is pinned on its own.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from breaker_machines import Policy, State
from breaker_machines._core.status import Reason
from breaker_machines.storage._records import parse_inspection, parse_record

POLICY = Policy(failures=3, within=10.0, failure_rate=0.5, window=10.0, buckets=3)


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"status": "closed", "version": 4, "trips": 1}
    base.update(fields)
    return base


def test_a_full_record_is_read_field_by_field() -> None:
    parsed = parse_record(
        record(
            status="open",
            reason="failure_rate",
            opened_ago=2,
            retry_in=28.5,
            cf=2,
            hos=0,
            fw=[1, 0, 2],
            rw=[[4, 2, 1], [0, 0, 0], [0, 0, 0]],
            rhead=7,
            probes=1,
            origin="worker-1",
        ),
        POLICY,
    )
    assert parsed.status is State.OPEN
    assert (parsed.version, parsed.trips, parsed.reason) == (4, 1, Reason.FAILURE_RATE)
    assert (parsed.opened_ago, parsed.retry_in) == (2.0, 28.5)
    assert type(parsed.opened_ago) is float
    assert (parsed.consecutive_failures, parsed.rate_head, parsed.probes) == (2, 7, 1)
    # Failure-window buckets hold failures only; empty buckets at the old end are dropped.
    assert parsed.failure_buckets == ((1, 1, 0), (0, 0, 0), (2, 2, 0))
    assert parsed.rate_buckets == ((4, 2, 1),)
    assert parsed.origin == "worker-1"
    assert parsed.missing is False


def test_windows_of_empty_buckets_read_as_empty() -> None:
    parsed = parse_record(record(fw=[0, 0], rw={}), POLICY)  # cjson writes [] as {}
    assert parsed.failure_buckets == ()
    assert parsed.rate_buckets == ()


def test_without_a_policy_the_windows_are_not_read() -> None:
    parsed = parse_record(record(fw="not even a list", missing=1), None)
    assert parsed.failure_buckets == ()
    assert parsed.missing is True
    assert parsed.reason is None


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        ([1, 2], TypeError, "the record is not an object"),
        (record(status="ajar"), KeyError, "ajar"),
        ({"status": "closed", "trips": 0}, KeyError, "version"),
        (record(version=True), TypeError, "True is not a count"),
        (record(version=-1), ValueError, "-1 is not a count"),
        (record(trips=1.5), ValueError, "1.5 is not a count"),
        (record(cf="3"), ValueError, "'3' is not a count"),
        (record(opened_ago="soon"), TypeError, "'soon' is not a number"),
        (record(retry_in=False), TypeError, "False is not a number"),
        (record(retry_in=math.inf), ValueError, "inf is not finite"),
        (record(fw="1,2"), TypeError, "'1,2' is not a list of buckets"),
        (record(fw=[1, 1, 1, 1]), ValueError, "more buckets than the policy has"),
        (record(rw=[[1, 0, 0]] * 4), ValueError, "more buckets than the policy has"),
        (record(rw=[[1, 2, 0]]), ValueError, r"bucket \(1, 2, 0\) is impossible"),
        (record(rw=[[1, 0, 2]]), ValueError, r"bucket \(1, 0, 2\) is impossible"),
        (record(rw=[[1, 0]]), ValueError, r"bucket \(1, 0\) is impossible"),
        (record(origin=7), TypeError, "origin is not a string"),
    ],
)
def test_a_malformed_record_is_refused(data: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        parse_record(data, POLICY)


def test_an_inspection_reads_the_totals_and_the_expiry() -> None:
    stored = parse_inspection("api", record(totals=[3, 10, 4, 2], expires_in=60))
    assert stored.name == "api"
    assert stored.record.version == 4
    assert (stored.window_failures, stored.rate_calls) == (3, 10)
    assert (stored.rate_failures, stored.rate_slow) == (4, 2)
    assert stored.expires_in == 60.0


@pytest.mark.parametrize("totals", [None, {}])
def test_an_inspection_without_totals_reads_zeros(totals: Any) -> None:
    data = record() if totals is None else record(totals=totals)
    stored = parse_inspection("api", data)
    assert (stored.window_failures, stored.rate_calls, stored.rate_failures) == (0, 0, 0)
    assert stored.rate_slow == 0
    assert stored.expires_in is None


@pytest.mark.parametrize(
    ("totals", "error", "words"),
    [
        ([1, 2, 3], TypeError, "is not four totals"),
        ("1234", TypeError, "is not four totals"),
        ([0, 1, 2, 0], ValueError, "are impossible"),
        ([0, 1, 0, 2], ValueError, "are impossible"),
        ([0, -1, 0, 0], ValueError, "is not a count"),
    ],
)
def test_impossible_totals_are_refused(totals: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        parse_inspection("api", record(totals=totals))
