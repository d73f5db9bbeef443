"""Generate the state diagram and the transition table in ``docs/design.md`` from the core.

The diagram is drawn from ``breaker_machines._core.EDGES``, the tables from
``breaker_machines._core.TABLE`` and ``breaker_machines._core.MANUAL``, so the design page
cannot describe a state machine the code does not implement. Each generated block lives
between a pair of markers in ``docs/design.md``::

    <!-- BEGIN GENERATED: state-diagram -->
    ...
    <!-- END GENERATED: state-diagram -->

Usage::

    python scripts/state_diagram.py           # rewrite the generated regions
    python scripts/state_diagram.py --check   # exit 1 if docs/design.md is out of date

``tests/test_docs_diagram.py`` runs :func:`check` so a stale page fails the test suite.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"

# Document this checkout's core, not whichever copy happens to be installed.
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from breaker_machines._core import EDGES, MANUAL, TABLE, BreakerState, Reason, State  # noqa: E402
from breaker_machines._core.transitions import _MANUAL_COLUMN  # noqa: E402

__all__ = [
    "DESIGN",
    "REGIONS",
    "StaleRegion",
    "check",
    "main",
    "render_state_diagram",
    "render_transition_table",
    "update",
]

NO_OP = "no-op"


# --------------------------------------------------------------------------- the diagram


def _edge_labels() -> dict[tuple[State, State], list[Reason]]:
    """Reasons grouped per ``(source, target)`` edge, REMOTE left out, in enum order."""
    grouped: dict[tuple[State, State], list[Reason]] = {}
    for source, target, reason in EDGES:
        if reason is not Reason.REMOTE:
            grouped.setdefault((source, target), []).append(reason)
    order = {reason: index for index, reason in enumerate(Reason)}
    for reasons in grouped.values():
        reasons.sort(key=order.__getitem__)
    return grouped


def _remote_pairs() -> set[tuple[State, State]]:
    return {(source, target) for source, target, reason in EDGES if reason is Reason.REMOTE}


def render_state_diagram() -> str:
    """A Mermaid ``stateDiagram-v2`` of every edge in ``EDGES``."""
    states = list(State)
    position = {state: index for index, state in enumerate(states)}
    lines = ["```mermaid", "stateDiagram-v2"]
    lines.append(f"    [*] --> {BreakerState().status.name}")
    grouped = _edge_labels()
    for source, target in sorted(grouped, key=lambda e: (position[e[0]], position[e[1]])):
        label = ", ".join(reason.value for reason in grouped[(source, target)])
        lines.append(f"    {source.name} --> {target.name}: {label}")
    remote = _remote_pairs()
    every_pair = {(source, target) for source in states for target in states}
    if remote == every_pair:
        lines += [
            f"    note right of {states[-1].name}",
            "        remote: adopting a newer state from shared storage",
            "        can join any two states (a state and itself included)",
            "    end note",
        ]
    else:  # only some pairs: draw them, they are real edges
        for source, target in sorted(remote, key=lambda e: (position[e[0]], position[e[1]])):
            lines.append(f"    {source.name} --> {target.name}: {Reason.REMOTE.value}")
    lines.append("```")
    lines.append("")
    lines.append(
        f"{len(EDGES)} edges in `EDGES`: {len(EDGES) - len(remote)} drawn above "
        f"(grouped into {len(grouped)} arrows), {len(remote)} `remote` ones summed up "
        "in the note."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the tables


def _handler_name(handler: Callable[..., object]) -> str:
    return handler.__name__.removeprefix("_")


_RST_ROLE = re.compile(r":[a-z]+:`~?\.*([^`]+)`")


def _first_line(handler: Callable[..., object]) -> str:
    """The docstring's first line, its reStructuredText markup turned into Markdown."""
    doc = (handler.__doc__ or "").strip()
    line = doc.splitlines()[0].strip() if doc else ""
    return _RST_ROLE.sub(r"`\1`", line).replace("``", "`")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_transition_table() -> str:
    """The ``(state, event type) -> handler`` table, the handlers' summaries, the manual grid."""
    states = list(State)
    events: list[type] = []
    for _, event_type in TABLE:
        if event_type not in events:
            events.append(event_type)
    handlers: dict[str, Callable[..., object]] = {}
    rows = []
    for state in states:
        row = [f"**{state.name}**"]
        for event_type in events:
            handler = TABLE.get((state, event_type))
            if handler is None:
                row.append("")
                continue
            handlers.setdefault(_handler_name(handler), handler)
            row.append(f"`{_handler_name(handler)}`")
        rows.append(row)
    lines = ["`TABLE`: what `step()` runs for each state and event type.", ""]
    lines += _table(["state / event", *(f"`{e.__name__}`" for e in events)], rows)

    lines += ["", "What each handler does (its docstring's first line):", ""]
    lines += _table(
        ["handler", "does"],
        [[f"`{name}`", _first_line(handlers[name])] for name in sorted(handlers)],
    )

    columns = sorted(_MANUAL_COLUMN.items(), key=lambda item: item[1][0])
    manual_rows = []
    for state in states:
        targets = MANUAL[state]
        row = [f"**{state.name}**"]
        for _, (index, _) in columns:
            target = targets[index]
            row.append(f"`{NO_OP}`" if target is None else target.name)
        manual_rows.append(row)
    lines += [
        "",
        f"`MANUAL`: the state each operator control leads to (`{NO_OP}`: the control changes "
        "nothing in that state). Every other cell is a transition to a new generation with "
        "empty windows and counters.",
        "",
    ]
    header = ["state / control"]
    header += [f"`{event_type.__name__}` ({reason.value})" for event_type, (_, reason) in columns]
    lines += _table(header, manual_rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------- the page

REGIONS: dict[str, Callable[[], str]] = {
    "state-diagram": render_state_diagram,
    "transition-table": render_transition_table,
}


class StaleRegion(Exception):
    """A generated region is missing from the page (its markers are not there)."""


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN GENERATED: {re.escape(name)} -->\n)(.*?)(<!-- END GENERATED: "
        rf"{re.escape(name)} -->)",
        re.DOTALL,
    )


def update(text: str) -> str:
    """``text`` with every generated region rewritten from the code."""
    for name, render in REGIONS.items():
        pattern = _pattern(name)
        if len(pattern.findall(text)) != 1:
            raise StaleRegion(f"docs/design.md needs exactly one {name!r} region")
        body = render()
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(3)}", text)
    return text


def check(path: Path = DESIGN) -> list[str]:
    """Problems that make ``path`` out of date (an empty list: it is up to date)."""
    if not path.exists():
        return [f"{path} does not exist"]
    text = path.read_text(encoding="utf-8")
    try:
        expected = update(text)
    except StaleRegion as error:
        return [str(error)]
    if expected == text:
        return []
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        expected.splitlines(keepends=True),
        fromfile=f"{path.name} (on disk)",
        tofile=f"{path.name} (from the code)",
    )
    return ["generated regions are out of date; run python scripts/state_diagram.py", *diff]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the page is out of date; change nothing"
    )
    parser.add_argument("--path", type=Path, default=DESIGN, help="the page (docs/design.md)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.path)
        if problems:
            sys.stderr.write("".join(p if p.endswith("\n") else p + "\n" for p in problems))
            return 1
        return 0
    text = args.path.read_text(encoding="utf-8")
    try:
        new = update(text)
    except StaleRegion as error:
        sys.stderr.write(f"{error}\n")
        return 1
    if new != text:
        args.path.write_text(new, encoding="utf-8")
        sys.stdout.write(f"updated {args.path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
