"""Type tests: circuits declared on classes (``breaker_machines.declarative``).

Checked by ``mypy --strict`` and ``pyright`` (strict) in the ``typecheck`` session. Lines
marked with an ignore comment must be errors: both checkers are set to report an ignore
comment that suppresses nothing, so a signature that stopped being checked fails the run.
"""

from __future__ import annotations

from typing_extensions import assert_type

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    Circuit,
    CircuitTemplate,
    InstanceCircuit,
    ThreadedBreaker,
    circuit,
    circuits_of,
    running,
    template,
    templates_of,
)


class PaymentClient:
    charge = circuit(failures=3, within=60, reset_after=10)
    own = circuit(per_instance=True)
    sync = circuit(threaded=True)
    own_sync = circuit(per_instance=True, threaded=True)
    per_host = template(failures=5, max_size=256)

    @charge.protect
    async def pay(self, amount: int, *, currency: str = "EUR") -> str:
        return f"{amount} {currency}"

    @own.protect
    async def refund(self, amount: int) -> None:
        pass

    @sync.protect
    def compute(self, x: int) -> float:
        return x / 2

    @charge.protect  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    def not_async(self) -> int:
        return 1


declared = circuit(failures=3)
assert_type(declared, Circuit[Breaker])
assert_type(circuit(per_instance=True), InstanceCircuit[Breaker])
assert_type(circuit(threaded=True), Circuit[ThreadedBreaker])
assert_type(template(), CircuitTemplate)


async def uses(client: PaymentClient) -> None:
    assert_type(client.charge, Breaker)
    assert_type(PaymentClient.charge, Breaker)
    assert_type(client.own, Breaker)
    assert_type(PaymentClient.own, InstanceCircuit[Breaker])
    assert_type(PaymentClient.own.breakers(), list[Breaker])
    assert_type(client.sync, ThreadedBreaker)
    assert_type(client.own_sync, ThreadedBreaker)
    assert_type(client.per_host, BreakerRegistry)
    assert_type(PaymentClient.per_host, BreakerRegistry)
    assert_type(client.per_host.get("api.example.com"), Breaker)
    assert_type(await client.pay(3), str)
    assert_type(await client.pay(3, currency="USD"), str)
    assert_type(await client.refund(1), None)
    assert_type(client.compute(2), float)
    await client.pay("3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await client.pay(3, currency=1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    client.compute("2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert_type(circuits_of(client), list[Breaker])
    assert_type(circuits_of(PaymentClient, threaded=True), list[ThreadedBreaker])
    assert_type(templates_of(client), list[BreakerRegistry])
    async with running(*circuits_of(PaymentClient)):
        pass
