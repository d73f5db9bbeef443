"""examples/asgi_service runs under uvicorn (asyncio) and hypercorn (trio) and does what it says.

Each test starts the service as a subprocess on a free loopback port and drives it with
httpx, under both anyio backends: 2 servers x 2 client backends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "asgi_service"
RESET_AFTER = 0.5
STARTUP_DEADLINE = 20.0


def _command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "service:app",
        ]
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "--worker-class",
        "trio",
        "--bind",
        f"127.0.0.1:{port}",
        f"{EXAMPLE / 'service'}:app",
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Service:
    """A running service: its base URL and its log (for failure messages)."""

    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(params=["uvicorn", "hypercorn"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """The example service under one server, terminated however the test ends."""
    server = str(request.param)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        UPSTREAM_URL=f"{url}/upstream",
        MONITORING_URL=f"{url}/monitoring/alerts",
        RESET_AFTER=str(RESET_AFTER),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / f"{server}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            _command(server, port), stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    running = Service(url, log)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not _accepts(port):
            if process.poll() is not None:
                pytest.fail(f"{server} exited with {process.returncode}:\n{running.output()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{server} did not listen within {STARTUP_DEADLINE}s:\n{running.output()}"
                )
            time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


CACHED = {"data": [1, 2, 3], "error": "Service temporarily unavailable", "cached": True}
FRESH = {"data": [1, 2, 3], "cached": False}


@pytest.mark.anyio
async def test_breaker_protects_the_service(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        for _ in range(2):
            answer = await http.get("/data")
            assert answer.status_code == 200, service.output()
            assert answer.json() == FRESH

        failing = await http.post("/upstream/control", json={"healthy": False})
        assert failing.json() == {"healthy": False}
        answers = [(await http.get("/data")).json() for _ in range(7)]
        assert answers == [CACHED] * 7  # 5 failures, then rejections: the fallback answers
        state = (await http.get("/breaker")).json()
        assert state["state"] == "open"
        assert (state["successes"], state["failures"], state["rejections"]) == (2, 5, 2)

        # The alert was posted from the breaker's runner; wait (server side) for it.
        alerts = (await http.get("/monitoring/alerts", params={"wait": 10})).json()
        assert [(alert["circuit"], alert["status"]) for alert in alerts] == [
            ("external_api", "open")
        ], service.output()

        healed = await http.post("/upstream/control", json={"healthy": True})
        assert healed.json() == {"healthy": True}
        # Wait out reset_after: the server's retry_after, measured after it opened.
        retry_after = (await http.get("/breaker")).json()["retry_after"]
        assert 0.0 <= retry_after <= RESET_AFTER
        await anyio.sleep(retry_after + 0.05)
        probe = await http.get("/data")
        assert probe.json() == FRESH, service.output()
        assert (await http.get("/breaker")).json()["state"] == "closed"
        assert (await http.get("/data")).json() == FRESH
