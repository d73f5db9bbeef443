"""Small pieces many tests share: a failing dependency and a healthy one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from breaker_machines import Breaker, Reason, State
from breaker_machines.compat.pybreaker import CircuitBreakerStorage
from breaker_machines.storage import Proposal


class Boom(Exception):
    """The protected dependency's own failure."""


async def fail(message: str = "upstream down") -> None:
    """A dependency call that fails with :class:`Boom`."""
    raise Boom(message)


async def succeed() -> str:
    """A dependency call that answers ``"ok"``."""
    return "ok"


async def trip(breaker: Breaker) -> None:
    """Fail calls through ``breaker`` until its circuit opens."""
    while breaker.state is not State.OPEN:
        with pytest.raises(Boom):
            await breaker.call(fail)


def forced(status: State, reason: Reason, origin: str = "test") -> Proposal:
    """A proposal from version 0 to version 1 (trip 1) that moves a breaker to ``status``
    (open for 30 s when that is OPEN)."""
    open_for = 30.0 if status is State.OPEN else None
    return Proposal(status, 1, 1, reason, 0.0, open_for, origin)


#: An OpenTelemetry data point's metric name and attributes.
Key = tuple[str, frozenset[tuple[str, Any]]]


def collect(reader: Any) -> dict[Key, Any]:
    """Every data point an OpenTelemetry SDK ``InMemoryMetricReader`` holds: (metric,
    attributes) -> value, or (count, sum) for histograms."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    from breaker_machines.otel import METER_NAME

    points: dict[Key, Any] = {}
    data = reader.get_metrics_data()
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == METER_NAME
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset(dict(point.attributes or {}).items()))
                    if isinstance(point, HistogramDataPoint):
                        points[key] = (point.count, point.sum)
                    else:
                        points[key] = point.value
    return points


# --------------------------------------------------------------------------- the CLI

#: Every wait on the CLI is bounded (a CLI run is a Python start-up, plus a round trip or
#: two).
CLI_LIMIT = 30

#: The installed ``breaker-machines`` script.
SCRIPT = Path(sys.executable).parent / "breaker-machines"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the storage variables the command reads."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BREAKER_MACHINES_REDIS_URL", "BREAKER_MACHINES_POSTGRES_DSN")
    }
    env.update(extra)
    return env


@asynccontextmanager
async def watching(
    *args: str, script: bool = False, stderr: int = subprocess.DEVNULL
) -> AsyncGenerator[tuple[anyio.abc.Process, BufferedByteReceiveStream], None]:
    """``watch`` running; the process and its stdout, read line by line (its stderr goes
    where ``stderr`` says: ``subprocess.PIPE`` to read it)."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "breaker_machines"]
    process = await anyio.open_process([*command, "watch", *args], env=clean_env(), stderr=stderr)
    try:
        assert process.stdout is not None
        yield process, BufferedByteReceiveStream(process.stdout)
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.aclose()


async def line(stream: BufferedByteReceiveStream) -> str:
    """The next line ``stream`` brings."""
    with anyio.fail_after(CLI_LIMIT):
        return (await stream.receive_until(b"\n", 1 << 20)).decode()


# --------------------------------------------------------------------------- compat


class HandStorage(CircuitBreakerStorage):
    """A pybreaker-layer storage of the application's own (a record in memory) that the
    test controls: it may set ``record`` by hand (what another process, or a damaged store,
    left there); with ``down`` set every compare-and-set raises, and every read too if
    ``unreadable_when_down`` (a store unreachable, rather than one that reads but can no
    longer be written). ``writes`` counts the records written."""

    def __init__(
        self, name: str, record: str | None = None, *, unreadable_when_down: bool = False
    ) -> None:
        super().__init__(name)
        self.record = record
        self.down = False
        self.unreadable_when_down = unreadable_when_down
        self.writes = 0

    def read(self) -> str | None:
        if self.down and self.unreadable_when_down:
            raise ConnectionError("unreachable")
        return self.record

    def compare_and_set(self, expected: str | None, record: str) -> tuple[bool, str | None]:
        if self.down:
            raise ConnectionError("unreachable" if self.unreadable_when_down else "read-only")
        if self.record != expected:
            return False, self.record
        self.record = record
        self.writes += 1
        return True, None
