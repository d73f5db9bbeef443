"""Hypothesis profiles for the property suites.

* ``dev`` (the default): quick enough to run on every change; keeps the example database
  (``.hypothesis/``) so a failure found once is replayed first next time, and prints the
  ``@reproduce_failure`` blob of a failure.
* ``ci``: more examples (250), derandomized (every CI run tests the same examples), no
  database, and the reproduction blob printed on failure.
* ``quick``: ``ci`` with 100 examples, for the runs that repeat what ``ci`` already checked
  (under coverage tracing, against the built wheel): deterministic, so a coverage figure
  does not depend on the draw.

Pick one with ``HYPOTHESIS_PROFILE=dev|ci|quick``; when it is unset, ``CI=true`` (what GitHub
Actions and most CI services export) selects ``ci``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    print_blob=True,
)
settings.register_profile(
    "ci",
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

settings.register_profile(
    "quick",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _profile_name() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI", "").strip().lower() == "true" else "dev"


settings.load_profile(_profile_name())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After a run that ran the stateful machine: the backend matrix, with example counts."""
    from machine_matrix import RESULTS, table

    if not RESULTS:
        return
    profile = _profile_name()
    examples = settings.default.max_examples
    terminalreporter.section(f"backend matrix: Hypothesis profile {profile!r} ({examples} max)")
    for line in table():
        terminalreporter.write_line(line)
