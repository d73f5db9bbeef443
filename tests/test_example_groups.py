"""examples/groups.py and examples/introspection.py run under both backends and print
what docs/howto/groups.md and docs/howto/introspection.md say they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(example: str, backend: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stderr == ""
    return done.stdout


def documented_output(page: str) -> str:
    """The ```text block that follows the example's snippet on its docs page."""
    text = (ROOT / "docs" / "howto" / page).read_text(encoding="utf-8")
    match = re.search(r"<!-- output -->\n\n```text\n(.*?)\n```", text, re.DOTALL)
    assert match is not None, f"{page} has no <!-- output --> block"
    return match[1] + "\n"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_groups_example(backend: str) -> None:
    out = run("groups.py", backend)
    assert out == documented_output("groups.md")
    assert "ALERT db opened; forced open: search" in out
    assert "payments: rejected (open: waiting for its dependency)" in out
    assert out.splitlines()[-1].startswith("payments recovered")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_introspection_example(backend: str) -> None:
    out = run("introspection.py", backend)
    assert out == documented_output("introspection.md")
    assert "t=4 transition closed -> open (consecutive_failures)" in out
    assert "http:legacy.example: forced_open" in out
