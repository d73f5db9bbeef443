"""examples/hedging.py and examples/parallel_fallbacks.py run, under both backends, and
print what docs/howto/hedging.md and docs/howto/parallel-fallbacks.md say they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


def run(example: str, backend: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / example), backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stderr == ""
    return done.stdout.splitlines()


def documented_output(page: str) -> list[str]:
    """The ```text block that follows the example's snippet on its docs page."""
    text = (ROOT / "docs" / "howto" / page).read_text(encoding="utf-8")
    match = re.search(r"<!-- output -->\n\n```text\n(.*?)\n```", text, re.DOTALL)
    assert match is not None, f"{page} has no <!-- output --> block"
    return match[1].splitlines()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hedging(backend: str) -> None:
    out = run("hedging.py", backend)
    assert out == documented_output("hedging.md")
    assert out == [
        "attempt 1 cancelled",
        "results for 'anyio' (attempt 2)",
        "profile from us-east",
        "every backend failed; raised the first one's error: eu-west is down",
        "successes=2 failures=1",
    ]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_parallel_fallbacks(backend: str) -> None:
    out = run("parallel_fallbacks.py", backend)
    assert out == documented_output("parallel-fallbacks.md")
    assert out == [
        "ada (from the replica)",
        "  (replica lookup cancelled: the cache answered first)",
        "ada (cached)",
        "anonymous",
        "profiles-strict: ['KeyError', 'ConnectionError']",
        "answering: ConnectionError('the profile service is down')",
    ]
