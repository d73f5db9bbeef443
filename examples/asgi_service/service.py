"""A Starlette service calling a flaky upstream through a breaker (BreakerMachines' Falcon
example, in Python). The same code serves under asyncio and under trio::

    uvicorn --app-dir examples/asgi_service service:app                      # asyncio
    hypercorn --worker-class trio --bind 127.0.0.1:8000 examples/asgi_service/service:app

(see README.md beside this file). One process holds three apps, so the demo needs nothing
else running:

* ``GET /data``: the service. It fetches ``UPSTREAM_URL/data`` through the ``external_api``
  breaker (5 failures within 60 s open it; each call gets 3 s). While the upstream fails,
  and while the circuit is open, the fallback answers with the last good data, marked
  ``"cached": true``. When the circuit opens, an async ``on_open`` alert posts to
  ``MONITORING_URL``; it runs in the breaker's runner (started in the lifespan), so no
  request waits for it.
* ``/upstream/data``: the flaky upstream; ``POST /upstream/control`` with
  ``{"healthy": false}`` makes it fail (503), ``{"healthy": true}`` heals it.
* ``/monitoring/alerts``: a stand-in monitoring service: ``POST`` records an alert, ``GET``
  lists them (``?wait=5`` waits up to 5 s for the first one).
* ``GET /breaker``: the breaker's state and counters.

Environment: ``UPSTREAM_URL`` (default ``http://127.0.0.1:8000/upstream``),
``MONITORING_URL`` (default ``http://127.0.0.1:8000/monitoring/alerts``) and
``RESET_AFTER`` (seconds before a probe is let through; default 30).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from breaker_machines import Breaker, Transition, running


@dataclass
class Settings:
    """What the environment configures."""

    upstream_url: str = "http://127.0.0.1:8000/upstream"
    monitoring_url: str = "http://127.0.0.1:8000/monitoring/alerts"
    reset_after: float = 30.0

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``UPSTREAM_URL``, ``MONITORING_URL`` and ``RESET_AFTER``."""
        defaults = cls()
        return cls(
            upstream_url=os.environ.get("UPSTREAM_URL", defaults.upstream_url).rstrip("/"),
            monitoring_url=os.environ.get("MONITORING_URL", defaults.monitoring_url),
            reset_after=float(os.environ.get("RESET_AFTER", defaults.reset_after)),
        )


@dataclass
class Monitoring:
    """The stand-in monitoring service's inbox."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    arrived: anyio.Event | None = None  # made in the lifespan, inside the event loop


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the service, its flaky upstream and the monitoring stand-in."""
    settings = settings or Settings.from_env()
    upstream = {"healthy": True}
    monitoring = Monitoring()
    last_good: dict[str, Any] = {"data": []}
    client: httpx.AsyncClient | None = None

    async def alert(transition: Transition) -> None:
        """Post to monitoring. Runs in the breaker's runner: no request waits for it."""
        assert client is not None
        payload = {
            "circuit": transition.breaker,
            "status": transition.target.value,
            "reason": transition.reason.value,
        }
        with anyio.move_on_after(5):  # an unreachable monitoring service is not our outage
            await client.post(settings.monitoring_url, json=payload)

    def cached(error: BaseException) -> dict[str, Any]:
        return {**last_good, "error": "Service temporarily unavailable", "cached": True}

    breaker = Breaker(
        "external_api",
        failures=5,
        within=60,
        reset_after=settings.reset_after,
        timeout=3,
        fallback=cached,
        on_open=alert,
    )

    async def fetch_data() -> dict[str, Any]:
        assert client is not None
        response = await client.get(f"{settings.upstream_url}/data")
        response.raise_for_status()  # a 5xx is a failure of the upstream
        answer: dict[str, Any] = response.json()
        last_good.clear()
        last_good.update(answer)
        return {**answer, "cached": False}

    # -- the service

    async def data(request: Request) -> JSONResponse:
        return JSONResponse(await breaker.call(fetch_data))

    async def breaker_state(request: Request) -> JSONResponse:
        stats = breaker.stats()
        return JSONResponse(
            {
                "state": stats.state.value,
                "retry_after": stats.retry_after,
                "successes": stats.successes,
                "failures": stats.failures,
                "rejections": stats.rejections,
            }
        )

    # -- the flaky upstream

    async def upstream_data(request: Request) -> JSONResponse:
        if not upstream["healthy"]:
            return JSONResponse({"detail": "upstream is failing"}, status_code=503)
        return JSONResponse({"data": [1, 2, 3]})

    async def upstream_control(request: Request) -> JSONResponse:
        body = await request.json()
        upstream["healthy"] = bool(body["healthy"])
        return JSONResponse(upstream)

    # -- the monitoring stand-in

    async def monitoring_alerts(request: Request) -> JSONResponse:
        if request.method == "POST":
            monitoring.alerts.append(await request.json())
            if monitoring.arrived is not None:
                monitoring.arrived.set()
            return JSONResponse({"received": len(monitoring.alerts)}, status_code=202)
        wait = float(request.query_params.get("wait", 0))
        if wait > 0 and not monitoring.alerts and monitoring.arrived is not None:
            with anyio.move_on_after(min(wait, 30)):
                await monitoring.arrived.wait()
        return JSONResponse(monitoring.alerts)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal client
        monitoring.arrived = anyio.Event()
        # The client's own timeout is a backstop: the breaker's (3 s) decides first.
        async with httpx.AsyncClient(timeout=10) as http:
            client = http
            async with running(breaker):  # the runner: async callbacks, on-time half-open
                yield
            client = None

    return Starlette(
        routes=[
            Route("/data", data),
            Route("/breaker", breaker_state),
            Route("/upstream/data", upstream_data),
            Route("/upstream/control", upstream_control, methods=["POST"]),
            Route("/monitoring/alerts", monitoring_alerts, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


app = create_app()
