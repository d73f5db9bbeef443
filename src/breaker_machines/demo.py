"""A simulated flaky service under concurrent load, watched through a breaker.

``python -m breaker_machines demo`` (``--backend trio`` for trio). The service is healthy,
then fails hard, then recovers; twenty tasks call it all along. Every transition is
printed with its time, and the counts are printed twice a second.
"""

from __future__ import annotations

import random
import sys
import time
from typing import TextIO

import anyio

from .breaker import Breaker, running
from .callbacks import Transition
from .errors import CircuitOpenError, CircuitTimeoutError

__all__ = ["run_demo"]

_WORKERS = 20


class FlakyService:
    """Healthy for ``outage_at`` seconds, down until ``recovery_at``, then healthy again."""

    def __init__(self, started: float, outage_at: float, recovery_at: float, seed: int) -> None:
        self.started = started
        self.outage_at = outage_at
        self.recovery_at = recovery_at
        self.random: random.Random = random.Random(seed)
        self.reached: int = 0

    def phase(self) -> str:
        """``"down"`` between the outage and the recovery, ``"healthy"`` otherwise."""
        elapsed = time.monotonic() - self.started
        if self.outage_at <= elapsed < self.recovery_at:
            return "down"
        return "healthy"

    async def fetch(self) -> str:
        """One request: fails (or hangs) while down, answers (with rare blips) when healthy."""
        self.reached += 1
        draw = self.random.random()
        if self.phase() == "down":
            if draw < 0.5:
                await anyio.sleep(1.0)  # hangs: the breaker's timeout cuts it short
            raise ConnectionError("upstream refused the connection")
        await anyio.sleep(0.005 + draw * 0.01)
        if draw < 0.03:
            raise ConnectionError("the odd blip")
        return "data"


async def run_demo(seconds: float = 9.0, out: TextIO | None = None) -> dict[str, int]:
    """Run the demo for ``seconds``, printing to ``out`` (stdout); return the final counts."""
    if out is None:
        out = sys.stdout  # looked up per run, so redirected output is honoured
    started = time.monotonic()
    service = FlakyService(started, outage_at=seconds * 0.2, recovery_at=seconds * 0.5, seed=7)
    counts = {"ok": 0, "failed": 0, "timeouts": 0, "rejected": 0, "transitions": 0}

    def stamp() -> str:
        return f"[{time.monotonic() - started:5.2f}s]"

    def on_transition(transition: Transition) -> None:
        counts["transitions"] += 1
        print(
            f"{stamp()} *** {transition.source.value} -> {transition.target.value}"
            f"  ({transition.reason.value})",
            file=out,
        )

    breaker = Breaker(
        "flaky-service",
        failure_rate=0.5,
        minimum_calls=20,
        window=1.0,
        reset_after=seconds * 0.1,
        half_open_probes=2,
        success_threshold=3,
        timeout=0.1,
        on_transition=on_transition,
    )
    print(
        f"{stamp()} {_WORKERS} tasks call a service that goes down at "
        f"{service.outage_at:.1f}s and recovers at {service.recovery_at:.1f}s",
        file=out,
    )

    async def worker() -> None:
        while True:
            try:
                await breaker.call(service.fetch)
                counts["ok"] += 1
            except CircuitOpenError:
                counts["rejected"] += 1
                await anyio.sleep(0.05)
            except CircuitTimeoutError:
                counts["timeouts"] += 1
            except ConnectionError:
                counts["failed"] += 1
            await anyio.sleep(0.02)

    async def reporter() -> None:
        while True:
            await anyio.sleep(0.5)
            print(
                f"{stamp()} {breaker.state.value:<9} service {service.phase():<7} "
                f"ok {counts['ok']:>5}  failed {counts['failed']:>4}  "
                f"timeouts {counts['timeouts']:>3}  rejected {counts['rejected']:>5}",
                file=out,
            )

    async with running(breaker), anyio.create_task_group() as tg:
        for _ in range(_WORKERS):
            tg.start_soon(worker)
        tg.start_soon(reporter)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    reached = service.reached
    total = counts["ok"] + counts["failed"] + counts["timeouts"] + counts["rejected"]
    print(
        f"{stamp()} done: {total} calls, {counts['rejected']} rejected without reaching the "
        f"service ({reached} reached it), {counts['transitions']} transitions; "
        f"final state {breaker.state.value}",
        file=out,
    )
    return counts
