"""Nanoseconds per ``step()`` call in CLOSED, per trip rule, for a success and a failure.

Run it as ``python benchmarks/core_step.py``. Each figure is the best of several repeats
of many calls from the same warmed-up state (the windows already hold outcomes), so it is
the cost of one step, loop overhead included. Thresholds are out of reach: the failure
never trips, it only counts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from breaker_machines._core import (
    BreakerState,
    CallFinished,
    Outcome,
    Policy,
    inert_success,
    step,
)

LOOPS = 50_000
REPEATS = 5
NEVER = 10**9  # a threshold no benchmark reaches
NOW = 1000.0

POLICIES: dict[str, Policy] = {
    "consecutive failures": Policy(consecutive_failures=NEVER),
    "failures within 60 s": Policy(failures=NEVER, within=60.0),
    "failure rate, last 100 calls": Policy(failure_rate=1.0, minimum_calls=100, window_calls=100),
    "failure rate, last 60 s": Policy(failure_rate=1.0, minimum_calls=NEVER, window=60.0),
    "slow call rate, last 100 calls": Policy(
        slow_call_rate=1.0, slow_call_duration=1.0, minimum_calls=100, window_calls=100
    ),
}


def warmed(policy: Policy) -> BreakerState:
    """A CLOSED state whose windows already hold a mix of outcomes."""
    state = BreakerState()
    for i in range(60):
        outcome = Outcome.FAILURE if i % 3 == 0 else Outcome.SUCCESS
        event = CallFinished(outcome, NOW - 0.001 * (60 - i), 0.5 + (i % 4), 0)
        state = step(policy, state, event).state
    assert state.version == 0, "warming up must not trip"
    return state


def best_ns(call: Callable[[], object]) -> float:
    """Best-of-REPEATS nanoseconds per call."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for _ in range(LOOPS):
            call()
        best = min(best, (time.perf_counter_ns() - start) / LOOPS)
    return best


def main() -> int:
    rows: list[tuple[str, str, str]] = []
    for name, policy in POLICIES.items():
        state = warmed(policy)
        success = CallFinished(Outcome.SUCCESS, NOW, 0.1, 0)
        failure = CallFinished(Outcome.FAILURE, NOW, 0.1, 0)
        assert step(policy, state, failure).effects == (), "the failure must not trip"
        ok = best_ns(lambda p=policy, s=state, e=success: step(p, s, e))
        bad = best_ns(lambda p=policy, s=state, e=failure: step(p, s, e))
        rows.append((name, f"{ok:,.0f}", f"{bad:,.0f}"))

    policy = POLICIES["consecutive failures"]
    fresh = BreakerState()
    assert inert_success(policy, fresh)
    inert = best_ns(lambda: inert_success(policy, fresh))

    header = ("step() in CLOSED, trip rule", "success ns", "failure ns")
    inert_label = "inert_success() (CLOSED, no rate rule)"
    width = max(len(inert_label), *(len(r[0]) for r in [header, *rows]))
    cols = [max(len(r[i]) for r in [header, *rows]) for i in (1, 2)]
    line = f"{header[0]:<{width}}  {header[1]:>{cols[0]}}  {header[2]:>{cols[1]}}"
    print(line)
    print("-" * len(line))
    for name, ok_ns, bad_ns in rows:
        print(f"{name:<{width}}  {ok_ns:>{cols[0]}}  {bad_ns:>{cols[1]}}")
    print("-" * len(line))
    print(f"{inert_label:<{width}}  {inert:>{cols[0]},.0f}")
    print(f"\n{LOOPS:,} calls x best of {REPEATS}; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
