"""The runnable examples run and do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_quickstart(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert any(line.startswith("ALERT external_api opened") for line in lines)
    assert any("guard rejected" in line for line in lines)
    assert "'cached': True" in done.stdout
    assert lines[-1] == "closed"
    assert "'data': [1, 2, 3]" in lines[-2]


def test_threaded_client() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "threaded_client.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "rejected" in done.stdout
    assert "in stock" in done.stdout
