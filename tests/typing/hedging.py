"""Type tests: hedged calls keep the return type; parallel fallbacks and their error.

Checked by ``mypy --strict`` and ``pyright`` (strict) in the ``typecheck`` session. Lines
marked with an ignore comment must be errors (an ignore comment that suppresses nothing is
reported by both checkers).
"""

from __future__ import annotations

from typing_extensions import assert_type

from breaker_machines import Breaker, FallbacksFailedError, ParallelFallback, parallel

breaker = Breaker("typing")


async def fetch(url: str, *, retries: int = 0) -> bytes:
    return url.encode() * (retries + 1)


async def from_cache(error: Exception) -> bytes:
    return b""


async def uses() -> None:
    assert_type(await breaker.hedged(fetch, "a"), bytes)
    assert_type(await breaker.hedged(fetch, "a", retries=1, delay=0.01, max_attempts=3), bytes)
    assert_type(await breaker.hedged_race([lambda: fetch("a"), lambda: fetch("b")]), bytes)
    assert_type(await breaker.hedged_race((lambda: fetch("a"),), delay=0), bytes)
    await breaker.hedged(fetch, "a", delay="x")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await breaker.hedged(fetch, "a", max_attempts=None)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await breaker.hedged_race([fetch])  # type: ignore[list-item]  # pyright: ignore[reportArgumentType]


group = parallel(from_cache, lambda error: b"default")
assert_type(group, ParallelFallback)
guarded = Breaker("typing-parallel", fallback=[group, b"last"])


def handle(error: FallbacksFailedError) -> None:
    assert_type(error.breaker, "str | None")
    assert_type(error.error, BaseException)
    caught: Exception = error  # an ExceptionGroup of Exceptions: an Exception
    print(caught, len(error.exceptions))
