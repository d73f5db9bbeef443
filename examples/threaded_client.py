"""A ThreadedBreaker shared by worker threads: ``python examples/threaded_client.py``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from breaker_machines import CircuitOpenError, ThreadedBreaker

breaker = ThreadedBreaker("inventory", failures=3, within=60, reset_after=60)


@breaker
def lookup(item: int) -> str:
    if item % 2:
        raise ConnectionError(f"item {item}: upstream refused")
    return f"item {item}: in stock"


def safe_lookup(item: int) -> str:
    try:
        return lookup(item)
    except ConnectionError as error:
        return f"failed: {error}"
    except CircuitOpenError as error:
        return f"rejected: {error}"


if __name__ == "__main__":
    with ThreadPoolExecutor(4) as pool:
        for line in pool.map(safe_lookup, range(12)):
            print(line)
    print(breaker.stats())
