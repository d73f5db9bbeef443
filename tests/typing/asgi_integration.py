"""Type tests: the ASGI helpers fit Starlette's and FastAPI's own signatures.

Checked by ``mypy --strict`` and ``pyright`` (strict) in the ``typecheck`` session, like
``decorator_signature.py``: a line with an ignore comment must be an error.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from typing_extensions import assert_type

from breaker_machines import Breaker, BreakerRegistry
from breaker_machines.asgi import (
    ASGIApp,
    BreakerMiddleware,
    Scope,
    add_exception_handlers,
    breaker_error_response,
    breaker_for,
    guarded,
    host_of,
)

breaker = Breaker("typing-asgi")
upstreams = BreakerRegistry("upstream:")


def by_path(scope: Scope) -> Breaker | None:
    return breaker if scope["path"].startswith("/api/") else None


app = Starlette()
app.add_middleware(BreakerMiddleware, breaker=breaker)
app.add_middleware(BreakerMiddleware, breakers=by_path, failure_status={500, 503})
app.add_middleware(BreakerMiddleware, breaker=breaker, failure_status=lambda status: status > 501)
app.add_middleware(BreakerMiddleware, breaker="api")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
app.add_exception_handler(Exception, breaker_error_response)
add_exception_handlers(app, bulkhead_status=429)
wrapped: ASGIApp = BreakerMiddleware(app, breaker=breaker)

api = FastAPI()
add_exception_handlers(api)
Upstream = Annotated[Breaker, Depends(breaker_for(upstreams, host_of("https://api.example.com")))]


@api.get("/orders", dependencies=[Depends(guarded(breaker))])
async def orders(upstream: Upstream) -> dict[str, Any]:
    assert_type(upstream, Breaker)
    return {"breaker": upstream.name}
