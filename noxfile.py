"""Development sessions: ``nox -s tests lint typecheck coverage``.

``tests`` runs on every supported Python found on this machine (``python3.X`` on PATH, or a
pyenv install under ``~/.pyenv/versions``). Set ``HYPOTHESIS_PROFILE=ci`` for the heavier,
derandomised Hypothesis profile that ``.ci/run`` uses.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "lint", "typecheck", "coverage"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]
CORE_COVERAGE = 100
#: A ratchet under the package's branch coverage (98.7% measured over the whole suite,
#: subprocesses included): it may not fall back. The goal was 95% (docs/verification.md).
PACKAGE_COVERAGE = 98


def _available(version: str) -> bool:
    """Is ``python{version}`` runnable? Puts a pyenv install of it on PATH when needed."""
    on_path = shutil.which(f"python{version}")
    if on_path and "/shims/" not in on_path:
        return True
    home = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(glob.glob(str(home / "versions" / f"{version}.*" / "bin" / f"python{version}")))
    if not found:
        return False
    os.environ["PATH"] = f"{Path(found[-1]).parent}{os.pathsep}{os.environ['PATH']}"
    return True


PYTHONS = [version for version in SUPPORTED if _available(version)]


def _install(session: nox.Session, *groups: str, extras: str = "trio,redis,postgres,otel") -> None:
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))
    session.install("-e", f".[{extras}]" if extras else ".")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """pytest over tests/ and properties/."""
    _install(session, "test")
    session.run("python", "-m", "pytest", "tests", "properties", *session.posargs)


@nox.session(python=PYTHONS[:1] or None)
def matrix(session: nox.Session) -> None:
    """The backend matrix: the public stateful machine against memory, Redis and PostgreSQL,
    each under asyncio and trio; prints examples and steps per cell. ``.ci/run`` runs it with
    the ``ci`` Hypothesis profile (``HYPOTHESIS_PROFILE=ci nox -s matrix``)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", "properties/test_runtime_machine.py", *session.posargs)


@nox.session(python=PYTHONS[:1] or None)
def mutation(session: nox.Session) -> None:
    """Mutation testing of ``_core`` (mutmut; ``[tool.mutmut]`` in pyproject.toml): each
    mutant runs the core's tests and properties (``quick`` profile) that reach it. Slow (see
    docs/verification.md), so not part of ``.ci/run``. ``-- --max-children N`` in parallel."""
    _install(session, "test")
    session.install("mutmut>=3.3")
    session.env["HYPOTHESIS_PROFILE"] = "quick"
    session.run("mutmut", "run", *session.posargs)
    session.run("python", "scripts/mutation_score.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    paths = [
        "src",
        "tests",
        "properties",
        "benchmarks",
        "scripts",
        "examples",
        "noxfile.py",
        "conftest.py",
    ]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict and pyright (strict) on src/ and the typing tests."""
    _install(session, "typecheck", "test")
    session.run("mypy", "--strict", "src")
    session.run("mypy", "--strict", "tests/typing")
    session.run("pyright", "src")
    session.run("pyright", "-p", "tests/typing")


@nox.session
def coverage(session: nox.Session) -> None:
    """Branch coverage: 100% of the core is required; the package may not fall under the
    ratchet (``PACKAGE_COVERAGE``)."""
    _install(session, "test")
    # The properties ran with the heavier "ci" profile in the tests sessions. Everything
    # else runs as there, the fault tests included (they pass under tracing: their
    # deadlines are generous against the servers' faults, not tight against the code), and
    # subprocesses (the CLI, examples, fleet workers) are measured too (`patch` in
    # pyproject.toml), so their data files are combined before the reports.
    session.env["HYPOTHESIS_PROFILE"] = "quick"
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "tests", "properties", "-q", *session.posargs)
    session.run("coverage", "combine", "-q")
    session.run(
        "coverage",
        "report",
        "--include=*/breaker_machines/_core/*",
        f"--fail-under={CORE_COVERAGE}",
    )
    session.run("coverage", "report", f"--fail-under={PACKAGE_COVERAGE}")


@nox.session
def demo(session: nox.Session) -> None:
    """The README's first command: ``python -m breaker_machines demo`` (args pass through)."""
    session.install("-e", ".[trio]")
    session.run("python", "-m", "breaker_machines", "demo", *session.posargs)


@nox.session
def docs_check(session: nox.Session) -> None:
    """Fail if docs/design.md's generated state diagram and tables are stale."""
    session.install("-e", ".")
    session.run("python", "scripts/state_diagram.py", "--check")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: ``mkdocs build --strict`` (any warning fails) into site/."""
    _install(session, "docs")
    session.env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about MkDocs 2
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)


@nox.session(python=PYTHONS[-1:] or None)
def wheel(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and run the test suite against the wheel.

    The tests import the installed wheel, not ``src/``: they run from a copy of ``tests/``
    and ``properties/`` outside the checkout, so ``src`` cannot shadow the package.
    """
    import tempfile

    session.install("build", "twine")
    dist = Path(tempfile.mkdtemp(prefix="bm-dist-"))
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    session.run("twine", "check", "--strict", *map(str, wheels + sdists))
    session.run("python", str(ROOT / "scripts" / "check_dist.py"), str(wheels[0]), str(sdists[0]))
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"))
    session.install(f"{wheels[0]}[trio,redis,postgres,otel]", "--force-reinstall", "--no-deps")
    session.install(f"{wheels[0]}[trio,redis,postgres,otel]")
    session.install(*nox.project.dependency_groups(PYPROJECT, "typecheck"))
    work = Path(tempfile.mkdtemp(prefix="bm-wheel-tests-")) / "checkout"
    skip = shutil.ignore_patterns(
        "src", ".git", ".venv", ".nox", "site", "mutants", "__pycache__", "*.pyc"
    )
    shutil.copytree(ROOT, work, ignore=skip)
    # The properties already ran with the heavier "ci" profile in the tests sessions; here
    # the question is whether the installed wheel works, so the lighter profile does.
    session.env["HYPOTHESIS_PROFILE"] = "quick"
    with session.chdir(work):
        session.run(
            "python",
            "-c",
            "import breaker_machines, sys; "
            "assert 'site-packages' in breaker_machines.__file__, breaker_machines.__file__; "
            "print('testing', breaker_machines.__file__)",
        )
        # Every public symbol of the installed package has a known type.
        session.run("pyright", "--verifytypes", "breaker_machines", "--ignoreexternal")
        session.run("python", "-m", "pytest", "tests", "properties", "-q", *session.posargs)
