"""Compatibility layers against the libraries they replace, in the same run.

Run ``python benchmarks/compat.py`` (``--quick`` for a smoke run, ``--json PATH`` to keep
the numbers, ``--url redis://...`` to use a Redis server of your own, ``--no-redis`` to
skip the Redis rows). Prints markdown-ish tables; the exit status is 1 if a case failed
its check.

What is measured
----------------
For each *pair* (a library, and the ``breaker_machines.compat`` module that replaces it),
the *overhead* of a guarded call, ``t(guarded call) - t(bare call)`` in nanoseconds per call,
of both sides of the pair, and their ratio (compat / original; below 1 is faster). Each
figure is ``time.perf_counter_ns()`` around a loop of N calls, divided by N; a guarded loop
differs from its bare loop only by the guard.

Scenarios of the pybreaker pair (``breaker_machines.compat.pybreaker.CircuitBreaker``
against ``pybreaker.CircuitBreaker``, both on their default memory storage unless said):

1. **success**: ``breaker.call(work)`` with ``def work(): return 1``, the circuit CLOSED.
2. **counted failure**: ``breaker.call(fail)`` (a fresh exception each call) with a
   ``fail_max`` no run reaches, caught by the caller; baseline ``fail()``, caught.
3. **open rejection**: the circuit is OPEN (a real failure, an hour-long reset timeout);
   the caller catches ``CircuitBreakerError``. Baseline: the bare failing call, caught.
4. **success on Redis storage**: scenario 1 with ``CircuitRedisStorage`` on a sync
   ``redis.Redis`` client, on the same server for both. Also reported: Redis round trips
   per call (the commands each client sent: a script call is one) and the commands the
   server executed per call (``INFO commandstats`` after - before, which counts the
   commands inside scripts too), over a separate untimed run.

Scenarios of the aiobreaker pair (``breaker_machines.compat.aiobreaker.CircuitBreaker``
against ``aiobreaker.CircuitBreaker``), each loop awaited inside one ``asyncio.run`` and
measured against an async bare loop (``await work()``, ``await fail()`` caught):

1. **success**: ``await breaker.call_async(work)``, the circuit CLOSED.
2. **counted failure**: ``await breaker.call_async(fail)`` with a ``fail_max`` no run
   reaches, caught by the caller.
3. **open rejection**: the circuit is OPEN (a real failure, an hour-long
   ``timeout_duration``); the caller catches ``CircuitBreakerError``. Baseline: the bare
   failing call, caught.
4. **decorator**: ``await work()`` decorated with ``@breaker`` (no goal: for information).

Adding a pair
-------------
A pair is a function ``(Context) -> list[Case]`` appended to ``PAIRS``: its cases carry the
pair's name, a scenario key (``SCENARIOS``; a pair may add its own with ``GOALS``), a side
(``"compat"`` or ``"original"``), a baseline key, a loop ``(n) -> elapsed ns`` (an async
pair runs its loop inside ``asyncio.run`` and times inside the coroutine) and a check that
the breaker is in the state the scenario claims. ``count`` (optional) measures round trips.

How
---
Like ``benchmarks/overhead.py``: every case is checked before and after timing (a case
that fails is INVALID, not timed, and the exit status is 1), calibrated (N so a loop lasts
about 20 ms, clamped), warmed up, then timed in R rounds (11; 3 with ``--quick``) in a
shuffled order with ``gc.collect()`` before each loop. A figure is the minimum over rounds
(noise only adds time); the median-based ratio is shown in brackets.

By default the Redis rows use a private ``redis-server`` (if one is on PATH) started on a
free port, so ``INFO commandstats`` counts this script's commands only.

Goals (compat overhead / original overhead): success <= 0.5x, counted failure <= 0.5x,
open rejection <= 0.6x, Redis success <= 0.75x; Redis round trips per healthy success
<= 1. A ratio within 10% of its goal is flagged as borderline.
"""

from __future__ import annotations

import os
import sys

import _environment  # benchmarks/_environment.py (run as a script: its folder is on the path)
import _harness  # benchmarks/_harness.py: the timing, and the private redis-server
from _harness import (
    SyncCheck,
    SyncLoop,
    commandstats,
    delete_keys,
    difference,
    expect,
    figure,
    measure_sync,
    ns,
    overhead,
    private_redis,
    status,
)

# benchmarks/redis.py would shadow redis-py: keep this directory off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiobreaker  # noqa: E402
import pybreaker  # noqa: E402

import redis  # noqa: E402
from breaker_machines.compat import aiobreaker as compat_aiobreaker  # noqa: E402
from breaker_machines.compat import pybreaker as compat_pybreaker  # noqa: E402

perf_counter_ns = time.perf_counter_ns

HUGE = 2**31 - 1  # a failure threshold no run reaches (the largest count a Policy takes)
RESET = 3600  # seconds an open circuit stays open

SCENARIOS = {
    "success": "success",
    "failure": "counted failure",
    "open": "open rejection",
    "redis": "success, Redis storage",
    "redis-failure": "counted failure, Redis",
}
GOALS = {"success": 0.5, "failure": 0.5, "open": 0.6, "redis": 0.75}
ROUND_TRIPS_GOAL = 1.0  # compat's Redis round trips per healthy success
NOT_OURS = ("info", "ping", "flushdb")  # commands of the script itself

Loop = SyncLoop
Check = SyncCheck


class Boom(Exception):
    """What a failing call raises (a fresh instance every time)."""


def work() -> int:
    return 1


def fail() -> int:
    raise Boom


@dataclass
class Case:
    key: str
    pair: str  # the library the compat module replaces
    scenario: str  # "baseline" or a key of SCENARIOS
    side: str  # "compat", "original" or "bare"
    form: str
    loop: Loop
    baseline: str | None = None
    check: Check | None = None
    count: Callable[[int], dict[str, float]] | None = None  # round trips and commands
    samples: list[float] = field(default_factory=list)
    calls: int = 0
    invalid: str | None = None
    counts: dict[str, float] | None = None


@dataclass(kw_only=True)
class Settings(_harness.Settings):
    count_calls: int  # guarded calls per untimed run that counts Redis commands


@dataclass
class Context:
    """What a pair's cases may use: the Redis server (None: no Redis rows)."""

    redis_url: str | None
    namespace: str
    clients: list[Any] = field(default_factory=list)

    def client(self, cls: type[Any] = redis.Redis) -> Any:
        assert self.redis_url is not None
        client = cls.from_url(self.redis_url)
        self.clients.append(client)
        return client


class CountingRedis(redis.Redis):
    """A client that counts the commands it sends (one per round trip)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return super().execute_command(*args, **options)


# ---------------------------------------------------------------------------- the server


@contextmanager
def redis_server(url: str | None, *, skip: bool) -> Iterator[str | None]:
    """The Redis server to measure on: none, ``url``, or a private one."""
    if skip:
        yield None
    elif url is not None:
        yield url
    else:
        with private_redis("bm-bench-compat-") as private:
            yield private


def executed(before: dict[str, int], after: dict[str, int]) -> int:
    counts = difference(before, after, NOT_OURS)
    return sum(count for name, count in counts.items() if not name.startswith("info"))


# ---------------------------------------------------------------------------- baselines


def baselines() -> list[Case]:
    def bare_ok(n: int) -> int:
        w = work
        t0 = perf_counter_ns()
        for _ in range(n):
            w()
        return perf_counter_ns() - t0

    def bare_fail(n: int) -> int:
        f = fail
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105 (contextlib.suppress would be timed too)
                f()
            except Boom:
                pass
        return perf_counter_ns() - t0

    return [
        Case("bare/ok", "", "baseline", "bare", "work()", bare_ok),
        Case("bare/fail", "", "baseline", "bare", "fail(), caught", bare_fail),
    ]


# ---------------------------------------------------------------------------- pybreaker


def pybreaker_cases(context: Context) -> list[Case]:
    """breaker_machines.compat.pybreaker against pybreaker: the same calls on both."""
    cases: list[Case] = []
    sides = (("compat", compat_pybreaker), ("original", pybreaker))
    for side, module in sides:
        tag = "bm" if side == "compat" else "pb"
        ok = module.CircuitBreaker(name=f"{tag}-ok")
        counted = module.CircuitBreaker(fail_max=HUGE, name=f"{tag}-fail")
        tripped = module.CircuitBreaker(fail_max=1, reset_timeout=RESET, name=f"{tag}-open")
        with suppress(module.CircuitBreakerError):
            tripped.call(fail)
        cases += pybreaker_memory_cases(side, module, ok, counted, tripped)
        if context.redis_url is not None:
            cases += pybreaker_redis_cases(side, module, context)
    return cases


def pybreaker_memory_cases(
    side: str, module: Any, ok: Any, counted: Any, tripped: Any
) -> list[Case]:
    error = module.CircuitBreakerError
    closed, opened = module.STATE_CLOSED, module.STATE_OPEN

    def check_ok() -> None:
        expect(ok.current_state == closed, f"{side}: not closed")
        expect(ok.call(work) == 1, f"{side}: the call did not return its result")

    def check_fail() -> None:
        before = counted.fail_counter
        try:
            counted.call(fail)
        except Boom:
            pass
        else:
            raise AssertionError(f"{side}: the failure did not propagate")
        expect(counted.fail_counter == before + 1, f"{side}: the failure was not counted")
        expect(counted.current_state == closed, f"{side}: not closed")

    def check_open() -> None:
        expect(tripped.current_state == opened, f"{side}: not open")
        ran: list[int] = []
        with suppress(error):
            tripped.call(ran.append, 1)
        expect(not ran, f"{side}: an open circuit ran the call")

    def call_ok(n: int) -> int:
        c, w = ok.call, work
        t0 = perf_counter_ns()
        for _ in range(n):
            c(w)
        return perf_counter_ns() - t0

    def call_fail(n: int) -> int:
        c, f = counted.call, fail
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                c(f)
            except Boom:
                pass
        return perf_counter_ns() - t0

    def call_open(n: int) -> int:
        c, f = tripped.call, fail
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                c(f)
            except error:
                pass
        return perf_counter_ns() - t0

    form = "breaker.call(fn)"
    return [
        Case(
            f"pybreaker/success/{side}",
            "pybreaker",
            "success",
            side,
            form,
            call_ok,
            "bare/ok",
            check_ok,
        ),
        Case(
            f"pybreaker/failure/{side}",
            "pybreaker",
            "failure",
            side,
            form,
            call_fail,
            "bare/fail",
            check_fail,
        ),
        Case(
            f"pybreaker/open/{side}",
            "pybreaker",
            "open",
            side,
            form,
            call_open,
            "bare/fail",
            check_open,
        ),
    ]


def pybreaker_redis_cases(side: str, module: Any, context: Context) -> list[Case]:
    namespace = f"{context.namespace}:{side}"

    def breaker(client: Any) -> Any:
        storage = module.CircuitRedisStorage(module.STATE_CLOSED, client, namespace=namespace)
        return module.CircuitBreaker(state_storage=storage, name=f"{side}-redis")

    timed = breaker(context.client())
    counted_client = context.client(CountingRedis)
    counted = breaker(counted_client)
    admin = context.client()
    failing = module.CircuitBreaker(
        fail_max=HUGE,
        state_storage=module.CircuitRedisStorage(
            module.STATE_CLOSED, context.client(), namespace=f"{namespace}:fail"
        ),
    )
    failing_client = context.client(CountingRedis)
    failing_counted = module.CircuitBreaker(
        fail_max=HUGE,
        state_storage=module.CircuitRedisStorage(
            module.STATE_CLOSED, failing_client, namespace=f"{namespace}:fail-counted"
        ),
    )

    def check() -> None:
        expect(timed.current_state == module.STATE_CLOSED, f"{side} (redis): not closed")
        expect(timed.call(work) == 1, f"{side} (redis): the call did not return its result")
        expect(timed.fail_counter == 0, f"{side} (redis): a failure was counted")

    def loop(n: int) -> int:
        c, w = timed.call, work
        t0 = perf_counter_ns()
        for _ in range(n):
            c(w)
        return perf_counter_ns() - t0

    def check_fail() -> None:
        before = failing.fail_counter
        with suppress(Boom):
            failing.call(fail)
        expect(failing.fail_counter == before + 1, f"{side} (redis): failure not counted")
        expect(failing.current_state == module.STATE_CLOSED, f"{side} (redis): not closed")

    def loop_fail(n: int) -> int:
        c, f = failing.call, fail
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105
                c(f)
            except Boom:
                pass
        return perf_counter_ns() - t0

    def counter(
        breaker: Any, client: CountingRedis, fn: Callable[[], int]
    ) -> Callable[[int], dict[str, float]]:
        def call() -> None:
            with suppress(Boom):
                breaker.call(fn)

        def count(n: int) -> dict[str, float]:
            for _ in range(100):  # warm: scripts loaded, connections open
                call()
            client.sent = 0
            before = commandstats(admin)
            for _ in range(n):
                call()
            after = commandstats(admin)
            return {"round_trips": client.sent / n, "commands": executed(before, after) / n}

        return count

    form = "breaker.call(fn), CircuitRedisStorage"
    return [
        Case(
            f"pybreaker/redis/{side}",
            "pybreaker",
            "redis",
            side,
            form,
            loop,
            "bare/ok",
            check,
            counter(counted, counted_client, work),
        ),
        Case(
            f"pybreaker/redis-failure/{side}",
            "pybreaker",
            "redis-failure",
            side,
            form,
            loop_fail,
            "bare/fail",
            check_fail,
            counter(failing_counted, failing_client, fail),
        ),
    ]


# ---------------------------------------------------------------------------- aiobreaker

SCENARIOS["decorator"] = "decorator (success)"  # the aiobreaker pair's own scenario


async def work_async() -> int:
    return 1


async def fail_async() -> int:
    raise Boom


def aiobreaker_cases(context: Context) -> list[Case]:
    """breaker_machines.compat.aiobreaker against aiobreaker: the same awaited calls on both,
    each loop timed inside its own ``asyncio.run`` (its own async bare baselines)."""

    def bare_ok(n: int) -> int:
        async def timed() -> int:
            w = work_async
            t0 = perf_counter_ns()
            for _ in range(n):
                await w()
            return perf_counter_ns() - t0

        return asyncio.run(timed())

    def bare_fail(n: int) -> int:
        async def timed() -> int:
            f = fail_async
            t0 = perf_counter_ns()
            for _ in range(n):
                try:  # noqa: SIM105
                    await f()
                except Boom:
                    pass
            return perf_counter_ns() - t0

        return asyncio.run(timed())

    cases = [
        Case("bare/async-ok", "", "baseline", "bare", "await work()", bare_ok),
        Case("bare/async-fail", "", "baseline", "bare", "await fail(), caught", bare_fail),
    ]
    for side, module in (("compat", compat_aiobreaker), ("original", aiobreaker)):
        cases += aiobreaker_side(side, module)
    return cases


def aiobreaker_side(side: str, module: Any) -> list[Case]:
    tag = "bm" if side == "compat" else "ab"
    error = module.CircuitBreakerError
    closed, opened = module.CircuitBreakerState.CLOSED, module.CircuitBreakerState.OPEN
    ok = module.CircuitBreaker(name=f"{tag}-ok")
    counted = module.CircuitBreaker(fail_max=HUGE, name=f"{tag}-fail")
    tripped = module.CircuitBreaker(
        fail_max=1, timeout_duration=timedelta(seconds=RESET), name=f"{tag}-open"
    )
    decorated_breaker = module.CircuitBreaker(name=f"{tag}-deco")
    decorated = decorated_breaker(work_async)

    async def trip() -> None:
        with suppress(error):
            await tripped.call_async(fail_async)

    asyncio.run(trip())

    def check_ok() -> None:
        expect(ok.current_state == closed, f"{side}: not closed")
        expect(asyncio.run(ok.call_async(work_async)) == 1, f"{side}: no result")

    def check_fail() -> None:
        before = counted.fail_counter
        try:
            asyncio.run(counted.call_async(fail_async))
        except Boom:
            pass
        else:
            raise AssertionError(f"{side}: the failure did not propagate")
        expect(counted.fail_counter == before + 1, f"{side}: the failure was not counted")
        expect(counted.current_state == closed, f"{side}: not closed")

    def check_open() -> None:
        expect(tripped.current_state == opened, f"{side}: not open")
        ran: list[int] = []

        async def probe() -> None:
            ran.append(1)

        with suppress(error):
            asyncio.run(tripped.call_async(probe))
        expect(not ran, f"{side}: an open circuit ran the call")
        expect(tripped.current_state == opened, f"{side}: not open")

    def check_deco() -> None:
        expect(decorated_breaker.current_state == closed, f"{side}: not closed")
        expect(asyncio.run(decorated()) == 1, f"{side}: no result")
        expect(decorated_breaker.fail_counter == 0, f"{side}: a failure was counted")

    def call_ok(n: int) -> int:
        async def timed() -> int:
            c, w = ok.call_async, work_async
            t0 = perf_counter_ns()
            for _ in range(n):
                await c(w)
            return perf_counter_ns() - t0

        return asyncio.run(timed())

    def call_fail(n: int) -> int:
        async def timed() -> int:
            c, f = counted.call_async, fail_async
            t0 = perf_counter_ns()
            for _ in range(n):
                try:  # noqa: SIM105
                    await c(f)
                except Boom:
                    pass
            return perf_counter_ns() - t0

        return asyncio.run(timed())

    def call_open(n: int) -> int:
        async def timed() -> int:
            c, f = tripped.call_async, fail_async
            t0 = perf_counter_ns()
            for _ in range(n):
                try:  # noqa: SIM105
                    await c(f)
                except error:
                    pass
            return perf_counter_ns() - t0

        return asyncio.run(timed())

    def deco_ok(n: int) -> int:
        async def timed() -> int:
            d = decorated
            t0 = perf_counter_ns()
            for _ in range(n):
                await d()
            return perf_counter_ns() - t0

        return asyncio.run(timed())

    form = "await breaker.call_async(fn)"
    pair = "aiobreaker"
    return [
        Case(f"{pair}/success/{side}", pair, "success", side, form, call_ok, "bare/async-ok",
             check_ok),
        Case(f"{pair}/failure/{side}", pair, "failure", side, form, call_fail, "bare/async-fail",
             check_fail),
        Case(f"{pair}/open/{side}", pair, "open", side, form, call_open, "bare/async-fail",
             check_open),
        Case(f"{pair}/decorator/{side}", pair, "decorator", side, "@breaker; await fn()",
             deco_ok, "bare/async-ok", check_deco),
    ]  # fmt: skip


#: Every pair measured.
PAIRS: list[Callable[[Context], list[Case]]] = [pybreaker_cases, aiobreaker_cases]


# ---------------------------------------------------------------------------- timing


def measure(cases: list[Case], settings: Settings) -> None:
    """Check, calibrate, warm up, then time every valid case in shuffled rounds; then count
    the Redis commands of the cases that count them."""
    measure_sync(cases, settings, probe=200)
    for case in cases:
        if case.invalid is None and case.count is not None:
            case.counts = case.count(settings.count_calls)


# ---------------------------------------------------------------------------- reporting


def summarise(cases: list[Case], stat: str) -> list[dict[str, Any]]:
    by_key = {case.key: case for case in cases}
    rows: list[dict[str, Any]] = []
    pairs = list(dict.fromkeys(case.pair for case in cases if case.pair))
    for pair in pairs:
        for scenario, title in SCENARIOS.items():
            sides = {c.side: c for c in cases if c.pair == pair and c.scenario == scenario}
            if not sides:
                continue
            compat = overhead(sides.get("compat"), by_key, stat)
            original = overhead(sides.get("original"), by_key, stat)
            ratio = compat / original if compat is not None and original else None
            goal = GOALS.get(scenario)
            rows.append(
                {
                    "pair": pair,
                    "scenario": scenario,
                    "title": title,
                    "compat_ns": compat,
                    "original_ns": original,
                    "ratio": ratio,
                    "goal": goal,
                    "met": None if ratio is None or goal is None else ratio <= goal,
                    "invalid": {s: c.invalid for s, c in sides.items() if c.invalid},
                    "counts": {s: c.counts for s, c in sides.items() if c.counts},
                }
            )
    return rows


def print_tables(cases: list[Case], rows: list[dict[str, Any]], other: list[dict[str, Any]],
                 stat: str) -> None:  # fmt: skip
    other_stat = "median" if stat == "min" else "min"
    print(f"\nPer case: ns/call ({stat} of rounds).")
    for case in cases:
        if case.invalid is not None:
            print(f"  {case.key:<32} INVALID ({case.invalid})")
        elif case.samples:
            print(f"  {case.key:<32} {ns(figure(case, stat)):>10}   {case.form}")
    print(
        f"\nOverhead per call, ns ({stat} of rounds, minus the bare call); "
        f"ratio = compat / original [{other_stat}-based ratio]."
    )
    print("| pair | scenario | compat | original | ratio | goal | status |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row, row2 in zip(rows, other, strict=True):
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        if row2["ratio"] is not None:
            ratio += f" [{row2['ratio']:.2f}x]"
        goal = "" if row["goal"] is None else f"<= {row['goal']:.2f}x"
        compat = "INVALID" if "compat" in row["invalid"] else ns(row["compat_ns"])
        original = "INVALID" if "original" in row["invalid"] else ns(row["original_ns"])
        print(
            f"| {row['pair']} | {row['title']} | {compat} | {original} | {ratio} | {goal} "
            f"| {status(row['ratio'], row['goal'])} |"
        )
    counted = [row for row in rows if row["counts"]]
    if counted:
        print(
            "\nRedis per guarded call (untimed run): round trips = commands the client sent "
            "(a script call is one);\nexecuted = commands the server ran (INFO commandstats, "
            "including those inside scripts)."
        )
        print("| pair | scenario | side | round trips | executed | goal |")
        print("|---|---|---|---:|---:|---|")
        for row in counted:
            for side, counts in row["counts"].items():
                goal = ""
                if side == "compat" and row["scenario"] == "redis":
                    met = counts["round_trips"] <= ROUND_TRIPS_GOAL
                    goal = f"<= {ROUND_TRIPS_GOAL:.0f}: {'MET' if met else 'MISSED'}"
                print(
                    f"| {row['pair']} | {row['title']} | {side} | {counts['round_trips']:.2f} "
                    f"| {counts['commands']:.2f} | {goal} |"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--rounds", type=int, help="rounds of timing (default 11, quick 3)")
    parser.add_argument("--stat", choices=("min", "median"), default="min")
    parser.add_argument("--url", help="a Redis server to use instead of a private one")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis rows")
    args = parser.parse_args(argv)
    if args.quick:
        settings = Settings(args.rounds or 3, 200, 20_000, 5_000_000, args.stat, count_calls=500)
    else:
        settings = Settings(
            args.rounds or 11, 1_000, 200_000, 20_000_000, args.stat, count_calls=5_000
        )

    started = time.perf_counter()
    with redis_server(args.url, skip=args.no_redis) as url:
        context = Context(url, f"bm-bench-compat-{uuid.uuid4().hex[:8]}")
        try:
            cases = baselines()
            for pair in PAIRS:
                cases += pair(context)
            measure(cases, settings)
        finally:
            if url is not None:
                cleanup(url, context)
    elapsed = time.perf_counter() - started

    env = _environment.environment("breaker-machines", "pybreaker", "aiobreaker", "redis")
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    print(
        f"{versions} on Python {env['python']} ({env['platform']}); {settings.rounds} rounds; "
        f"Redis: {'none' if url is None else ('--url' if args.url else 'private server')}; "
        f"{elapsed:.0f}s."
    )
    if env.get("git", {}).get("src_modified"):
        print(f"Note: src/ has uncommitted changes (HEAD {env['git']['head']}).")
    rows = summarise(cases, settings.stat)
    other = summarise(cases, "median" if settings.stat == "min" else "min")
    print_tables(cases, rows, other, settings.stat)
    if args.url:
        print("\nNote: commandstats are server-wide: commands of other clients count too.")
    invalid = [case for case in cases if case.invalid is not None]
    if invalid:
        print("\nINVALID cases (not in the state the scenario needs; not timed or not trusted):")
        for case in invalid:
            print(f"  {case.key}: {case.invalid}")
    if args.json:
        by_key = {case.key: case for case in cases}
        payload = {
            "environment": env,
            "seconds": elapsed,
            "goals": GOALS,
            "round_trips_goal": ROUND_TRIPS_GOAL,
            "summary": rows,
            "summary_other_stat": other,
            "cases": {
                case.key: {
                    "pair": case.pair,
                    "scenario": case.scenario,
                    "side": case.side,
                    "form": case.form,
                    "baseline": case.baseline,
                    "calls_per_loop": case.calls,
                    "ns_per_call_samples": case.samples,
                    "overhead_ns_min": overhead(case, by_key, "min"),
                    "overhead_ns_median": overhead(case, by_key, "median"),
                    "counts": case.counts,
                    "invalid": case.invalid,
                }
                for case in cases
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nWrote {args.json}")
    return 1 if invalid else 0


def cleanup(url: str, context: Context) -> None:
    for client in context.clients:
        client.close()
    with redis.Redis.from_url(url) as client:
        delete_keys(client, f"{context.namespace}:*")


if __name__ == "__main__":
    sys.exit(main())
