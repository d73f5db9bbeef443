"""Type tests: group members are Breakers; reports, log entries and cascades are typed.

Checked by ``mypy --strict`` and ``pyright`` (strict) in the ``typecheck`` session. Lines
marked with an ignore comment must be errors (an ignore comment that suppresses nothing is
reported by both checkers).
"""

from __future__ import annotations

from typing_extensions import assert_type

from breaker_machines import (
    Breaker,
    BreakerGroup,
    BreakerRegistry,
    BreakerReport,
    Cascade,
    LoggedEvent,
    Report,
    State,
    report,
)


def alert(cascade: Cascade) -> None:
    assert_type(cascade.targets, tuple[str, ...])


group = BreakerGroup("g", {"db": {}, "api": {"depends_on": ["db"]}}, on_cascade=alert)
assert_type(group["db"], Breaker)
assert_type(group.add("edge", cascades_to=["db"]), Breaker)
assert_type(group.status(), dict[str, State])
assert_type(group.all_healthy(), bool)
assert_type(group.report(), Report)
assert_type(list(group), list[str])

registry = BreakerRegistry("host:")
summary: Report = report([group["db"], registry.get("a")], events=5)
assert_type(summary.summary(), str)
assert_type(summary.breakers, tuple[BreakerReport, ...])
assert_type(summary["g.db"].last_failure, LoggedEvent | None)
assert_type(registry.report().counts[State.OPEN], int)
assert_type(group["db"].event_log(), tuple[LoggedEvent, ...])
assert_type(group["db"].event_log()[0].repeats, int)

group.add("x", depends_on="db")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
