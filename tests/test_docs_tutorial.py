"""Every runnable code block of docs/tutorial.md runs, under the backend it names, and
prints what the page says it prints.

A runnable block is a ```python fence after an HTML comment ``<!-- test: asyncio -->`` or
``<!-- test: trio -->`` and a blank line (indented like the fence when it sits in a tab).
Its expected output is the first ```text fence after it: the asyncio and trio tabs of one
example share the output block that follows the tabs. Each block runs as ``__main__`` in a
module namespace of its own, all of them in one fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"

_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)<!-- test: (?P<backend>asyncio|trio) -->\n\n?"
    r"(?P=indent)```python\n(?P<code>.*?)\n(?P=indent)```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_OUTPUT = re.compile(
    r"^(?P<indent>[ \t]*)```text\n(?P<text>.*?)\n(?P=indent)```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)


@dataclass(frozen=True)
class Example:
    line: int
    backend: str
    code: str
    expected: str | None

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.backend}"


def _dedent(text: str, indent: str) -> str:
    lines = text.split("\n")
    return "\n".join(line.removeprefix(indent) for line in lines)


def examples(path: Path = TUTORIAL) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        indent = match["indent"]
        output = _OUTPUT.search(text, match.end())
        expected = None if output is None else _dedent(output["text"], output["indent"])
        found.append(
            Example(
                line=text.count("\n", 0, match.start()) + 1,
                backend=match["backend"],
                code=_dedent(match["code"], indent),
                expected=expected,
            )
        )
    return found


EXAMPLES = examples()


def test_the_tutorial_has_runnable_examples_under_both_backends() -> None:
    assert len(EXAMPLES) >= 6
    assert {example.backend for example in EXAMPLES} == {"asyncio", "trio"}
    for example in EXAMPLES:
        assert example.expected is not None, f"line {example.line}: no ```text output after it"
        # The backend the marker names is the one the block runs under.
        assert f"import {example.backend}" in example.code, example.id


# Runs each example file as __main__ in one interpreter (the imports are paid once), with
# its own stdout; prints {file: [exit status, stdout, traceback]} as JSON.
_RUNNER = """
import contextlib, io, json, runpy, sys, traceback
results = {}
for path in sys.argv[1:]:
    out = io.StringIO()
    status, error = 0, ""
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except BaseException:
            status, error = 1, traceback.format_exc()
    results[path] = [status, out.getvalue(), error]
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Run every example (each in a module namespace of its own) in one fresh interpreter."""
    work = tmp_path_factory.mktemp("tutorial")
    paths: dict[str, Path] = {}
    for example in EXAMPLES:
        if example.backend == "trio" and importlib.util.find_spec("trio") is None:
            continue
        paths[example.id] = work / f"{example.id.replace('-', '_')}.py"
        paths[example.id].write_text(example.code + "\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONWARNINGS="error")
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, *map(str, paths.values())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    return {key: tuple(results[str(path)]) for key, path in paths.items()}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.id)
def test_tutorial_example_runs_and_prints_what_the_page_says(
    example: Example, runs: dict[str, tuple[int, str, str]]
) -> None:
    if example.id not in runs:
        pytest.skip("trio is not installed")
    status, stdout, error = runs[example.id]
    assert status == 0, f"docs/tutorial.md line {example.line}:\n{error}"
    assert stdout.rstrip("\n") == example.expected, (
        f"docs/tutorial.md line {example.line} prints something else:\n{stdout}"
    )
