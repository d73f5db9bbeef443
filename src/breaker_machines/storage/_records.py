"""Reading a shared record back: validated field by field, never trusted."""

from __future__ import annotations

import math
from typing import Any, cast

from .._core.policy import Policy
from .._core.status import Reason, State
from .shared import Bucket, SharedRecord, StoredBreaker

__all__ = ["parse_inspection", "parse_record"]

_STATES = {state.value: state for state in State}
_REASONS = {reason.value: reason for reason in Reason}


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a count")
    number = int(value)
    if number != value or number < 0:
        raise ValueError(f"{value!r} is not a count")
    return number


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not finite")
    return float(value)


def _buckets(raw: Any) -> list[Any]:
    if isinstance(raw, dict) and not raw:  # cjson writes an empty table as {}
        return []
    if not isinstance(raw, list):
        raise TypeError(f"{raw!r} is not a list of buckets")
    return raw  # pyright: ignore[reportUnknownVariableType]


def parse_record(data: Any, policy: Policy | None) -> SharedRecord:
    if not isinstance(data, dict):
        raise TypeError("the record is not an object")
    raw = cast("dict[str, Any]", data)
    status = _STATES[raw["status"]]
    reason = _REASONS.get(raw.get("reason") or "")
    failure: tuple[Bucket, ...] = ()
    rate: tuple[Bucket, ...] = ()
    if policy is not None:
        limit = policy.bucket_count
        counts = [_count(c) for c in _buckets(raw.get("fw", []))]
        triples = [tuple(_count(c) for c in b) for b in _buckets(raw.get("rw", []))]
        if len(counts) > limit or len(triples) > limit:
            raise ValueError("more buckets than the policy has")
        for triple in triples:
            if len(triple) != 3 or triple[1] > triple[0] or triple[2] > triple[0]:
                raise ValueError(f"bucket {triple!r} is impossible")
        failure = _trim(tuple((c, c, 0) for c in counts))
        rate = _trim(tuple((t[0], t[1], t[2]) for t in triples))
    origin = raw.get("origin", "")
    if not isinstance(origin, str):
        raise TypeError("origin is not a string")
    return SharedRecord(
        status=status,
        version=_count(raw["version"]),
        trips=_count(raw["trips"]),
        reason=reason,
        opened_ago=_duration(raw.get("opened_ago")),
        retry_in=_duration(raw.get("retry_in")),
        consecutive_failures=_count(raw.get("cf", 0)),
        half_open_successes=_count(raw.get("hos", 0)),
        failure_buckets=failure,
        rate_buckets=rate,
        rate_head=_count(raw.get("rhead", 0)),
        probes=_count(raw.get("probes", 0)),
        missing=bool(raw.get("missing", 0)),
        origin=origin,
    )


def parse_inspection(name: str, data: Any) -> StoredBreaker:
    """A record read for inspection: the record's fields, plus ``totals`` (failures of
    the failure window; calls, failures and slow calls of the rate window, over every
    stored bucket) and ``expires_in``."""
    record = parse_record(data, None)
    raw = cast("dict[str, Any]", data)
    totals = raw.get("totals", [0, 0, 0, 0])
    if isinstance(totals, dict) and not totals:  # cjson writes an empty table as {}
        totals = [0, 0, 0, 0]
    if not isinstance(totals, list) or len(totals) != 4:  # pyright: ignore[reportUnknownArgumentType]
        raise TypeError(f"{totals!r} is not four totals")
    failures, calls, rate_failures, slow = (_count(t) for t in totals)  # pyright: ignore[reportUnknownVariableType]
    if rate_failures > calls or slow > calls:
        raise ValueError(f"totals {totals!r} are impossible")
    return StoredBreaker(
        name=name,
        record=record,
        window_failures=failures,
        rate_calls=calls,
        rate_failures=rate_failures,
        rate_slow=slow,
        expires_in=_duration(raw.get("expires_in")),
    )


def _trim(buckets: tuple[Bucket, ...]) -> tuple[Bucket, ...]:
    """Drop empty buckets at the old end (the newest bucket always stays)."""
    end = len(buckets)
    while end > 1 and buckets[end - 1] == (0, 0, 0):
        end -= 1
    if end == 1 and buckets[0] == (0, 0, 0):
        return ()
    return buckets[:end]
