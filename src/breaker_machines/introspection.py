"""What a breaker, a registry or a group can tell a person: recent events, reports, summaries.

Every breaker keeps a bounded log of its most recent transitions and failures
(``Breaker(event_log=50)``; ``breaker.event_log()``). :func:`report` gathers the stats and
logs of many breakers into a :class:`Report` with counts by state, and
:meth:`Report.summary` renders it as text for a person (a log line, a chat message, a
debug endpoint). ``BreakerRegistry.report()`` and ``BreakerGroup.report()`` call it on
the breakers they hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from ._core.status import State
from .stats import BreakerStats

if TYPE_CHECKING:
    from ._base import BreakerBase

__all__ = ["BreakerReport", "LoggedEvent", "Report", "report"]

#: A logged error message is cut to this many characters.
MESSAGE_LIMIT = 200

EventKind = Literal["transition", "failure", "timeout"]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One entry of a breaker's event log (``breaker.event_log()``).

    ``kind`` is ``"transition"`` (``detail`` reads ``"closed -> open
    (consecutive_failures)"``), ``"failure"`` (a recorded exception, or a result
    ``failure_if`` refused) or ``"timeout"`` (the breaker's own deadline). ``state`` is the
    circuit's state right after the event; ``at`` is the breaker's clock. For failures,
    ``error_type`` is the exception's qualified class name and ``message`` its text (cut
    to 200 characters); both are None for a refused result and for transitions.

    ``repeats``: the same failure (the same exception class with equal arguments) came
    this many times in a row, the first at ``at``; the log keeps one entry for the run.
    """

    at: float
    kind: EventKind
    state: State
    detail: str
    error_type: str | None = None
    message: str | None = None
    repeats: int = 1


#: A failure as the hot path logs it: ``[at, state, exception class, its args, repeats,
#: text]``. ``text`` is None for an exception whose ``str()`` is BaseException's own (a
#: function of ``args``): it is made when the log is read. Holding ``args``, not the
#: exception, keeps no traceback (and so no frame) alive. A list, so that a repeat (same
#: class, equal args) only bumps its count.
RawFailure = list[Any]

#: Exception classes whose ``str()`` is BaseException's own, by class (bounded).
_PLAIN_STR: dict[type[BaseException], bool] = {}
_PLAIN_STR_LIMIT = 256


def has_plain_str(kind: type[BaseException]) -> bool:
    """Whether ``str()`` of a ``kind`` instance depends only on its ``args``."""
    plain = _PLAIN_STR.get(kind)
    if plain is None:
        plain = kind.__str__ is BaseException.__str__
        if len(_PLAIN_STR) < _PLAIN_STR_LIMIT:
            _PLAIN_STR[kind] = plain
    return plain


def _args_text(args: tuple[Any, ...]) -> str:
    """BaseException.__str__, from the args alone."""
    if not args:
        return ""
    if len(args) == 1:
        return str(args[0])
    return str(args)


def same_args(logged: tuple[Any, ...], args: tuple[Any, ...]) -> bool:
    """Equal argument tuples; an argument whose ``==`` raises is never equal."""
    try:
        return bool(logged == args)
    except Exception:
        return False


def logged_event(item: LoggedEvent | RawFailure) -> LoggedEvent:
    """A log item as a :class:`LoggedEvent` (a raw failure is rendered now)."""
    if isinstance(item, LoggedEvent):
        return item
    at, state, kind, args, repeats, text = item
    if text is None:
        try:
            text = _args_text(args)
        except Exception:  # an argument's __str__ raised
            text = f"<{kind.__qualname__} whose str() raised>"
    logged = _failure(at, state, kind, text)
    return logged if repeats == 1 else replace(logged, repeats=repeats)


def text_of(error: BaseException) -> str:
    """``str(error)``, or a placeholder when its ``__str__`` raises."""
    try:
        return str(error)
    except Exception:  # a broken __str__ must not break the caller's call
        return f"<{type(error).__qualname__} whose str() raised>"


def refused_entry(at: float, state: State) -> LoggedEvent:
    """The log entry of a result ``failure_if`` refused."""
    return LoggedEvent(at, "failure", state, "result refused by failure_if")


def _failure(at: float, state: State, kind: type[BaseException], message: str) -> LoggedEvent:
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    detail = f"{kind.__qualname__}: {message}" if message else kind.__qualname__
    return LoggedEvent(at, "failure", state, detail, name, message)


def timeout_entry(at: float, state: State, timeout: float) -> LoggedEvent:
    """The log entry of a call the breaker's own timeout cut off."""
    return LoggedEvent(at, "timeout", state, f"call exceeded the {timeout:g}s timeout")


@dataclass(frozen=True, slots=True)
class BreakerReport:
    """One breaker in a :class:`Report`: its stats and its most recent logged events."""

    stats: BreakerStats
    events: tuple[LoggedEvent, ...]

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.stats.name

    @property
    def last_failure(self) -> LoggedEvent | None:
        """The most recent failure or timeout in the log, if any."""
        for event in reversed(self.events):
            if event.kind != "transition":
                return event
        return None


_ORDER = (State.OPEN, State.FORCED_OPEN, State.HALF_OPEN, State.DISABLED, State.CLOSED)


@dataclass(frozen=True, slots=True)
class Report:
    """The state of many breakers at one moment (see :func:`report`).

    ``counts`` has every :class:`~breaker_machines.State` as a key (zero when no breaker is
    in it); ``breakers`` is in the order the breakers were given.
    """

    breakers: tuple[BreakerReport, ...]
    counts: Mapping[State, int]

    @property
    def healthy(self) -> bool:
        """True when every breaker is CLOSED or DISABLED (admitting calls normally)."""
        return all(
            self.counts[state] == 0 for state in (State.OPEN, State.FORCED_OPEN, State.HALF_OPEN)
        )

    def __getitem__(self, name: str) -> BreakerReport:
        """The report of the breaker called ``name``."""
        for entry in self.breakers:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def summary(self) -> str:
        """A few lines a person can read: the counts, then each breaker that is not CLOSED
        (worst first) with its retry time and last failure, then the CLOSED ones in one line.
        """
        total = len(self.breakers)
        parts = [f"{self.counts[state]} {state.value}" for state in _ORDER if self.counts[state]]
        head = f"{total} breaker{'s' if total != 1 else ''}"
        lines = [f"{head}: {', '.join(parts)}" if parts else f"{head}"]
        rank = {state: i for i, state in enumerate(_ORDER)}
        troubled = [b for b in self.breakers if b.stats.state is not State.CLOSED]
        troubled.sort(key=lambda b: rank[b.stats.state])
        for entry in troubled:
            stats = entry.stats
            line = f"  {stats.name}: {stats.state.value}"
            if stats.retry_after is not None and math.isfinite(stats.retry_after):
                line += f", retry in {stats.retry_after:.1f}s"
            if stats.trips:
                line += f", trip {stats.trips}"
            if stats.degraded:
                line += ", storage degraded"
            last = entry.last_failure
            if last is not None:
                line += f"; last {last.kind}: {last.detail}"
                if last.repeats > 1:
                    line += f" (x{last.repeats})"
            lines.append(line)
        closed = [b.name for b in self.breakers if b.stats.state is State.CLOSED]
        if closed:
            lines.append(f"  closed: {', '.join(closed)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def report(breakers: Iterable[BreakerBase], *, events: int = 10) -> Report:
    """Stats and the last ``events`` logged events of each breaker, with counts by state."""
    if isinstance(events, bool) or not isinstance(events, int) or events < 0:
        from ._core.errors import ConfigError

        raise ConfigError("events", events, "must be an integer >= 0")
    entries: list[BreakerReport] = []
    counts = dict.fromkeys(State, 0)
    for breaker in breakers:
        stats = breaker.stats()
        logged = breaker.event_log()
        recent = logged[len(logged) - events :] if events else ()
        entries.append(BreakerReport(stats, recent))
        counts[stats.state] += 1
    return Report(tuple(entries), counts)
