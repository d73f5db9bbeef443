"""docs/design.md's generated state diagram and transition tables match the core."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from breaker_machines._core import EDGES, MANUAL, TABLE, Reason, State

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "state_diagram.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """``scripts/state_diagram.py``, imported from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("state_diagram", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_design_page_is_up_to_date(generator: ModuleType) -> None:
    problems = generator.check()
    assert not problems, "".join(p if p.endswith("\n") else p + "\n" for p in problems)


def test_check_notices_a_stale_page_and_the_generator_repairs_it(
    generator: ModuleType, tmp_path: Path
) -> None:
    page = tmp_path / "design.md"
    text = generator.DESIGN.read_text(encoding="utf-8")
    assert "HALF_OPEN --> OPEN: probe_failed" in text
    page.write_text(text.replace("HALF_OPEN --> OPEN: probe_failed", "HALF_OPEN --> OPEN: x"))
    assert generator.check(page)
    assert generator.main(["--check", "--path", str(page)]) == 1
    assert generator.main(["--path", str(page)]) == 0
    assert generator.check(page) == []
    assert page.read_text(encoding="utf-8") == text


def test_check_notices_missing_markers(generator: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "design.md"
    page.write_text("# Design\n\n<!-- BEGIN GENERATED: state-diagram -->\n")
    assert generator.check(page)
    assert generator.check(tmp_path / "missing.md")


def test_every_edge_is_drawn(generator: ModuleType) -> None:
    diagram = generator.render_state_diagram()
    arrows: dict[tuple[str, str], set[str]] = {}
    for line in diagram.splitlines():
        head, sep, label = line.strip().partition(": ")
        if " --> " in head and sep and not head.startswith("[*]"):
            source, target = head.split(" --> ")
            arrows[(source, target)] = set(label.split(", "))
    drawn = {
        (State[source], State[target], Reason(reason))
        for (source, target), reasons in arrows.items()
        for reason in reasons
    }
    remote = {edge for edge in EDGES if edge[2] is Reason.REMOTE}
    assert drawn == EDGES - remote
    assert len(remote) == len(State) ** 2  # all pairs: summed up in a note, not drawn
    assert "note right of" in diagram


def _rows(markdown: str) -> dict[str, list[str]]:
    """``{state name: [cell, ...]}`` for the rows of a generated Markdown table."""
    rows: dict[str, list[str]] = {}
    for line in markdown.splitlines():
        if line.startswith("| **"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("*")] = cells[1:]
    return rows


def test_every_handler_and_manual_cell_is_tabulated(generator: ModuleType) -> None:
    handlers, _, manual = generator.render_transition_table().partition("`MANUAL`")
    handler_rows = _rows(handlers)
    manual_rows = _rows(manual)
    events = list(dict.fromkeys(event_type for _, event_type in TABLE))
    for (state, event_type), handler in TABLE.items():
        cell = handler_rows[state.name][events.index(event_type)]
        assert cell == f"`{handler.__name__.removeprefix('_')}`"
    for state, targets in MANUAL.items():
        expected = [f"`{generator.NO_OP}`" if t is None else t.name for t in targets]
        assert manual_rows[state.name] == expected
