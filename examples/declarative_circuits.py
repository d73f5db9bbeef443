"""Circuits declared on a class: ``python examples/declarative_circuits.py [asyncio|trio]``.

A payment client declares three circuits: one for the provider's API, shared by every
client (``api``); one per client object, for its login session (``session``); and one per
receipt mirror, from a template (``mirrors``). A fake provider, in memory, fails where the
demo says; the circuits open where they should, and a client is garbage collected as soon
as it is dropped.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Awaitable

import anyio
import anyio.lowlevel

from breaker_machines import (
    CircuitOpenError,
    Transition,
    circuit,
    circuits_of,
    running,
    template,
    templates_of,
)


def alert(transition: Transition) -> None:
    print(f"  ALERT {transition.breaker} opened")


class FakeProvider:
    """The payment provider, in memory: its API can be down, and so can a receipt mirror."""

    def __init__(self) -> None:
        self.api_down = False
        self.mirrors_down: set[str] = set()

    async def pay(self, amount: int) -> str:
        await anyio.lowlevel.checkpoint()
        if self.api_down:
            raise ConnectionError("API unreachable")
        return f"paid {amount}"

    async def receipt(self, mirror: str) -> str:
        await anyio.lowlevel.checkpoint()
        if mirror in self.mirrors_down:
            raise ConnectionError(f"{mirror} unreachable")
        return f"receipt from {mirror}"


class PaymentClient:
    # One circuit for the class: every PaymentClient shares this breaker.
    api = circuit(consecutive_failures=2, reset_after=0.1, on_open=alert)
    # One circuit per PaymentClient object, for its own login session.
    session = circuit(per_instance=True, consecutive_failures=1, on_open=alert)
    # One circuit per mirror host, made from this template on first use.
    mirrors = template(consecutive_failures=1, max_size=100, on_open=alert)

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.logged_in = True

    @api.protect
    async def pay(self, amount: int) -> str:
        """Pay ``amount`` through the provider's API."""
        return await self.provider.pay(amount)

    @session.protect
    async def refresh(self) -> str:
        """Refresh this client's login session."""
        await anyio.lowlevel.checkpoint()
        if not self.logged_in:
            raise PermissionError("session expired")
        return "session refreshed"

    async def receipt(self, mirror: str) -> str:
        """Fetch a receipt from ``mirror``, through that mirror's circuit."""
        async with self.mirrors.get(mirror).guard():
            return await self.provider.receipt(mirror)


async def attempt(label: str, call: Awaitable[str]) -> None:
    try:
        print(f"  {label}: {await call}")
    except CircuitOpenError as error:
        print(f"  {label}: rejected, {error.name} is open")
    except (ConnectionError, PermissionError) as error:
        print(f"  {label}: {type(error).__name__}: {error}")


async def main() -> None:
    provider = FakeProvider()
    alice, bob, carol = (PaymentClient(provider) for _ in range(3))

    print("names:")
    print(f"  api         {PaymentClient.api.name}")
    print(f"  sessions    {alice.session.name}, {bob.session.name}, {carol.session.name}")
    print(f"  mirrors     {PaymentClient.mirrors.prefix}<host>")

    # Runners: the class's circuits once, each client's own circuits, the templates.
    sessions = [client.session for client in (alice, bob, carol)]
    async with running(*circuits_of(PaymentClient), *sessions), anyio.create_task_group() as tg:
        for registry in templates_of(PaymentClient):
            await tg.start(registry.run)

        print("the API goes down (one circuit for every client):")
        provider.api_down = True
        await attempt("alice pays 10", alice.pay(10))
        await attempt("bob pays 20", bob.pay(20))
        await attempt("carol pays 30", carol.pay(30))

        print("alice's session expires (a circuit per client):")
        alice.logged_in = False
        await attempt("alice refreshes", alice.refresh())
        await attempt("alice refreshes", alice.refresh())
        await attempt("bob refreshes", bob.refresh())

        print("a mirror goes down (a circuit per mirror):")
        provider.mirrors_down.add("eu.mirror.example")
        await attempt("alice, eu mirror", alice.receipt("eu.mirror.example"))
        await attempt("bob, eu mirror", bob.receipt("eu.mirror.example"))
        await attempt("bob, us mirror", bob.receipt("us.mirror.example"))

        print("the API comes back:")
        provider.api_down = False
        await anyio.sleep(0.15)  # the demo waits out reset_after
        await attempt("carol pays 40", carol.pay(40))
        print(f"  api circuit: {PaymentClient.api.state.value}")
        tg.cancel_scope.cancel()

    print("dropping alice:")
    gone = weakref.ref(alice)
    del alice, sessions
    gc.collect()
    print(f"  collected: {gone() is None}")
    print(f"  live sessions: {len(PaymentClient.session.breakers())}")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
