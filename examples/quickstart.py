"""The README's example, runnable: ``python examples/quickstart.py [asyncio|trio]``.

A fake upstream fails five times in a row; the breaker opens, the fallback answers, an async
``on_open`` alert runs in the runner, and after ``reset_after`` a probe closes the circuit.
"""

from __future__ import annotations

import sys

import anyio

from breaker_machines import Breaker, CircuitOpenError, Transition, running

upstream_down = True


async def alert(transition: Transition) -> None:
    print(f"ALERT {transition.breaker} opened ({transition.reason.value})")


breaker = Breaker(
    "external_api",
    failures=5,
    within=60,
    reset_after=0.5,
    timeout=3,
    fallback=lambda error: {"error": "Service temporarily unavailable", "cached": True},
    on_open=alert,
)


@breaker
async def fetch_data() -> dict[str, object]:
    await anyio.sleep(0.01)
    if upstream_down:
        raise ConnectionError("upstream down")
    return {"data": [1, 2, 3]}


async def main() -> None:
    global upstream_down
    async with running(breaker):
        for _ in range(6):
            print(breaker.state.value, await fetch_data())
        try:
            with breaker.guard():
                pass
        except CircuitOpenError as error:
            print(f"guard rejected, retry after {error.retry_after:.2f}s")
        upstream_down = False
        await anyio.sleep(0.6)  # the demo waits out reset_after
        print(breaker.state.value, await fetch_data())
        print(breaker.state.value)


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
