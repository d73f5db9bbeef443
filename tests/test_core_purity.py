"""The core imports no clock, no randomness, no I/O, no threads and no async library.

Each check runs in a fresh, isolated interpreter (``python -I``). ``breaker_machines``'s own
``__init__`` imports the anyio runtime, so the child registers a bare package module in its
place (pointing at the real directory) and imports only ``breaker_machines._core``: what
gets loaded is what the core, and the standard library modules it uses, pull in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import breaker_machines._core as core

FORBIDDEN = (
    "anyio",
    "trio",
    "asyncio",
    "time",
    "random",
    "socket",
    "threading",
    "logging",
    "selectors",
    "ssl",
    "subprocess",
    "sniffio",
)

CORE_DIR = Path(core.__file__).resolve().parent
PACKAGE_DIR = CORE_DIR.parent

# Registers a bare ``breaker_machines`` package so that importing the core does not run
# the runtime's ``__init__``.
_STUB_PARENT = f"""
import types
_pkg = types.ModuleType("breaker_machines")
_pkg.__path__ = [{str(PACKAGE_DIR)!r}]
sys.modules["breaker_machines"] = _pkg
"""

_DELTA = (
    "import sys\n"
    "before = set(sys.modules)\n"
    + _STUB_PARENT
    + """
import breaker_machines._core
print(repr(sorted(before)))
print(repr(sorted(set(sys.modules) - before)))
"""
)

_POISONED = (
    "import sys\n"
    f"forbidden = {FORBIDDEN!r}\n"
    "saved = {name: sys.modules.pop(name, None) for name in forbidden}\n"
    "sys.modules.update(dict.fromkeys(forbidden))  # None: importing it raises\n"
    + _STUB_PARENT
    + """
try:
    import breaker_machines._core
    print("imported", breaker_machines._core.step.__module__)
finally:
    for name, module in saved.items():
        if module is None:
            del sys.modules[name]
        else:
            sys.modules[name] = module
"""
)


def _run(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def test_importing_the_core_adds_no_forbidden_module() -> None:
    before_line, added_line = _run(_DELTA)
    before = set(ast.literal_eval(before_line))
    added = set(ast.literal_eval(added_line))
    # The child really imported the core, and only the core: no runtime, no anyio.
    assert "breaker_machines._core.transitions" in added
    assert "breaker_machines.breaker" not in added
    loaded = {name for name in added if name.split(".")[0] in FORBIDDEN}
    assert loaded == set(), f"the core imported {sorted(loaded)}"
    # Whatever the interpreter loads at startup (``time`` may be) is not the core's doing;
    # test_core_imports_with_forbidden_modules_blocked covers those.
    assert not (before & {"anyio", "trio", "asyncio", "sniffio"})


def test_core_imports_with_forbidden_modules_blocked() -> None:
    """Stronger than the delta: every forbidden module, even one loaded at startup, is
    replaced by None in ``sys.modules``, so any import of it would raise ImportError."""
    assert _run(_POISONED) == ["imported breaker_machines._core.transitions"]


@pytest.mark.parametrize("path", sorted(CORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_core_source_names_no_forbidden_module(path: Path) -> None:
    """Static check, including imports a function would only run later."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint(FORBIDDEN), sorted(imported & set(FORBIDDEN))
    assert "breaker_machines" not in imported  # the core only imports itself, relatively
