"""What the operator commands print: JSON documents and human-readable lines.

The JSON shapes are documented in ``docs/cli.md``; change them only together.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

from .._core.status import State
from ..storage.shared import CorruptRecordError, SharedRecord, StoredBreaker

__all__ = [
    "breaker_json",
    "duration",
    "status_table",
    "timestamp",
    "transition_json",
    "transition_line",
]


def _seconds(value: float | None) -> float | None:
    """A duration for JSON: rounded to the millisecond (what the clocks are good for)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 3)


def breaker_json(stored: StoredBreaker) -> dict[str, Any]:
    """One breaker as ``status --json`` lists it (and as the controls print it)."""
    record = stored.record
    return {
        "name": stored.name,
        "state": record.status.value,
        "version": record.version,
        "trips": record.trips,
        "reason": None if record.reason is None else record.reason.value,
        "opened_ago": _seconds(record.opened_ago),
        "retry_in": _seconds(record.retry_in),
        "consecutive_failures": record.consecutive_failures,
        "half_open_successes": record.half_open_successes,
        "probes": record.probes,
        "failure_window": {"failures": stored.window_failures},
        "rate_window": {
            "calls": stored.rate_calls,
            "failures": stored.rate_failures,
            "slow": stored.rate_slow,
        },
        "origin": record.origin,
        "expires_in": _seconds(stored.expires_in),
    }


def duration(seconds: float) -> str:
    """``seconds`` for people: ``4.2s``, ``37s``, ``12m05s``, ``3h20m``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _retry(record: SharedRecord) -> str:
    if record.status is State.FORCED_OPEN:
        return "until closed"
    if record.status is State.HALF_OPEN:
        return f"probing ({record.probes} out, {record.half_open_successes} ok)"
    if record.status is State.OPEN and record.retry_in is not None:
        if record.retry_in <= 0:
            return "retry due"
        return f"retry in {duration(record.retry_in)}"
    return "-"


def _last(record: SharedRecord) -> str:
    text = "-" if record.reason is None else record.reason.value
    if record.opened_ago is not None and record.status in (
        State.OPEN,
        State.HALF_OPEN,
        State.FORCED_OPEN,
    ):
        text += f" (opened {duration(record.opened_ago)} ago)"
    return text


def status_table(
    found: Sequence[StoredBreaker], corrupt: Sequence[tuple[str, CorruptRecordError]]
) -> str:
    """The human-readable ``status`` table (one line per breaker, a header first)."""
    header = ("NAME", "STATE", "VERSION", "TRIPS", "FAILURES", "WINDOW", "RETRY", "LAST REASON")
    rows: list[tuple[str, ...]] = [header]
    for stored in found:
        record = stored.record
        window = f"{stored.window_failures} failed"
        if stored.rate_calls:
            window += (
                f", {stored.rate_failures}/{stored.rate_calls} calls failed"
                f", {stored.rate_slow} slow"
            )
        rows.append(
            (
                stored.name,
                record.status.value,
                str(record.version),
                str(record.trips),
                str(record.consecutive_failures),
                window,
                _retry(record),
                _last(record),
            )
        )
    for name, error in corrupt:
        rows.append((name, "CORRUPT", "-", "-", "-", "-", "-", str(error)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def timestamp(at: float) -> str:
    """A wall-clock time as ISO 8601 in UTC with milliseconds: ``2026-01-31T12:00:00.123Z``."""
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def transition_json(
    at: float, name: str | None, key: str, source: State | None, record: SharedRecord
) -> dict[str, Any]:
    """One published transition as a ``watch --json`` line."""
    return {
        "event": "transition",
        "time": timestamp(at),
        "name": name,
        "key": key,
        "source": None if source is None else source.value,
        "target": record.status.value,
        "reason": None if record.reason is None else record.reason.value,
        "version": record.version,
        "trips": record.trips,
        "retry_in": _seconds(record.retry_in),
        "origin": record.origin,
    }


def transition_line(
    at: float, name: str | None, key: str, source: State | None, record: SharedRecord
) -> str:
    """One published transition as a ``watch`` line."""
    who = name if name is not None else f"<unknown breaker, key {key}>"
    origin = "?" if source is None else source.value
    reason = "-" if record.reason is None else record.reason.value
    line = f"{timestamp(at)}  {who}  {origin} -> {record.status.value}  {reason}  v{record.version}"
    if record.status is State.OPEN and record.retry_in is not None:
        line += f"  (retry in {duration(record.retry_in)})"
    return line
