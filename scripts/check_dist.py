"""Check a built wheel and sdist hold what they must: ``python scripts/check_dist.py WHEEL SDIST``.

The wheel: every module under ``src/breaker_machines`` (no more, no tests), ``py.typed``, the
console script and the extras. The sdist: the sources, tests, properties, docs and licence.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "breaker_machines"


def check_wheel(path: Path) -> list[str]:
    problems: list[str] = []
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = wheel.read(metadata).decode()
        entry_points = wheel.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    expected = {
        "breaker_machines/" + str(p.relative_to(PACKAGE)).replace("\\", "/")
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".typed"}
    }
    packaged = {n for n in names if n.startswith("breaker_machines/")}
    problems += [f"wheel lacks {n}" for n in sorted(expected - packaged)]
    problems += [f"wheel has unexpected {n}" for n in sorted(packaged - expected)]
    if "breaker_machines/py.typed" not in packaged:
        problems.append("wheel lacks py.typed")
    if any(n.startswith(("tests/", "properties/")) for n in names):
        problems.append("wheel ships tests")
    if "breaker-machines = breaker_machines.__main__:main" not in entry_points:
        problems.append("wheel lacks the breaker-machines console script")
    for extra in ("trio", "redis", "postgres", "otel"):
        if f"Provides-Extra: {extra}" not in meta:
            problems.append(f"wheel metadata lacks extra {extra}")
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    required = [
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "src/breaker_machines/__init__.py",
        "src/breaker_machines/py.typed",
        "tests/conftest.py",
        "properties",
        "docs/design.md",
    ]
    return [
        f"sdist lacks {n}"
        for n in required
        if n not in names and not any(m.startswith(n + "/") for m in names)
    ]


def main() -> int:
    wheel, sdist = map(Path, sys.argv[1:3])
    problems = check_wheel(wheel) + check_sdist(sdist)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{wheel.name} and {sdist.name}: contents as expected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
