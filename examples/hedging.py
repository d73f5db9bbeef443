"""Hedged requests, runnable: ``python examples/hedging.py [asyncio|trio]``.

A fake search service whose first attempt gets stuck (a cold cache, a GC pause): the hedged
call starts a second attempt after ``delay``, answers with it and cancels the stuck one.
Then a race between two regions, the first of them down, and a race where every backend
fails. The whole race is one call through the breaker: one outcome each.
"""

from __future__ import annotations

import sys

import anyio

from breaker_machines import Breaker

breaker = Breaker("search", timeout=2.0)
attempts = 0


async def search(query: str) -> str:
    global attempts
    attempts += 1
    attempt = attempts
    try:
        if attempt == 1:
            await anyio.sleep_forever()  # the first attempt is stuck
        return f"results for {query!r} (attempt {attempt})"
    except anyio.get_cancelled_exc_class():
        print(f"attempt {attempt} cancelled")
        raise


async def eu_west() -> str:
    raise ConnectionError("eu-west is down")


async def us_east() -> str:
    return "profile from us-east"


async def ap_south() -> str:
    raise ConnectionError("ap-south is down")


async def main() -> None:
    print(await breaker.hedged(search, "anyio", delay=0.05, max_attempts=2))
    # eu-west fails at once, so us-east starts at once: no waiting for the delay
    print(await breaker.hedged_race([eu_west, us_east], delay=1.0))
    try:
        await breaker.hedged_race([eu_west, ap_south], delay=0)
    except ConnectionError as error:
        print(f"every backend failed; raised the first one's error: {error}")
    stats = breaker.stats()
    print(f"successes={stats.successes} failures={stats.failures}")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
