"""ASGI integration: guard inbound routes, answer rejections, inject outbound breakers.

Pure ASGI, so any framework or server works; importing this module needs only anyio
(Starlette and FastAPI are imported lazily, by the helpers that build their objects).

Inbound, :class:`BreakerMiddleware` runs the downstream app inside a breaker's guard: a
response with a failure status (5xx by default) or an exception counts against the
circuit, and while it is open the middleware answers ``503`` with ``Retry-After`` without
calling the app::

    app = Starlette(routes=..., lifespan=lifespan)
    app.add_middleware(BreakerMiddleware, breaker=Breaker("api", failures=5, within=60))

With FastAPI, :func:`guarded` guards single routes as a dependency
(``dependencies=[Depends(guarded(breaker))]``), :func:`add_exception_handlers` turns the
breaker's errors into ``503``/``504`` answers, and :func:`breaker_for` injects a breaker
per upstream host from a :class:`~breaker_machines.BreakerRegistry` for outbound calls.

Async callbacks (``on_open=...``) and on-time half-opening need the breaker's runner:
start it in the app's lifespan, for example ``async with running(breaker): yield``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, MutableMapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast
from urllib.parse import urlsplit

from .breaker import Breaker, Guard
from .callbacks import check_function
from .errors import (
    BreakerError,
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    ConfigError,
)
from .registry import BreakerRegistry

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "ASGIApp",
    "BreakerMiddleware",
    "FailureStatus",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "add_exception_handlers",
    "breaker_error_response",
    "breaker_for",
    "guarded",
    "host_of",
    "server_errors",
]

_logger: logging.Logger = logging.getLogger("breaker_machines")

Scope: TypeAlias = MutableMapping[str, Any]
"""An ASGI connection scope (the same shape as ``starlette.types.Scope``)."""
Message: TypeAlias = MutableMapping[str, Any]
"""An ASGI event message."""
Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

FailureStatus: TypeAlias = Callable[[int], bool] | Collection[int]
"""Which response statuses count as failures: a predicate, or a collection of statuses."""


def server_errors(status: int) -> bool:
    """The default ``failure_status``: any 5xx status is a failure."""
    return status >= 500


# ---------------------------------------------------------------------- validation


def _check_breaker(field: str, value: object) -> Breaker:
    if not isinstance(value, Breaker):
        raise ConfigError(
            field,
            value,
            "must be a breaker_machines.Breaker (the anyio one; a ThreadedBreaker cannot"
            " guard async code)",
        )
    return value


def _status_predicate(value: object) -> Callable[[int], bool]:
    """Normalise ``failure_status`` into a predicate on the status code."""
    if callable(value):
        check_function("failure_status", value, arguments=1, what="a predicate on the status code")
        return cast(Callable[[int], bool], value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise ConfigError(
            "failure_status",
            value,
            "must be a predicate on the status code or a collection of statuses"
            " (for example {500, 502, 503})",
        )
    statuses = cast(Collection[object], value)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ConfigError(
                "failure_status",
                statuses,
                f"{status!r} is not an HTTP status code (100 to 599)",
            )
    return frozenset(statuses).__contains__


def _check_bulkhead_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ConfigError(
            "bulkhead_status", value, "must be an HTTP error status (429 or 503, usually)"
        )
    return value


def _counts_as_failure(breaker: Breaker, predicate: Callable[[int], bool], status: int) -> bool:
    try:
        return bool(predicate(status))
    except Exception:
        _logger.exception(
            "breaker %r: failure_status raised; status %d counts as a success",
            breaker.name,
            status,
            extra={"breaker": breaker.name},
        )
        return False


# ---------------------------------------------------------------------- answers


def _answer(error: BreakerError, bulkhead_status: int) -> tuple[int, dict[str, str], bytes] | None:
    """Status, extra headers and JSON body answering a breaker's error (None: no mapping)."""
    headers: dict[str, str] = {}
    if isinstance(error, CircuitOpenError):
        status, detail = 503, "circuit open"
        if error.retry_after is not None:
            headers["retry-after"] = str(max(0, math.ceil(error.retry_after)))
    elif isinstance(error, BulkheadFullError):
        status, detail = bulkhead_status, "too many concurrent requests"
    elif isinstance(error, CircuitTimeoutError):
        status, detail = 504, "timed out"
    else:
        return None
    return status, headers, json.dumps({"detail": detail}).encode()


async def _send_answer(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _exit_failed(guard: Guard) -> None:
    """Leave the guard reporting a failure although the call returned normally.

    (The same path ``Breaker.call`` takes for a result ``failure_if`` refuses.)
    """
    guard._settle(None, None, None, failed_result=True)


async def _exit_with(guard: Guard, failed: bool) -> None:
    if failed:
        _exit_failed(guard)
    else:
        await guard.__aexit__(None, None, None)


# ---------------------------------------------------------------------- middleware


class _Response:
    """What the middleware saw of one response: its status, and an error out of send."""

    __slots__ = ("send_error", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.send_error: BaseException | None = None


class BreakerMiddleware:
    """ASGI middleware running each HTTP request inside a breaker's guard.

    ``BreakerMiddleware(app, breaker=breaker)`` guards every request with one breaker;
    ``BreakerMiddleware(app, breakers=resolve)`` calls ``resolve(scope)`` per request to
    pick one (for example by path, or ``registry.get(...)`` per tenant) and lets the
    request through unguarded when it returns ``None``. The resolver runs before routing,
    so ``scope["route"]`` is not known yet: to guard a single route, wrap that route's app
    or use :func:`guarded`.

    Outcomes:

    * a response whose status ``failure_status`` accepts (default: ``>= 500``) is a
      failure; any other response a success. An app that returns without starting a
      response is a failure (the server answers 500);
    * an exception from the app is classified by the breaker's ``record``/``ignore`` rules
      and propagates unchanged, except an exception out of ``send`` after the response
      started (the client went away): the status already sent decides;
    * the breaker's ``timeout`` covers the whole response, body included; when it runs out
      before the response started the client gets ``504``, after that the
      :class:`~breaker_machines.CircuitTimeoutError` propagates (the server aborts the
      response).

    Rejections never reach the app: :class:`~breaker_machines.CircuitOpenError` answers
    ``503`` with ``Retry-After`` (whole seconds, rounded up; absent while the circuit is
    forced open) and :class:`~breaker_machines.BulkheadFullError` answers
    ``bulkhead_status`` (``503`` by default; ``429`` suits a per-client limit). Bodies
    are JSON, ``{"detail": ...}``, as FastAPI's errors are. The breaker's fallback is not
    used: a fallback returns a value, not a response.

    Lifespan and websocket scopes pass through untouched, and no body is ever buffered.
    """

    __slots__ = ("_breaker", "_bulkhead_status", "_failed", "_resolve", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        breaker: Breaker | None = None,
        breakers: Callable[[Scope], Breaker | None] | None = None,
        failure_status: FailureStatus = server_errors,
        bulkhead_status: int = 503,
    ) -> None:
        if not callable(app):
            raise ConfigError("app", app, "must be an ASGI application")
        if breaker is None and breakers is None:
            raise ConfigError(
                "breaker", breaker, "give breaker= (one breaker) or breakers= (a resolver)"
            )
        if breaker is not None and breakers is not None:
            raise ConfigError("breakers", breakers, "give either breaker= or breakers=, not both")
        if breaker is not None:
            _check_breaker("breaker", breaker)
        if breakers is not None:
            check_function(
                "breakers",
                breakers,
                arguments=1,
                what="a function of the ASGI scope returning a Breaker or None",
            )
        self.app: ASGIApp = app
        """The wrapped ASGI application."""
        self._breaker = breaker
        self._resolve = breakers
        self._failed = _status_predicate(failure_status)
        self._bulkhead_status = _check_bulkhead_status(bulkhead_status)

    def _pick(self, scope: Scope) -> Breaker | None:
        if self._breaker is not None:
            return self._breaker
        assert self._resolve is not None
        chosen = self._resolve(scope)
        if chosen is None or isinstance(chosen, Breaker):
            return chosen
        raise ConfigError("breakers", chosen, "the resolver must return a Breaker or None")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        breaker = self._pick(scope)
        if breaker is None:
            await self.app(scope, receive, send)
            return
        guard = breaker.guard()
        try:
            await guard.__aenter__()
        except (CircuitOpenError, BulkheadFullError) as error:
            answer = _answer(error, self._bulkhead_status)
            assert answer is not None
            await _send_answer(send, *answer)
            return

        response = _Response()

        async def send_through(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = int(message["status"])
            try:
                await send(message)
            except BaseException as error:
                response.send_error = error
                raise

        try:
            await self.app(scope, receive, send_through)
        except BaseException as error:
            status = response.status
            try:
                if (
                    error is response.send_error
                    and status is not None
                    and isinstance(error, Exception)
                ):
                    # The client is gone; the upstream's answer was already given.
                    await _exit_with(guard, _counts_as_failure(breaker, self._failed, status))
                else:
                    await guard.__aexit__(type(error), error, error.__traceback__)
            except CircuitTimeoutError as timeout:
                if status is not None:
                    raise
                answer = _answer(timeout, self._bulkhead_status)
                assert answer is not None
                await _send_answer(send, *answer)
                return
            raise
        status = response.status
        failed = status is None or _counts_as_failure(breaker, self._failed, status)
        await _exit_with(guard, failed)


# ---------------------------------------------------------------------- FastAPI / Starlette


def guarded(
    breaker: Breaker, *, failure_status: FailureStatus = server_errors
) -> Callable[[], AsyncIterator[None]]:
    """A FastAPI dependency holding ``breaker``'s guard around the endpoint.

    ``@app.get("/orders", dependencies=[Depends(guarded(breaker))])``. The circuit's
    admission happens while FastAPI solves the dependencies, so a rejection raises
    :class:`~breaker_machines.CircuitOpenError` before the endpoint runs (answer it with
    :func:`add_exception_handlers`). FastAPI throws the endpoint's exception into the
    dependency: it counts by the breaker's rules and propagates, except an exception with
    an integer ``status_code`` (``HTTPException``), which counts by that status, as
    ``failure_status`` says (so a 404 is a success and a 503 a failure), and FastAPI's
    ``RequestValidationError``, which counts as its 422 does (the endpoint's parameters are
    validated after this dependency admitted the request). A dependency never sees the
    response an endpoint *returns*: to count returned 5xx responses use
    :class:`BreakerMiddleware`.

    With ``Depends(..., scope="function")`` the guard (and the breaker's ``timeout``)
    covers the endpoint function only, so a timeout can still become a ``504``; with the
    default request scope it also covers sending the response.
    """
    _check_breaker("breaker", breaker)
    failed = _status_predicate(failure_status)
    invalid_request = _request_validation_error()

    async def breaker_guard() -> AsyncIterator[None]:
        guard = breaker.guard()
        await guard.__aenter__()
        try:
            yield
        except Exception as error:
            status: object = getattr(error, "status_code", None)
            if invalid_request is not None and isinstance(error, invalid_request):
                status = 422  # the client's mistake (FastAPI answers 422), not the route's
            if isinstance(status, int) and not isinstance(status, bool):
                await _exit_with(guard, _counts_as_failure(breaker, failed, status))
            else:
                await guard.__aexit__(type(error), error, error.__traceback__)
            raise
        except BaseException as error:
            await guard.__aexit__(type(error), error, error.__traceback__)
            raise
        await guard.__aexit__(None, None, None)

    breaker_guard.__qualname__ = f"guarded({breaker.name!r})"
    return breaker_guard


def _request_validation_error() -> type[BaseException] | None:
    """FastAPI's RequestValidationError, if FastAPI is installed (it has no status_code)."""
    try:
        module = importlib.import_module("fastapi.exceptions")
    except ImportError:
        return None
    found: object = getattr(module, "RequestValidationError", None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


async def breaker_error_response(request: Request, exc: Exception) -> Response:
    """A Starlette/FastAPI exception handler for the breaker's errors.

    :class:`~breaker_machines.CircuitOpenError` answers ``503`` with ``Retry-After``
    (whole seconds, rounded up), :class:`~breaker_machines.BulkheadFullError` ``503`` and
    :class:`~breaker_machines.CircuitTimeoutError` ``504``; the body is
    ``{"detail": ...}``. Any other exception is re-raised. Register it with
    :func:`add_exception_handlers` (which also lets you choose the bulkhead's status).
    """
    return _error_response(exc, 503)


def _error_response(exc: Exception, bulkhead_status: int) -> Response:
    from starlette.responses import Response

    answer = _answer(exc, bulkhead_status) if isinstance(exc, BreakerError) else None
    if answer is None:
        raise exc
    status, headers, body = answer
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def add_exception_handlers(app: Starlette, *, bulkhead_status: int = 503) -> None:
    """Register :func:`breaker_error_response` on a Starlette or FastAPI ``app``.

    Handles :class:`~breaker_machines.CircuitOpenError` (``503`` + ``Retry-After``),
    :class:`~breaker_machines.BulkheadFullError` (``bulkhead_status``, ``503`` by default;
    ``429`` suits a per-client limit) and :class:`~breaker_machines.CircuitTimeoutError`
    (``504``) raised by an endpoint, a :func:`guarded` dependency or an unhandled outbound
    call. Call it before the app starts serving.
    """
    status = _check_bulkhead_status(bulkhead_status)

    async def handler(request: Request, exc: Exception) -> Response:
        return _error_response(exc, status)

    for error_type in (CircuitOpenError, BulkheadFullError, CircuitTimeoutError):
        app.add_exception_handler(error_type, handler)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def host_of(url: str) -> str:
    """The registry key of ``url``'s host: ``host`` or ``host:port`` (default ports dropped).

    ``host_of("https://API.example.com/v1")`` is ``"api.example.com"`` and
    ``host_of("http://127.0.0.1:8080/")`` is ``"127.0.0.1:8080"``.
    """
    if not isinstance(url, str):
        raise ConfigError("url", url, "must be a string")
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ConfigError("url", url, "must be an absolute URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("url", url, "has an invalid port") from None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return host
    return f"{host}:{port}"


def breaker_for(
    registry: BreakerRegistry, key: str | Callable[[Request], str]
) -> Callable[..., Breaker]:
    """A FastAPI dependency injecting the registry's breaker for ``key``, for outbound calls.

    ``key`` is a fixed key (``host_of(UPSTREAM_URL)`` gives one breaker per upstream
    host) or a function of the :class:`~starlette.requests.Request` returning one::

        upstreams = BreakerRegistry("upstream:", failures=5, within=60, timeout=3)
        Upstream = Annotated[Breaker, Depends(breaker_for(upstreams, host_of(API)))]

        @app.get("/data")
        async def data(breaker: Upstream) -> dict[str, Any]:
            return await breaker.call(fetch, API)

    Run ``registry.run`` in the app's lifespan task group so its breakers' async callbacks
    and timers run. Being a dependency, it can be replaced in tests through
    ``app.dependency_overrides``.
    """
    if not isinstance(registry, BreakerRegistry):
        raise ConfigError("registry", registry, "must be a breaker_machines.BreakerRegistry")
    if isinstance(key, str):
        fixed = key

        def fixed_breaker() -> Breaker:
            return registry.get(fixed)

        return fixed_breaker
    check_function("key", key, arguments=1, what="a string or a function of the request")
    from starlette.requests import Request

    pick = key

    def request_breaker(request: Request) -> Breaker:
        return registry.get(pick(request))

    # FastAPI injects the request by its annotation, which must be the class itself here
    # (Request is only imported while type checking at module level).
    request_breaker.__annotations__["request"] = Request
    return request_breaker
