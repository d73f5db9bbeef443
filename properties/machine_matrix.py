"""The backend matrix: the public stateful machine (``breaker_machines.testing``) against
every storage, under asyncio and trio.

One table of configurations serves ``properties/test_runtime_machine.py`` (one pytest test
per configuration and backend) and ``scripts/backend_matrix.py`` (``nox -s matrix``: the
same runs, with a printed table of how many examples and steps each ran).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis.stateful import invariant

from breaker_machines import MemoryStorage
from breaker_machines.storage import PostgresStorage, RedisStorage
from breaker_machines.testing import breaker_machine

BACKENDS = ("asyncio", "trio")
STORAGES = ("memory", "redis", "postgres")

#: Rate rules as well as the consecutive-failure rule.
_RATES: dict[str, Any] = {
    "consecutive_failures": None,
    "failure_rate": 0.5,
    "minimum_calls": 4,
    "half_open_probes": 1,
    "success_threshold": 1,
}


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a storage, how many breakers share it, breaker options."""

    name: str
    storage: str
    peers: int = 1
    options: dict[str, Any] = field(default_factory=dict[str, Any])
    #: Examples run, as a fraction of the profile's max_examples (shared storages are slow).
    share: int = 2
    steps: int = 40


CASES: tuple[Case, ...] = (
    Case("memory", "memory"),
    Case("memory, rate rules", "memory", options={**_RATES, "window": 20}),
    Case("redis", "redis", share=8, steps=30),
    Case("redis, two breakers agree", "redis", peers=2, share=8, steps=30),
    Case(
        "redis, two breakers, rate rules",
        "redis",
        peers=2,
        options={**_RATES, "window": 20, "failures": 5, "within": 30},
        share=8,
        steps=30,
    ),
    Case("postgres", "postgres", share=8, steps=30),
    Case("postgres, two breakers agree", "postgres", peers=2, share=8, steps=30),
    Case(
        "postgres, two breakers, rate rules",
        "postgres",
        peers=2,
        options={**_RATES, "window_calls": 20, "failures": 5, "within": 30},
        share=8,
        steps=30,
    ),
)


def storage_factory(case: Case, *, redis: tuple[str, str], postgres: tuple[str, str]) -> Any:
    """What makes the case's storage: ``redis`` is (url, prefix), ``postgres`` (dsn, schema).

    Shared storages get a long flush interval: batches move when the machine syncs, or when
    a transition or a probe needs it, as in a busy process.
    """
    if case.storage == "memory":
        return MemoryStorage
    if case.storage == "redis":
        url, prefix = redis

        def make_redis() -> RedisStorage:
            return RedisStorage(url, prefix=prefix, ttl=600, flush_interval=3600, timeout=5)

        return make_redis
    dsn, schema = postgres

    def make_postgres() -> PostgresStorage:
        return PostgresStorage(dsn, schema=schema, flush_interval=3600, timeout=5)

    return make_postgres


@dataclass
class Tally:
    """What one run did: examples (machines built), steps (rules run), seconds, and
    whether it passed (None while it runs)."""

    examples: int = 0
    steps: int = 0
    seconds: float = 0.0
    passed: bool | None = None


def table() -> list[str]:
    """The matrix as lines of text: a row per configuration, a column per backend."""
    width = max(len(case.name) for case in CASES)
    lines = [f"{'configuration':<{width}}  " + "  ".join(f"{b:<28}" for b in BACKENDS)]
    for case in CASES:
        cells = []
        for backend in BACKENDS:
            tally = RESULTS.get((case.name, backend))
            if tally is None:
                cells.append(f"{'not run':<28}")
                continue
            verdict = {True: "ok", False: "FAILED", None: "?"}[tally.passed]
            cell = f"{verdict} {tally.examples} ex, {tally.steps} steps, {tally.seconds:.1f}s"
            cells.append(f"{cell:<28}")
        lines.append(f"{case.name:<{width}}  " + "  ".join(cells))
    return lines


#: What the runs of this process did, for the printed matrix: (case, backend) -> tally.
RESULTS: dict[tuple[str, str], Tally] = {}


def run(case: Case, backend: str, factory: Callable[[], Any]) -> Tally:
    """Run the machine for ``case`` under ``backend``; raise what Hypothesis raises."""
    base = breaker_machine(factory, backend=backend, peers=case.peers, **case.options)
    tally = Tally()
    RESULTS[case.name, backend] = tally

    class Counted(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            super().__init__()
            tally.examples += 1

        @invariant()
        def count_steps(self) -> None:  # runs after the set-up and after every step
            tally.steps += 1

    default = settings.default
    assert default is not None
    Counted.TestCase.settings = settings(
        default,
        stateful_step_count=case.steps,
        max_examples=max(1, default.max_examples // case.share),
    )
    started = time.perf_counter()
    try:
        Counted.TestCase().runTest()
    except BaseException:
        tally.passed = False
        raise
    else:
        tally.passed = True
    finally:
        tally.seconds = time.perf_counter() - started
        tally.steps -= tally.examples  # the invariant also ran once after each set-up
    return tally


__all__ = [
    "BACKENDS",
    "CASES",
    "RESULTS",
    "STORAGES",
    "Case",
    "Tally",
    "run",
    "storage_factory",
    "table",
]
