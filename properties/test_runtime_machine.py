"""The public stateful machine against every storage, under asyncio and trio.

The configurations are the backend matrix's (``properties/machine_matrix.py``); ``nox -s
matrix`` runs the same ones and prints how many examples and steps each ran.
"""

from __future__ import annotations

import pytest

from machine_matrix import BACKENDS, CASES, Case, run, storage_factory


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_machine(case: Case, backend: str, request: pytest.FixtureRequest) -> None:
    redis = postgres = ("", "")
    if case.storage == "redis":
        redis = (request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    elif case.storage == "postgres":
        postgres = (
            request.getfixturevalue("postgres_dsn"),
            request.getfixturevalue("postgres_schema"),
        )
    tally = run(case, backend, storage_factory(case, redis=redis, postgres=postgres))
    assert tally.examples > 0
    assert tally.steps > 0
