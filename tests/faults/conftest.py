"""Fixtures of the fault-injection suite: private servers, one of each backend per session.

Every async test runs under asyncio and under trio (``anyio_backend`` of
``tests/conftest.py``). The servers are started once per session on free loopback ports
(never the shared 6379/5432) and closed at the end. ``fault_server`` hands one to a test
and, whatever the test did to it (killed, paused, stopped), leaves it running and resumed
for the next one. Without ``redis-server`` or the PostgreSQL binaries the tests of that
backend skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from breaker_machines import Policy
from breaker_machines.storage import Batch

from .servers import FaultServer, RedisServer

try:
    from .postgres_server import PostgresServer, find_bindir
except ImportError as error:  # pragma: no cover - written by another change
    PostgresServer = None  # type: ignore[assignment,misc]
    _POSTGRES_MISSING = f"tests/faults/postgres_server.py is not usable yet ({error})"
else:
    _POSTGRES_MISSING = "" if find_bindir() is not None else "no PostgreSQL binaries found"


def _unavailable(message: str) -> None:
    """Skip locally; under CI (``CI`` set, as for the shared servers) fail instead."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message}: CI needs it for the fault-injection suite")
    pytest.skip(message)


def _warm(server: FaultServer) -> None:
    """One operation with a generous timeout: creates the PostgreSQL schema before tests
    run with 0.2 s timeouts (its DDL may take longer than that on a fresh cluster)."""

    async def warm() -> None:
        async with server.storage(server.url(), timeout=30.0) as storage:
            await storage.flush("warm-up", Policy(), Batch(0))

    anyio.run(warm)


def _own(server: Any, request: pytest.FixtureRequest) -> Any:
    """Start ``server`` for the session; it is closed (killed if need be) at the end."""
    request.addfinalizer(server.close)
    server.start()
    _warm(server)
    return server


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> RedisServer:
    """A private redis-server for the session (no persistence)."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    return _own(RedisServer(), request)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Any:
    """A private PostgreSQL cluster for the session."""
    if PostgresServer is None or _POSTGRES_MISSING:
        _unavailable(_POSTGRES_MISSING)
    return _own(PostgresServer(), request)


@pytest.fixture(params=["redis", "postgres"])
def fault_server(request: pytest.FixtureRequest) -> Iterator[FaultServer]:
    """Each backend's server, running and resumed before and after the test."""
    server: FaultServer = request.getfixturevalue(f"{request.param}_server")
    _revive(server)
    try:
        yield server
    finally:
        _revive(server)


def _revive(server: FaultServer) -> None:
    server.resume()
    if not server.running:
        server.start()
