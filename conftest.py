"""Fixtures for the servers the storage tests use (shared by ``tests/`` and ``properties/``).

Redis is expected at ``BREAKER_MACHINES_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
PostgreSQL at ``BREAKER_MACHINES_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
Locally, a test that needs a server skips when it does not answer; under CI (``CI`` set
to anything but ``false``/``0``) an unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("BREAKER_MACHINES_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "BREAKER_MACHINES_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _answers(url: str, default_port: int) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        address = (parts.hostname or "127.0.0.1", parts.port or default_port)
        with socket.create_connection(address, 2):
            return True
    except OSError:
        return False


def _require(url: str, default_port: int, what: str) -> None:
    if _answers(url, default_port):
        return
    message = f"{what} does not answer at {url}"
    if _under_ci():
        pytest.fail(f"{message}: CI needs it (a backend that cannot be reached fails)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the shared Redis server (fails under CI when it is unreachable)."""
    if not _under_ci():
        pytest.importorskip("redis")
    _require(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix for one test; its keys are deleted afterwards."""
    import redis

    prefix = f"bm-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of the shared PostgreSQL server (fails under CI when it is unreachable)."""
    if not _under_ci():
        pytest.importorskip("asyncpg")
    _require(POSTGRES_DSN, 5432, "PostgreSQL")
    return POSTGRES_DSN


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema name for one test; the schema is dropped afterwards."""
    import asyncio

    import asyncpg

    schema = f"bm_test_{uuid.uuid4().hex[:12]}"
    yield schema

    async def drop() -> None:
        connection = await asyncpg.connect(postgres_dsn)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(drop())
