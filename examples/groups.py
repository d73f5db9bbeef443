"""A group with coordinated recovery and a cascade: ``python examples/groups.py [asyncio|trio]``.

The checkout service calls three dependencies. ``payments`` depends on ``db`` (it may only
recover while ``db`` is healthy), and ``db`` cascades to ``search`` (when ``db`` opens,
``search`` is forced open with it, and released when ``db`` closes). A fake clock keeps
the output the same on every run.
"""

from __future__ import annotations

import sys

import anyio

from breaker_machines import BreakerGroup, Cascade, CircuitOpenError


class Clock:
    """A clock the example moves by hand."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


clock = Clock()
down = {"db": False, "payments": False, "search": False}
alerted = anyio.Event()


async def alert(cascade: Cascade) -> None:
    print(f"ALERT {cascade.source} opened; forced open: {', '.join(cascade.targets)}")
    alerted.set()


checkout = BreakerGroup(
    "checkout",
    {
        "db": {"cascades_to": ["search"]},
        "payments": {"depends_on": ["db"]},
        "search": {},
    },
    consecutive_failures=2,
    reset_after=10.0,
    clock=clock,
    on_cascade=alert,
)


async def call(member: str) -> str:
    async def upstream() -> str:
        if down[member]:
            raise ConnectionError(f"{member} unreachable")
        return "ok"

    try:
        return await checkout[member].call(upstream)
    except CircuitOpenError as error:
        if error.state.value == "forced_open":
            return "rejected (forced open by the cascade)"
        if error.retry_after is None:
            return "rejected (open: waiting for its dependency)"
        return f"rejected (open: retry in {error.retry_after:.0f}s)"
    except ConnectionError as error:
        return f"failed: {error}"


def show(title: str) -> None:
    states = ", ".join(f"{m}={s.value}" for m, s in checkout.status().items())
    print(f"{title:<28} {states}")


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(checkout.run)  # runners: the async alert runs in db's
        show("all healthy")
        down["db"] = down["payments"] = True
        for member in ("db", "db", "payments", "payments"):
            await call(member)
        await alerted.wait()  # the async on_cascade runs in db's runner
        show("db and payments tripped")
        print("payments:", await call("payments"))
        print("search:", await call("search"))
        print(checkout.report().summary())

        clock.now += 10.0  # both are due to half-open; db is still down
        down["payments"] = False
        print("payments:", await call("payments"))
        down["db"] = False
        print("db:", await call("db"))
        show("db recovered")
        print("payments:", await call("payments"))
        show("payments recovered")
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
