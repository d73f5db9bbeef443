"""Shared fixtures: every async test runs under asyncio and under trio."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pytest

from breaker_machines.storage import SharedStorage

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

#: Opens one more storage on the same shared data: another process's view of it.
Opener = Callable[[], AbstractAsyncContextManager[SharedStorage]]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per backend."""
    return str(request.param)


class FakeClock:
    """A clock the test moves by hand: ``clock.now`` seconds, ``clock.advance(s)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock."""
    return FakeClock()


@pytest.fixture(params=["redis", "postgres"])
def open_storage(request: pytest.FixtureRequest) -> Opener:
    """Opens one more storage on the same shared data (another process's view of it), on
    Redis and on PostgreSQL. The runners' timers are an hour away: tests sync by hand."""
    settings: dict[str, Any] = {"flush_interval": 3600.0, "refresh_interval": 3600.0}
    if request.param == "redis":
        from breaker_machines.storage import RedisStorage

        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        return lambda: RedisStorage(url, prefix=prefix, **settings)
    from breaker_machines.storage import PostgresStorage

    dsn = request.getfixturevalue("postgres_dsn")
    schema = request.getfixturevalue("postgres_schema")
    return lambda: PostgresStorage(dsn, schema=schema, **settings)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An OpenTelemetry SDK reader that metrics are read back through (the test is
    skipped without the SDK)."""
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    return export.InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    """An OpenTelemetry SDK meter provider that exports to ``reader``."""
    from opentelemetry.sdk.metrics import MeterProvider

    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()
