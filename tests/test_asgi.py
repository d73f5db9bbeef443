"""The ASGI middleware and the FastAPI helpers, driven through httpx under both backends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from tests.conftest import FakeClock

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    CircuitTimeoutError,
    ConfigError,
    State,
    ThreadedBreaker,
)
from breaker_machines.asgi import (
    BreakerMiddleware,
    Message,
    Receive,
    Scope,
    Send,
    add_exception_handlers,
    breaker_error_response,
    breaker_for,
    guarded,
    host_of,
)

pytestmark = pytest.mark.anyio


class Upstream:
    """A tiny app whose answer the test sets: a status, or an exception to raise."""

    def __init__(self) -> None:
        self.status = 200
        self.error: Exception | None = None
        self.calls = 0

    async def endpoint(self, request: Request) -> Response:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return PlainTextResponse(f"status {self.status}", status_code=self.status)

    def app(self, **options: Any) -> Starlette:
        app = Starlette(
            routes=[
                Route("/api/data", self.endpoint),
                Route("/health", self.endpoint),
            ]
        )
        app.add_middleware(BreakerMiddleware, **options)
        return app


def client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


# ---------------------------------------------------------------------- the middleware


async def test_successful_routes_pass_through_and_count(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=2, clock=clock)
    upstream = Upstream()
    async with client(upstream.app(breaker=breaker)) as http:
        for _ in range(3):
            response = await http.get("/api/data")
            assert response.status_code == 200
            assert response.text == "status 200"
    assert upstream.calls == 3
    assert breaker.stats().successes == 3
    assert breaker.state is State.CLOSED


async def test_5xx_trips_and_open_answers_503_with_retry_after(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=2, reset_after=10, clock=clock)
    upstream = Upstream()
    upstream.status = 502
    async with client(upstream.app(breaker=breaker)) as http:
        assert (await http.get("/api/data")).status_code == 502
        assert breaker.state is State.CLOSED
        assert (await http.get("/api/data")).status_code == 502
        assert breaker.state is State.OPEN
        clock.advance(2.5)
        rejected = await http.get("/api/data")
    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == "8"  # 7.5 s left, rounded up
    assert rejected.headers["content-type"] == "application/json"
    assert rejected.json() == {"detail": "circuit open"}
    assert upstream.calls == 2  # the rejected request never reached the app
    assert breaker.stats().failures == 2


async def test_4xx_is_a_success_and_failure_status_is_configurable(clock: FakeClock) -> None:
    upstream = Upstream()
    upstream.status = 404
    breaker = Breaker("api", consecutive_failures=1, clock=clock)
    async with client(upstream.app(breaker=breaker)) as http:
        assert (await http.get("/api/data")).status_code == 404
    assert breaker.state is State.CLOSED

    strict = Breaker("strict", consecutive_failures=1, clock=clock)
    async with client(upstream.app(breaker=strict, failure_status={404, 503})) as http:
        assert (await http.get("/api/data")).status_code == 404
        assert (await http.get("/api/data")).status_code == 503
    assert strict.state is State.OPEN

    upstream.status = 500
    lenient = Breaker("lenient", consecutive_failures=1, clock=clock)
    app = upstream.app(breaker=lenient, failure_status=lambda status: status >= 502)
    async with client(app) as http:
        assert (await http.get("/api/data")).status_code == 500
    assert lenient.state is State.CLOSED


async def test_recovers_after_reset_after(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=1, reset_after=10, clock=clock)
    upstream = Upstream()
    upstream.status = 500
    async with client(upstream.app(breaker=breaker)) as http:
        assert (await http.get("/api/data")).status_code == 500
        assert (await http.get("/api/data")).status_code == 503
        upstream.status = 200
        clock.advance(10)
        probe = await http.get("/api/data")
        assert probe.status_code == 200
        assert breaker.state is State.CLOSED
        assert (await http.get("/api/data")).status_code == 200


async def test_a_failed_probe_reopens(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=1, reset_after=10, clock=clock)
    upstream = Upstream()
    upstream.status = 500
    async with client(upstream.app(breaker=breaker)) as http:
        await http.get("/api/data")
        clock.advance(10)
        assert (await http.get("/api/data")).status_code == 500  # the probe
        assert breaker.state is State.OPEN
        assert (await http.get("/api/data")).headers["retry-after"] == "10"


async def test_exceptions_propagate_and_count_by_the_rules(clock: FakeClock) -> None:
    upstream = Upstream()
    breaker = Breaker("api", consecutive_failures=2, ignore=KeyError, clock=clock)
    async with client(upstream.app(breaker=breaker)) as http:
        upstream.error = ConnectionError("upstream down")
        with pytest.raises(ConnectionError, match="upstream down"):
            await http.get("/api/data")
        upstream.error = KeyError("ignored")
        with pytest.raises(KeyError):
            await http.get("/api/data")
        assert breaker.stats().failures == 1
        assert breaker.stats().ignored == 1
        upstream.error = ConnectionError("upstream down")
        with pytest.raises(ConnectionError):
            await http.get("/api/data")
    assert breaker.state is State.OPEN


async def test_an_app_that_never_answers_is_a_failure(clock: FakeClock) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    breaker = Breaker("api", consecutive_failures=1, clock=clock)
    await BreakerMiddleware(silent, breaker=breaker)({"type": "http"}, receive, send)
    assert sent == []  # the server answers 500 on its own
    assert breaker.state is State.OPEN


async def test_timeout_before_the_response_answers_504() -> None:
    entered = anyio.Event()

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await anyio.Event().wait()  # never set: only the breaker's timeout ends it

    breaker = Breaker("api", consecutive_failures=1, timeout=0.01)
    async with client(BreakerMiddleware(stuck, breaker=breaker)) as http:
        response = await http.get("/")
    assert entered.is_set()
    assert response.status_code == 504
    assert response.json() == {"detail": "timed out"}
    assert breaker.stats().timeouts == 1
    assert breaker.state is State.OPEN


async def test_timeout_after_the_response_started_propagates() -> None:
    async def stalls_mid_body(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await anyio.Event().wait()

    breaker = Breaker("api", consecutive_failures=1, timeout=0.01)
    async with client(BreakerMiddleware(stalls_mid_body, breaker=breaker)) as http:
        with pytest.raises(CircuitTimeoutError):
            await http.get("/")
    assert breaker.stats().timeouts == 1


async def test_streams_without_buffering(clock: FakeClock) -> None:
    """Each body chunk reaches the server before the app sends the next one."""
    seen: list[Message] = []
    chunk_passed = anyio.Event()

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        assert chunk_passed.is_set()
        await send({"type": "http.response.body", "body": b"two", "more_body": False})

    async def server_send(message: Message) -> None:
        seen.append(message)
        if message.get("body") == b"one":
            chunk_passed.set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    breaker = Breaker("api", clock=clock)
    middleware = BreakerMiddleware(streaming, breaker=breaker)
    await middleware({"type": "http", "path": "/", "method": "GET"}, receive, server_send)
    assert [message.get("body") for message in seen] == [None, b"one", b"two"]
    assert breaker.stats().successes == 1


@pytest.mark.parametrize("status", [503, 429])
async def test_bulkhead_full_answers_503_or_the_chosen_status(status: int) -> None:
    inside = anyio.Event()
    release = anyio.Event()

    async def slow(request: Request) -> Response:
        inside.set()
        await release.wait()
        return PlainTextResponse("done")

    breaker = Breaker("api", max_concurrent=1)
    app = Starlette(routes=[Route("/", slow)])
    app.add_middleware(BreakerMiddleware, breaker=breaker, bulkhead_status=status)
    responses: list[httpx.Response] = []
    async with client(app) as http, anyio.create_task_group() as tg:

        async def first() -> None:
            responses.append(await http.get("/"))

        tg.start_soon(first)
        await inside.wait()
        refused = await http.get("/")
        release.set()
    assert refused.status_code == status
    assert "retry-after" not in refused.headers
    assert refused.json() == {"detail": "too many concurrent requests"}
    assert [response.status_code for response in responses] == [200]
    assert breaker.stats().bulkhead_rejections == 1
    assert breaker.state is State.CLOSED


async def test_forced_open_has_no_retry_after(clock: FakeClock) -> None:
    breaker = Breaker("api", clock=clock)
    breaker.force_open()
    async with client(Upstream().app(breaker=breaker)) as http:
        response = await http.get("/api/data")
    assert response.status_code == 503
    assert "retry-after" not in response.headers


async def test_resolver_picks_a_breaker_or_passes_through(clock: FakeClock) -> None:
    api = Breaker("api", clock=clock)
    api.force_open()
    seen: list[str] = []

    def resolve(scope: Scope) -> Breaker | None:
        seen.append(scope["path"])
        return api if scope["path"].startswith("/api/") else None

    upstream = Upstream()
    async with client(upstream.app(breakers=resolve)) as http:
        assert (await http.get("/api/data")).status_code == 503
        assert (await http.get("/health")).status_code == 200
    assert seen == ["/api/data", "/health"]
    assert upstream.calls == 1
    assert api.stats().successes == 0


async def test_resolver_with_a_registry(clock: FakeClock) -> None:
    registry = BreakerRegistry("tenant:", consecutive_failures=1, clock=clock)
    upstream = Upstream()
    app = upstream.app(breakers=lambda scope: registry.get(scope["path"].split("/")[1]))
    upstream.status = 500
    async with client(app) as http:
        assert (await http.get("/api/data")).status_code == 500
        upstream.status = 200
        assert (await http.get("/api/data")).status_code == 503
        assert (await http.get("/health")).status_code == 200
    assert registry.keys() == ["api", "health"]


async def test_resolver_returning_junk_is_a_config_error(clock: FakeClock) -> None:
    app = Upstream().app(breakers=lambda scope: "api")
    async with client(app) as http:
        with pytest.raises(ConfigError) as caught:
            await http.get("/api/data")
    assert caught.value.field == "breakers"
    assert caught.value.value == "api"


async def test_lifespan_and_websocket_pass_through_untouched() -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError("the middleware must not send anything itself")

    def resolve(scope: Scope) -> Breaker | None:
        raise AssertionError("not an http scope: nothing to resolve")

    breaker = Breaker("api")
    breaker.force_open()
    for middleware in (
        BreakerMiddleware(inner, breaker=breaker),
        BreakerMiddleware(inner, breakers=resolve),
    ):
        calls.clear()
        for kind in ("lifespan", "websocket"):
            scope: Scope = {"type": kind}
            await middleware(scope, receive, send)
            assert calls[-1] == (scope, receive, send)
            assert calls[-1][0] is scope
    assert breaker.stats().rejections == 0


async def test_starlette_lifespan_runs_through_the_middleware() -> None:
    events: list[str] = []

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    from contextlib import asynccontextmanager

    app = Starlette(lifespan=asynccontextmanager(lifespan))
    breaker = Breaker("api")
    breaker.force_open()
    app.add_middleware(BreakerMiddleware, breaker=breaker)
    messages: list[Message] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        messages.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert events == ["startup", "shutdown"]
    assert [message["type"] for message in messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_client_gone_after_the_response_started_counts_by_status(
    clock: FakeClock,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": False})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def gone(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client disconnected")

    breaker = Breaker("api", consecutive_failures=1, clock=clock)
    with pytest.raises(OSError, match="client disconnected"):
        await BreakerMiddleware(app, breaker=breaker)({"type": "http"}, receive, gone)
    assert breaker.state is State.CLOSED
    assert breaker.stats().successes == 1


# ---------------------------------------------------------------------- configuration


def _noop_app() -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return

    return app


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({}, "breaker", None),
        ({"breaker": "api"}, "breaker", "api"),
        ({"breakers": "api"}, "breakers", "api"),
        ({"breakers": lambda: None}, "breakers", None),
        ({"failure_status": 500}, "failure_status", 500),
        ({"failure_status": "5xx"}, "failure_status", "5xx"),
        ({"failure_status": [500, 1000]}, "failure_status", [500, 1000]),
        ({"failure_status": [500, True]}, "failure_status", [500, True]),
        ({"bulkhead_status": 200}, "bulkhead_status", 200),
        ({"bulkhead_status": "429"}, "bulkhead_status", "429"),
    ],
)
def test_bad_middleware_config(options: dict[str, Any], field: str, value: object) -> None:
    if "breaker" not in options and "breakers" not in options and options:
        options = {**options, "breaker": Breaker("api")}
    with pytest.raises(ConfigError) as caught:
        BreakerMiddleware(_noop_app(), **options)
    assert caught.value.field == field
    if field != "breakers" or value is not None:
        assert caught.value.value == value
    assert f"{field}=" in str(caught.value)


def test_bad_middleware_config_needs_an_anyio_breaker_and_one_source() -> None:
    threaded = ThreadedBreaker("sync")
    with pytest.raises(ConfigError, match="ThreadedBreaker") as caught:
        BreakerMiddleware(_noop_app(), breaker=threaded)  # type: ignore[arg-type]
    assert caught.value.field == "breaker"
    assert caught.value.value is threaded
    both = Breaker("api")
    with pytest.raises(ConfigError, match="not both") as caught:
        BreakerMiddleware(_noop_app(), breaker=both, breakers=lambda scope: both)
    assert caught.value.field == "breakers"
    with pytest.raises(ConfigError) as caught:
        BreakerMiddleware("not an app", breaker=both)  # type: ignore[arg-type]
    assert caught.value.field == "app"


def test_bad_helper_config() -> None:
    with pytest.raises(ConfigError) as caught:
        guarded("api")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("breaker", "api")
    with pytest.raises(ConfigError) as caught:
        guarded(Breaker("api"), failure_status=(600,))
    assert caught.value.field == "failure_status"
    with pytest.raises(ConfigError) as caught:
        breaker_for({}, "api")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("registry", {})
    with pytest.raises(ConfigError) as caught:
        breaker_for(BreakerRegistry(), 42)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("key", 42)
    with pytest.raises(ConfigError) as caught:
        add_exception_handlers(Starlette(), bulkhead_status=302)
    assert (caught.value.field, caught.value.value) == ("bulkhead_status", 302)
    for url in ("/relative", "no host", "http://host:99999/"):
        with pytest.raises(ConfigError) as caught:
            host_of(url)
        assert (caught.value.field, caught.value.value) == ("url", url)


def test_host_of() -> None:
    assert host_of("https://API.example.com/v1?x=1") == "api.example.com"
    assert host_of("https://api.example.com:443/") == "api.example.com"
    assert host_of("http://api.example.com:8443/") == "api.example.com:8443"
    assert host_of("http://127.0.0.1:8080") == "127.0.0.1:8080"
    assert host_of("http://[::1]:8080/") == "[::1]:8080"


def test_importing_needs_no_web_framework() -> None:
    code = (
        "import sys\n"
        "for name in ('starlette', 'fastapi', 'httpx'): sys.modules[name] = None\n"
        "import breaker_machines.asgi\n"
        "breaker_machines.asgi.BreakerMiddleware(lambda s, r, w: None, breaker="
        "breaker_machines.Breaker('x'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------- FastAPI


def fastapi_app(
    breaker: Breaker, upstream: Upstream, *, scope: str | None = None, **options: Any
) -> FastAPI:
    app = FastAPI()
    add_exception_handlers(app, **options)
    guard = Depends(guarded(breaker), scope=scope)  # type: ignore[arg-type]

    @app.get("/data", dependencies=[guard])
    async def data() -> dict[str, Any]:
        upstream.calls += 1
        if upstream.error is not None:
            raise upstream.error
        return {"ok": True}

    @app.get("/validated", dependencies=[guard])
    async def validated(number: int) -> dict[str, Any]:
        return {"number": number}

    @app.get("/unguarded")
    async def unguarded() -> dict[str, Any]:
        return {"ok": True}

    return app


@pytest.mark.parametrize("scope", [None, "function", "request"])
async def test_guarded_dependency_counts_endpoint_exceptions(
    clock: FakeClock, scope: str | None
) -> None:
    breaker = Breaker("route", consecutive_failures=2, reset_after=10, clock=clock)
    upstream = Upstream()
    app = fastapi_app(breaker, upstream, scope=scope)
    async with client(app, raise_app_exceptions=False) as http:
        assert (await http.get("/data")).json() == {"ok": True}
        assert breaker.stats().successes == 1
        upstream.error = ConnectionError("down")
        assert (await http.get("/data")).status_code == 500
        assert breaker.stats().failures == 1
        assert (await http.get("/data")).status_code == 500
        assert breaker.state is State.OPEN
        clock.advance(4.2)
        rejected = await http.get("/data")
        assert rejected.status_code == 503
        assert rejected.headers["retry-after"] == "6"
        assert rejected.json() == {"detail": "circuit open"}
        assert upstream.calls == 2 + 1
        assert (await http.get("/unguarded")).status_code == 200
        upstream.error = None
        clock.advance(6)
        assert (await http.get("/data")).json() == {"ok": True}
    assert breaker.state is State.CLOSED


async def test_guarded_dependency_propagates_exceptions(clock: FakeClock) -> None:
    breaker = Breaker("route", consecutive_failures=5, clock=clock)
    upstream = Upstream()
    upstream.error = ConnectionError("down")
    async with client(fastapi_app(breaker, upstream)) as http:
        with pytest.raises(ConnectionError, match="down"):
            await http.get("/data")
    assert breaker.stats().failures == 1


async def test_guarded_dependency_counts_http_exceptions_by_status(clock: FakeClock) -> None:
    breaker = Breaker("route", consecutive_failures=1, clock=clock)
    upstream = Upstream()
    async with client(fastapi_app(breaker, upstream)) as http:
        upstream.error = HTTPException(404, "no such thing")
        assert (await http.get("/data")).status_code == 404
        assert breaker.state is State.CLOSED
        assert breaker.stats().successes == 1
        upstream.error = HTTPException(503, "upstream says no")
        assert (await http.get("/data")).status_code == 503
    assert breaker.state is State.OPEN
    assert breaker.stats().failures == 1


async def test_guarded_dependency_counts_invalid_requests_as_successes(
    clock: FakeClock,
) -> None:
    breaker = Breaker("route", consecutive_failures=1, clock=clock)
    async with client(fastapi_app(breaker, Upstream())) as http:
        assert (await http.get("/validated", params={"number": "x"})).status_code == 422
        assert (await http.get("/validated", params={"number": "7"})).json() == {"number": 7}
    assert breaker.state is State.CLOSED
    assert breaker.stats().successes == 2


@pytest.mark.parametrize("scope", [None, "function"])
async def test_guarded_dependency_timeout_answers_504(scope: str | None) -> None:
    breaker = Breaker("route", consecutive_failures=1, timeout=0.01)
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/stuck", dependencies=[Depends(guarded(breaker), scope=scope)])  # type: ignore[arg-type]
    async def stuck() -> None:
        await anyio.Event().wait()

    async with client(app) as http:
        response = await http.get("/stuck")
    assert response.status_code == 504
    assert response.json() == {"detail": "timed out"}
    assert breaker.stats().timeouts == 1


async def test_exception_handlers_answer_errors_raised_by_endpoints() -> None:
    outbound = Breaker("outbound", max_concurrent=1)
    outbound.force_open()
    app = FastAPI()
    add_exception_handlers(app, bulkhead_status=429)
    inside = anyio.Event()
    release = anyio.Event()

    @app.get("/open")
    async def open_circuit() -> None:
        async with outbound.guard():
            pass

    @app.get("/hold")
    async def hold() -> None:
        async with busy.guard():
            inside.set()
            await release.wait()

    busy = Breaker("busy", max_concurrent=1)

    async with client(app) as http:
        forced = await http.get("/open")
        assert forced.status_code == 503
        assert "retry-after" not in forced.headers
        async with anyio.create_task_group() as tg:
            tg.start_soon(http.get, "/hold")
            await inside.wait()
            assert (await http.get("/hold")).status_code == 429
            release.set()


async def test_breaker_error_response_is_a_plain_handler(clock: FakeClock) -> None:
    breaker = Breaker("api", consecutive_failures=1, reset_after=5, clock=clock)
    app = Starlette()
    app.add_exception_handler(Exception, breaker_error_response)

    async def endpoint(request: Request) -> Response:
        async with breaker.guard():
            raise ConnectionError("down")

    app.add_route("/", endpoint)
    async with client(app, raise_app_exceptions=False) as http:
        assert (await http.get("/")).status_code == 500  # not a breaker error: re-raised
        response = await http.get("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


async def test_breaker_for_injects_a_breaker_per_host(clock: FakeClock) -> None:
    upstreams = BreakerRegistry("upstream:", consecutive_failures=1, clock=clock)
    app = FastAPI()
    add_exception_handlers(app)
    fixed = breaker_for(upstreams, host_of("https://Weather.example.com/v1"))

    def from_query(request: Request) -> str:
        return host_of(request.query_params["url"])

    by_query = breaker_for(upstreams, from_query)

    # (Defaults rather than Annotated[...]: under `from __future__ import annotations` FastAPI
    # resolves annotations in the module's globals, where these local dependencies are not.)
    @app.get("/weather")
    async def weather(breaker: Breaker = Depends(fixed)) -> dict[str, str]:  # noqa: B008
        return {"breaker": breaker.name}

    @app.get("/proxy")
    async def proxy(breaker: Breaker = Depends(by_query)) -> JSONResponse:  # noqa: B008
        async def fetch() -> str:
            raise ConnectionError("down")

        try:
            await breaker.call(fetch)
        except ConnectionError:
            return JSONResponse({"breaker": breaker.name}, status_code=502)
        raise AssertionError("unreachable")

    async with client(app) as http:
        assert (await http.get("/weather")).json() == {"breaker": "upstream:weather.example.com"}
        first = await http.get("/proxy", params={"url": "http://a.example:8080/x"})
        assert first.status_code == 502
        assert first.json() == {"breaker": "upstream:a.example:8080"}
        second = await http.get("/proxy", params={"url": "http://a.example:8080/y"})
        assert second.status_code == 503  # the circuit opened: the handler answers
    assert upstreams.keys() == ["weather.example.com", "a.example:8080"]
    assert upstreams.get("a.example:8080").state is State.OPEN
