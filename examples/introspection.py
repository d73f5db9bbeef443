"""A breaker's event log and a report over a registry:
``python examples/introspection.py [asyncio|trio]``.

Three per-host breakers; one host refuses connections, another is held open by an
operator. The event log says what happened to each breaker, the report sums them up.
A fake clock keeps the output the same on every run.
"""

from __future__ import annotations

import sys

import anyio

from breaker_machines import BreakerRegistry


class Clock:
    """A clock the example moves by hand."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


clock = Clock()
hosts = BreakerRegistry("http:", consecutive_failures=3, reset_after=30.0, clock=clock)


async def fetch(host: str) -> str:
    async def get() -> str:
        if host == "flaky.example":
            raise ConnectionRefusedError(f"connect to {host}:443 refused")
        return "200 OK"

    try:
        return await hosts.get(host).call(get)
    except Exception as error:
        return f"{type(error).__name__}"


async def main() -> None:
    for host in ("api.example", *["flaky.example"] * 4):
        clock.now += 1.0
        print(f"t={clock.now:.0f} {host}: {await fetch(host)}")
    hosts.get("legacy.example").force_open()  # an operator holds it open

    print("\nevent log of http:flaky.example")
    for event in hosts.get("flaky.example").event_log():
        repeats = f" (x{event.repeats} in a row)" if event.repeats > 1 else ""
        print(f"  t={event.at:.0f} {event.kind:<10} {event.detail}{repeats}")

    print("\nreport")
    print(hosts.report().summary())


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
