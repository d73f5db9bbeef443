"""The public stateful machine against every storage, under asyncio and trio."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings

from breaker_machines import MemoryStorage
from breaker_machines.storage import PostgresStorage, RedisStorage
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


# --------------------------------------------------------------------------- Redis


def _redis(url: str, prefix: str) -> Callable[[], RedisStorage]:
    def factory() -> RedisStorage:
        # A long flush interval: batches move when the machine syncs, or when a
        # transition or a probe needs it, as in a busy process.
        return RedisStorage(url, prefix=prefix, ttl=600, flush_interval=3600, timeout=5)

    return factory


def _fewer() -> settings:
    return settings(
        settings.default, stateful_step_count=30, max_examples=settings.default.max_examples // 8
    )


@pytest.mark.parametrize("backend", _BACKENDS)
def test_redis_storage(backend: str, redis_url: str, redis_prefix: str) -> None:
    machine = breaker_machine(_redis(redis_url, redis_prefix), backend=backend)
    machine.TestCase.settings = _fewer()
    machine.TestCase().runTest()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_redis_storage_two_breakers_agree(backend: str, redis_url: str, redis_prefix: str) -> None:
    machine = breaker_machine(_redis(redis_url, redis_prefix), backend=backend, peers=2)
    machine.TestCase.settings = _fewer()
    machine.TestCase().runTest()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_redis_storage_two_breakers_with_rate_rules(
    backend: str, redis_url: str, redis_prefix: str
) -> None:
    machine = breaker_machine(
        _redis(redis_url, redis_prefix),
        backend=backend,
        peers=2,
        consecutive_failures=None,
        failure_rate=0.5,
        minimum_calls=4,
        window=20,
        failures=5,
        within=30,
        half_open_probes=1,
        success_threshold=1,
    )
    machine.TestCase.settings = _fewer()
    machine.TestCase().runTest()


# --------------------------------------------------------------------------- PostgreSQL


def _postgres(dsn: str, schema: str) -> Callable[[], PostgresStorage]:
    def factory() -> PostgresStorage:
        return PostgresStorage(dsn, schema=schema, flush_interval=3600, timeout=5)

    return factory


@pytest.mark.parametrize("backend", _BACKENDS)
def test_postgres_storage(backend: str, postgres_dsn: str, postgres_schema: str) -> None:
    machine = breaker_machine(_postgres(postgres_dsn, postgres_schema), backend=backend)
    machine.TestCase.settings = _fewer()
    machine.TestCase().runTest()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_postgres_storage_two_breakers_agree(
    backend: str, postgres_dsn: str, postgres_schema: str
) -> None:
    machine = breaker_machine(_postgres(postgres_dsn, postgres_schema), backend=backend, peers=2)
    machine.TestCase.settings = _fewer()
    machine.TestCase().runTest()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_postgres_storage_two_breakers_with_rate_rules(
    backend: str, postgres_dsn: str, postgres_schema: str
) -> None:
    machine = breaker_machine(
        _postgres(postgres_dsn, postgres_schema),
        backend=backend,
        peers=2,
        consecutive_failures=None,
        failure_rate=0.5,
        minimum_calls=4,
        window_calls=20,
        failures=5,
        within=30,
        half_open_probes=1,
        success_threshold=1,
    )
    machine.TestCase.settings = _fewer()
    machine.TestCase().runTest()
