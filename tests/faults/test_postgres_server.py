"""The throwaway PostgreSQL cluster of the fault tests (``postgres_server.PostgresServer``)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from breaker_machines.storage import PostgresStorage

from .postgres_server import PostgresServer, find_bindir, port_is_free

asyncpg = pytest.importorskip("asyncpg")


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb once); each test leaves it running."""
    if find_bindir() is None:
        message = "no PostgreSQL binaries (initdb, postgres) on this machine"
        if _under_ci():
            pytest.fail(message)
        pytest.skip(message)
    with PostgresServer() as started:
        yield started


@pytest.fixture
def pg(server: PostgresServer) -> Iterator[PostgresServer]:
    """The module's server, running and thawed again after the test whatever it did."""
    server.start()
    yield server
    if server.paused:
        server.resume()
    server.start()


def fetch(url: str, sql: str, *, timeout: float = 5.0) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        connection = await asyncpg.connect(url, timeout=timeout)
        try:
            return [tuple(row) for row in await connection.fetch(sql, timeout=timeout)]
        finally:
            await connection.close(timeout=timeout)

    return asyncio.run(run())


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_starts_and_answers(pg: PostgresServer) -> None:
    assert pg.port != 5432
    assert pg.backend == "postgres"
    assert pg.url() == f"postgresql://postgres@127.0.0.1:{pg.port}/test"
    assert pg.url(1234) == "postgresql://postgres@127.0.0.1:1234/test"
    rows = fetch(pg.url(), "SELECT current_database(), current_setting('data_directory')")
    assert rows == [("test", str(pg.data_dir))]
    assert pg.query("SELECT 1 + 1, NULL") == [("2", None)]
    assert pg.pid in pg.processes()
    storage = pg.storage(pg.url(), timeout=0.5, schema="faults")
    assert isinstance(storage, PostgresStorage)
    assert (storage.timeout, storage.schema) == (0.5, "faults")


def test_kill_then_restart_keeps_committed_rows(pg: PostgresServer) -> None:
    pg.query("DROP TABLE IF EXISTS kept; CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")

    async def kill_under_a_connection() -> int:
        connection = await asyncpg.connect(pg.url(), timeout=5)
        try:
            backend = int(await connection.fetchval("SELECT pg_backend_pid()"))
            processes = pg.processes()
            assert backend in processes
            pg.kill()
            assert all(gone(pid) for pid in processes)  # the backends too, not only the postmaster
            return backend
        finally:
            connection.terminate()

    asyncio.run(kill_under_a_connection())
    assert not pg.running
    assert refused(pg.port)
    assert port_is_free(pg.port)
    port = pg.port
    pg.restart(keep_data=True)
    assert pg.port == port
    assert fetch(pg.url(), "SELECT v FROM kept") == [(42,)]


def test_restart_without_data_is_empty(pg: PostgresServer) -> None:
    pg.query("DROP TABLE IF EXISTS dropped; CREATE TABLE dropped (v int)")
    port = pg.port
    pg.restart(keep_data=False)
    assert pg.port == port
    assert fetch(pg.url(), "SELECT to_regclass('public.dropped')") == [(None,)]
    assert fetch(pg.url(), "SELECT current_database()") == [("test",)]


def test_stop_then_start(pg: PostgresServer) -> None:
    pg.query("DROP TABLE IF EXISTS stopped; CREATE TABLE stopped (v int)")
    pg.stop()
    assert not pg.running
    assert pg.processes() == []
    assert port_is_free(pg.port)
    assert "database system is shut down" in pg.log_tail(5)
    pg.start()
    assert pg.query("SELECT to_regclass('public.stopped') IS NOT NULL") == [("t",)]


def test_pause_then_resume(pg: PostgresServer) -> None:
    pg.pause()
    assert pg.paused
    with pytest.raises((TimeoutError, asyncio.TimeoutError, OSError)):
        fetch(pg.url(), "SELECT 1", timeout=0.5)
    pg.resume()
    assert not pg.paused
    assert fetch(pg.url(), "SELECT 1", timeout=5) == [(1,)]


def test_stop_while_paused_and_kill_are_idempotent(pg: PostgresServer) -> None:
    pg.pause()
    pg.stop()  # thaws first, then shuts down
    assert not pg.running
    assert not pg.paused
    pg.stop()
    pg.kill()
    pg.start()
    assert pg.query("SELECT 1") == [("1",)]


def test_close_removes_everything() -> None:
    if find_bindir() is None:
        pytest.skip("no PostgreSQL binaries")
    server = PostgresServer()
    server.start()
    root, port = server.root, server.port
    server.kill()  # an unclean end: close must still clean up
    server.close()
    server.close()
    assert not root.exists()
    assert port_is_free(port)
    with pytest.raises(RuntimeError, match="closed"):
        server.start()
