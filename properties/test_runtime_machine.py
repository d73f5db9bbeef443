"""The public stateful machine against the memory storage, under asyncio and trio."""

from __future__ import annotations

import pytest
from hypothesis import settings

from breaker_machines import MemoryStorage
from breaker_machines.testing import breaker_machine

_BACKENDS = ["asyncio", "trio"]


@pytest.mark.parametrize("backend", _BACKENDS)
def test_memory_storage(backend: str) -> None:
    machine = breaker_machine(MemoryStorage, backend=backend)
    machine.TestCase.settings = settings(
        settings.default, stateful_step_count=40, max_examples=settings.default.max_examples // 2
    )
    machine.TestCase().runTest()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_memory_storage_with_rate_rules(backend: str) -> None:
    machine = breaker_machine(
        MemoryStorage,
        backend=backend,
        consecutive_failures=None,
        failure_rate=0.5,
        minimum_calls=4,
        window=20,
        half_open_probes=1,
        success_threshold=1,
    )
    machine.TestCase.settings = settings(
        settings.default, stateful_step_count=40, max_examples=settings.default.max_examples // 2
    )
    machine.TestCase().runTest()
