"""Type tests: the decorator and ``call()`` keep the wrapped function's signature.

Checked by ``mypy --strict`` and ``pyright`` (strict) in the ``typecheck`` session. Lines
marked with an ignore comment must be errors: both checkers are set to report an ignore
comment that suppresses nothing, so a signature that stopped being checked fails the run.
"""

from __future__ import annotations

from typing_extensions import assert_type

from breaker_machines import Breaker, ThreadedBreaker

breaker = Breaker("typing")
threaded = ThreadedBreaker("typing-threads")


@breaker
async def fetch(url: str, *, retries: int = 0) -> bytes:
    return url.encode() * (retries + 1)


@threaded
def compute(x: int) -> float:
    return x / 2


async def uses() -> None:
    assert_type(await fetch("a", retries=2), bytes)
    assert_type(await breaker.call(fetch, "a"), bytes)
    assert_type(compute(3), float)
    assert_type(threaded.call(compute, 3), float)
    await fetch(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await fetch("a", retries="x")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await breaker.call(fetch, "a", 1)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    compute("3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    with breaker.guard():
        pass
    async with breaker.guard():
        pass
    with threaded.guard():
        pass
