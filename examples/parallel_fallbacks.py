"""Parallel fallbacks, runnable: ``python examples/parallel_fallbacks.py [asyncio|trio]``.

The profile service is down. ``parallel(from_cache, from_replica)`` asks the cache and a
read replica at once: the first to answer wins and the other is cancelled; when both fail,
the next fallback of the list answers. A breaker with the group alone raises
``FallbacksFailedError``, an ``ExceptionGroup`` of each fallback's error.
"""

from __future__ import annotations

import sys

import anyio

from breaker_machines import Breaker, FallbacksFailedError, parallel

cache: dict[str, str] = {}
replica_up = True


def from_cache(error: Exception) -> str:  # sync or async: both race
    return cache["ada"]  # KeyError on a miss: the replica may still answer


async def from_replica(error: Exception) -> str:
    try:
        await anyio.sleep(0.01)  # a network round trip
    except anyio.get_cancelled_exc_class():
        print("  (replica lookup cancelled: the cache answered first)")
        raise
    if not replica_up:
        raise ConnectionError("the replica is down too")
    return "ada (from the replica)"


fallback = parallel(from_cache, from_replica)
breaker = Breaker("profiles", fallback=[fallback, "anonymous"], consecutive_failures=10)
strict = Breaker("profiles-strict", fallback=fallback, consecutive_failures=10)


async def load_profile() -> str:
    raise ConnectionError("the profile service is down")


async def main() -> None:
    global replica_up
    print(await breaker.call(load_profile))  # cache miss: the replica answers
    cache["ada"] = "ada (cached)"
    print(await breaker.call(load_profile))  # the cache answers first
    cache.clear()
    replica_up = False
    print(await breaker.call(load_profile))  # both fail: the next in the list answers
    try:
        await strict.call(load_profile)
    except FallbacksFailedError as error:
        print(f"{error.breaker}: {[type(inner).__name__ for inner in error.exceptions]}")
        print(f"answering: {error.error!r}")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
