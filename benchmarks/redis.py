"""Redis storage: per-call overhead and Redis commands per call, against pybreaker's Redis storage.

Run ``python benchmarks/redis.py`` (``--quick`` for a smoke run, ``--json PATH`` to keep the
numbers, ``--url redis://...`` to use a server of your own). Prints markdown tables.

What is measured
----------------
1. **Per-call overhead** of a guarded success, ``with breaker.guard(): pass``, in a tight
   loop under asyncio with the breaker's runner running: a breaker on ``RedisStorage``
   (defaults: flush every 0.1 s or 1,000 outcomes) against one on ``MemoryStorage``, in the
   same run. The loop yields (``await asyncio.sleep(0)``) every 100 calls, so the runner
   flushes while the caller works, as it would under a real load; everything the runner
   does on the event loop (building the batch, the flush round trip, reading the record
   back, the core's step on the fleet's counts) is inside the timed loop. The overhead is
   ``t(guarded loop) - t(the same loop with a bare body)``, per call. Goal: Redis <= 1.5x
   memory. A third breaker, on a RedisStorage that never flushes by itself and is flushed
   between timed slices (outside the timing), splits the Redis figure into the guard's own
   cost and the runner's.
2. **Redis commands per guarded call** at a steady load: ``INFO commandstats`` read before
   and after N guarded calls (runner flushing at its default interval and size), divided
   by N. Two figures: every command the server executed (the sum of ``calls`` over
   commandstats, which counts the commands a Lua script runs too) and round trips
   (commands sent by a client: for breaker_machines, the script calls). The load runs as
   a tight loop (the flush size decides), and paced at 10,000 and 1,000 calls/s (the
   flush interval decides: at most 10 flushes a second per breaker and process). Goal:
   <= 0.01 at each load.
3. **pybreaker** 1.4 with ``CircuitRedisStorage`` on a sync ``redis.Redis`` client, on the
   same server: the per-call overhead of ``breaker.call(work_sync)`` (against a bare
   ``work_sync()``), and its commands per call. pybreaker with its default memory storage
   is shown for reference.

By default the script starts a private ``redis-server`` (if one is on PATH) on a free port,
so ``INFO commandstats`` counts this script's commands only; ``--url`` uses an existing
server instead, whose other clients then count too. Keys use a unique prefix and are
deleted at the end.

How
---
Like ``benchmarks/overhead.py``: each case is checked (the breaker is CLOSED, the success
counted, no storage error, no outcome dropped) before and after timing, calibrated (N so a
loop lasts about 30 ms, clamped to 1k..200k calls), warmed up, then timed in R rounds (21;
3 with ``--quick``) in a shuffled order with ``gc.collect()`` before each loop. A figure is
the minimum over rounds (the median in brackets). The exit status is 1 if a check failed.
"""

from __future__ import annotations

import os
import sys

import _environment  # benchmarks/_environment.py (run as a script: its folder is on the path)
import _harness  # benchmarks/_harness.py: the timing, and the private redis-server
from _harness import (
    Case,
    Check,
    Loop,
    commandstats,
    delete_keys,
    difference,
    expect,
    figure,
    ns,
    overhead,
    private_redis,
    ratio,
    status,
    x,
)

# This file is named redis.py: keep its directory off the import path, or ``import redis``
# would import this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pybreaker  # noqa: E402

import redis  # noqa: E402
from breaker_machines import Breaker, State, running  # noqa: E402
from breaker_machines.storage import Batch, RedisStorage  # noqa: E402

perf_counter_ns = time.perf_counter_ns

CHUNK = 100  # a tight loop yields to the event loop every CHUNK calls
PACED_CHUNK = 10  # a paced load runs this many calls per tick
UNFLUSHED_SLICE = 20_000  # calls timed between two untimed flushes (the unflushed case)
OVERHEAD_GOAL = 1.5  # Redis / memory overhead
COMMANDS_GOAL = 0.01  # Redis commands per guarded call
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "script|load")
NOT_OURS = ("info",)  # the reads of commandstats themselves


def work_sync() -> int:
    return 1


@dataclass(kw_only=True)
class Settings(_harness.Settings):
    seconds: float  # duration of each paced load
    tight_calls: int
    pybreaker_calls: int


# ---------------------------------------------------------------------------- the cases


def breaker_machines_cases(memory: Breaker, shared: Breaker, unflushed: Breaker) -> list[Case]:
    """``shared`` flushes as configured by default; ``unflushed`` is flushed outside the
    timing (its storage never flushes on its own), which leaves the guard's own cost."""

    async def bare(n: int) -> int:
        sleep = asyncio.sleep
        t0 = perf_counter_ns()
        for _ in range(n // CHUNK):
            for _ in range(CHUNK):
                pass
            await sleep(0)
        return perf_counter_ns() - t0

    def guarded(breaker: Breaker) -> Loop:
        async def loop(n: int) -> int:
            guard = breaker.guard
            sleep = asyncio.sleep
            t0 = perf_counter_ns()
            for _ in range(n // CHUNK):
                for _ in range(CHUNK):
                    with guard():
                        pass
                await sleep(0)
            return perf_counter_ns() - t0

        return loop

    def guarded_then_flushed(breaker: Breaker) -> Loop:
        async def loop(n: int) -> int:
            guard = breaker.guard
            sleep = asyncio.sleep
            elapsed = 0
            for start in range(0, n, UNFLUSHED_SLICE):  # the batch stays far below its bound
                t0 = perf_counter_ns()
                for _ in range(min(UNFLUSHED_SLICE, n - start) // CHUNK):
                    for _ in range(CHUNK):
                        with guard():
                            pass
                    await sleep(0)
                elapsed += perf_counter_ns() - t0
                await breaker.sync()  # not timed
            return elapsed

        return loop

    def checked(breaker: Breaker) -> Check:
        async def check() -> None:
            expect(breaker.state is State.CLOSED, f"{breaker.name} is {breaker.state.value}")
            before = breaker.stats().successes
            with breaker.guard():
                pass
            expect(breaker.stats().successes == before + 1, "the success was not counted")
            await breaker.sync()  # nothing with memory storage
            stats = breaker.stats()
            expect(stats.storage_errors == 0, f"{stats.storage_errors} storage errors")
            expect(not stats.degraded, "the storage is degraded")
            expect(stats.dropped == 0, f"{stats.dropped} outcomes dropped (batch full)")
            expect(stats.stale == 0, f"{stats.stale} outcomes of an old generation")
            expect(stats.unflushed == 0, f"{stats.unflushed} outcomes not flushed by sync()")

        return check

    return [
        Case("bm/bare", "bare loop (`pass`, yield every 100)", bare),
        Case(
            "bm/memory",
            "breaker_machines, MemoryStorage",
            guarded(memory),
            "bm/bare",
            checked(memory),
        ),
        Case(
            "bm/redis",
            "breaker_machines, RedisStorage",
            guarded(shared),
            "bm/bare",
            checked(shared),
        ),
        Case(
            "bm/redis-unflushed",
            "breaker_machines, RedisStorage, flushed outside the timing",
            guarded_then_flushed(unflushed),
            "bm/bare",
            checked(unflushed),
        ),
    ]


def pybreaker_cases(
    memory: pybreaker.CircuitBreaker, shared: pybreaker.CircuitBreaker
) -> list[Case]:
    async def bare(n: int) -> int:
        w = work_sync
        t0 = perf_counter_ns()
        for _ in range(n):
            w()
        return perf_counter_ns() - t0

    def called(breaker: pybreaker.CircuitBreaker) -> Loop:
        async def loop(n: int) -> int:
            call = breaker.call
            w = work_sync
            t0 = perf_counter_ns()
            for _ in range(n):
                call(w)
            return perf_counter_ns() - t0

        return loop

    def checked(breaker: pybreaker.CircuitBreaker) -> Check:
        async def check() -> None:
            expect(breaker.current_state == pybreaker.STATE_CLOSED, "pybreaker is not closed")
            expect(breaker.call(work_sync) == 1, "the call did not run")
            expect(breaker.fail_counter == 0, "pybreaker counted a failure")

        return check

    return [
        Case("pb/bare", "bare sync call `work_sync()`", bare),
        Case(
            "pb/memory",
            "pybreaker, memory storage",
            called(memory),
            "pb/bare",
            checked(memory),
        ),
        Case(
            "pb/redis",
            "pybreaker, CircuitRedisStorage",
            called(shared),
            "pb/bare",
            checked(shared),
        ),
    ]


# ---------------------------------------------------------------------------- timing


async def measure(cases: list[Case], settings: Settings) -> None:
    """Check, calibrate, warm up, then time every valid case in shuffled rounds."""
    await _harness.measure(
        cases, settings, label="overhead", probe=1_000, step=CHUNK, warm_up=True, catch=()
    )


# ---------------------------------------------------------------------------- commands


@dataclass
class Count:
    library: str
    load: str
    calls: int
    seconds: float
    commands: dict[str, int]
    scripts: bool  # the library sends scripts: round trips are the script calls

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    @property
    def round_trips(self) -> int:
        if not self.scripts:
            return self.total
        return sum(self.commands.get(name, 0) for name in SCRIPT_COMMANDS)


async def count_breaker_machines(
    breaker: Breaker, admin: redis.Redis, settings: Settings
) -> list[Count]:
    """Commands per guarded call under a tight loop and two paced loads."""
    guard = breaker.guard
    sleep = asyncio.sleep
    loop = asyncio.get_running_loop()

    async def tight(n: int) -> int:
        for _ in range(n // CHUNK):
            for _ in range(CHUNK):
                with guard():
                    pass
            await sleep(0)
        return n // CHUNK * CHUNK

    def paced(rate: int) -> Callable[[int], Awaitable[int]]:
        async def run(n: int) -> int:
            ticks = n // PACED_CHUNK
            interval = PACED_CHUNK / rate
            due = loop.time()
            for _ in range(ticks):
                for _ in range(PACED_CHUNK):
                    with guard():
                        pass
                due += interval
                await sleep(max(0.0, due - loop.time()))
            return ticks * PACED_CHUNK

        return run

    loads: list[tuple[str, Callable[[int], Awaitable[int]], int]] = [
        ("tight loop", tight, settings.tight_calls),
        ("10,000 calls/s", paced(10_000), int(10_000 * settings.seconds)),
        ("1,000 calls/s", paced(1_000), int(1_000 * settings.seconds)),
    ]
    counts = []
    for load, run, calls in loads:
        await breaker.sync()  # start from an empty batch
        await tight(10 * CHUNK)  # and in the steady state: the runner flushing
        before = commandstats(admin)
        started = time.perf_counter()
        done = await run(calls)
        seconds = time.perf_counter() - started
        commands = difference(before, commandstats(admin), NOT_OURS)
        counts.append(Count("breaker_machines", load, done, seconds, commands, True))
        print(f"  [commands] breaker_machines, {load}: done", file=sys.stderr, flush=True)
    return counts


def count_pybreaker(breaker: pybreaker.CircuitBreaker, admin: redis.Redis, calls: int) -> Count:
    for _ in range(100):
        breaker.call(work_sync)
    before = commandstats(admin)
    started = time.perf_counter()
    for _ in range(calls):
        breaker.call(work_sync)
    seconds = time.perf_counter() - started
    commands = difference(before, commandstats(admin), NOT_OURS)
    return Count("pybreaker", "tight loop", calls, seconds, commands, False)


# ---------------------------------------------------------------------------- reporting


def print_tables(
    cases: list[Case], counts: list[Count], settings: Settings, env: dict[str, Any]
) -> dict[str, Any]:
    by_key = {case.key: case for case in cases}
    other = "median" if settings.stat == "min" else "min"
    print(
        f"\nPer-call overhead of a guarded success, ns ({settings.stat} of "
        f"{settings.rounds} rounds; {other} in brackets), minus its bare loop:\n"
    )
    print("| case | ns/call | overhead ns/call | N per loop |")
    print("|---|--:|--:|--:|")
    for case in cases:
        if case.invalid is not None:
            print(f"| {case.title} | INVALID ({case.invalid}) | | |")
            continue
        cost = f"{ns(figure(case, settings.stat))} [{ns(figure(case, other))}]"
        extra = "—"
        if case.baseline is not None:
            extra = (
                f"{ns(overhead(case, by_key, settings.stat))} [{ns(overhead(case, by_key, other))}]"
            )
        print(f"| {case.title} | {cost} | {extra} | {case.calls:,} |")

    redis_vs_memory = ratio(by_key, "bm/redis", "bm/memory", settings.stat)
    redis_vs_memory_other = ratio(by_key, "bm/redis", "bm/memory", other)

    print(
        "\nCommands per guarded call (INFO commandstats after - before, / calls). "
        "*all*: every command the server ran, including those inside Lua scripts; "
        "*round trips*: commands sent by the client.\n"
    )
    print(
        "| library | load | calls | seconds | round trips | all commands "
        "| round trips/call | all commands/call | commands/s |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for c in counts:
        print(
            f"| {c.library} | {c.load} | {c.calls:,} | {c.seconds:.2f} | {c.round_trips:,} "
            f"| {c.total:,} | {c.round_trips / c.calls:.5f} | {c.total / c.calls:.5f} "
            f"| {c.total / c.seconds:,.0f} |"
        )
    print("\nCommands run (per case):\n")
    for c in counts:
        listed = ", ".join(f"{name} {count:,}" for name, count in c.commands.items())
        print(f"- {c.library}, {c.load}: {listed or 'none'}")

    bm = [c for c in counts if c.library == "breaker_machines"]
    pb = next((c for c in counts if c.library == "pybreaker"), None)
    print("\nGoals (a figure within 10% of its goal is borderline: it can flip between runs):\n")
    print("| goal | measured | status |")
    print("|---|--:|---|")
    print(
        f"| overhead, RedisStorage / MemoryStorage <= {OVERHEAD_GOAL}x "
        f"| {x(redis_vs_memory)} [{x(redis_vs_memory_other)}] "
        f"| {status(redis_vs_memory, OVERHEAD_GOAL)} |"
    )
    commands_met: dict[str, dict[str, bool]] = {}
    for what, per_call in (
        ("round trips", lambda c: c.round_trips / c.calls),
        ("all commands", lambda c: c.total / c.calls),
    ):
        for c in bm:
            value = per_call(c)
            commands_met.setdefault(c.load, {})[what] = value <= COMMANDS_GOAL
            print(
                f"| {what} per call <= {COMMANDS_GOAL}, {c.load} | {value:.5f} "
                f"| {status(value, COMMANDS_GOAL)} |"
            )
    print("\nFor comparison (no goal):\n")
    pb_vs_bm = ratio(by_key, "pb/redis", "bm/redis", settings.stat)
    unflushed_vs_memory = ratio(by_key, "bm/redis-unflushed", "bm/memory", settings.stat)
    print(
        f"- overhead of RedisStorage flushed outside the timing / MemoryStorage: "
        f"{x(unflushed_vs_memory)} (the guard's own cost: every outcome goes into the "
        "batch; the rest of the RedisStorage overhead is the runner's flushing)"
    )
    print(
        f"- overhead of pybreaker + CircuitRedisStorage / breaker_machines + RedisStorage: "
        f"{x(pb_vs_bm)}"
    )
    if pb is not None:
        print(
            f"- pybreaker + CircuitRedisStorage: {pb.round_trips / pb.calls:.2f} round trips "
            f"and {pb.total / pb.calls:.2f} commands per call, at any load"
        )
    print(f"\nServer: {env['server']}.")
    return {
        "redis_vs_memory": redis_vs_memory,
        "redis_vs_memory_other_stat": redis_vs_memory_other,
        "pybreaker_redis_vs_bm_redis": pb_vs_bm,
        "redis_unflushed_vs_memory": unflushed_vs_memory,
        "met": {
            "overhead": redis_vs_memory is not None and redis_vs_memory <= OVERHEAD_GOAL,
            "commands": commands_met,
        },
    }


def environment(settings: Settings, admin: redis.Redis, url: str, private: bool) -> dict[str, Any]:
    versions = _environment.versions("breaker-machines", "anyio", "redis", "pybreaker")
    server = admin.info("server")
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "rounds": settings.rounds,
        "stat": settings.stat,
        "server": (
            f"redis-server {server.get('redis_version')} "
            f"({'private, started by this script' if private else url})"
        ),
    }
    git = _environment.checkout()
    if git:
        info["git"] = git
    return info


# ---------------------------------------------------------------------------- main


async def run(url: str, private: bool, settings: Settings) -> dict[str, Any]:
    prefix = f"bm-bench-{uuid.uuid4().hex[:12]}"
    namespace = f"{prefix}-pybreaker"
    started = time.perf_counter()
    with redis.Redis.from_url(url) as admin, redis.Redis.from_url(url) as sync_client:
        env = environment(settings, admin, url, private)
        try:
            async with (
                RedisStorage(url, prefix=prefix) as storage,
                RedisStorage(
                    url,
                    prefix=prefix,
                    flush_interval=3600,
                    flush_size=UNFLUSHED_SLICE * 2,
                    refresh_interval=3600,
                ) as quiet_storage,
            ):
                await storage.wait_subscribed()
                memory = Breaker("bench-memory")
                shared = Breaker("bench-redis", storage=storage)
                unflushed = Breaker("bench-redis-unflushed", storage=quiet_storage)
                pb_memory = pybreaker.CircuitBreaker(name="bench-memory")
                pb_shared = pybreaker.CircuitBreaker(
                    name="bench-redis",
                    state_storage=pybreaker.CircuitRedisStorage(
                        pybreaker.STATE_CLOSED, sync_client, namespace=namespace
                    ),
                )
                async with running(memory, shared, unflushed):
                    cases = [
                        *breaker_machines_cases(memory, shared, unflushed),
                        *pybreaker_cases(pb_memory, pb_shared),
                    ]
                    await measure(cases, settings)
                    counts = await count_breaker_machines(shared, admin, settings)
                    counts.append(count_pybreaker(pb_shared, admin, settings.pybreaker_calls))
                    print("  [commands] pybreaker: done", file=sys.stderr, flush=True)
                    await shared.sync()
                    record = await storage.flush(shared.name, shared.policy, Batch(0))
                    errors = storage.errors + quiet_storage.errors
        finally:
            deleted = delete_keys(admin, f"{prefix}:*") + delete_keys(admin, f"*{namespace}*")
    elapsed = time.perf_counter() - started
    print(
        f"breaker_machines {env['versions']['breaker-machines']} with RedisStorage vs "
        f"MemoryStorage and pybreaker {env['versions']['pybreaker']} (redis-py "
        f"{env['versions']['redis']}) on Python {env['python']} ({env['platform']}); "
        f"{elapsed:.0f}s; deleted {deleted} keys."
    )
    if env.get("git", {}).get("src_modified"):
        print(f"Note: src/ has uncommitted changes (HEAD {env['git']['head']}).")
    if not private:
        print("Note: commandstats are server-wide: commands of other clients count too.")
    summary = print_tables(cases, counts, settings, env)
    invalid = [case for case in cases if case.invalid is not None]
    if errors or record.status is not State.CLOSED:
        invalid.append(Case("bm/redis", "final record", cases[0].loop))
        print(f"\nINVALID: storage errors {errors}, stored status {record.status.value}")
    return {
        "environment": env,
        "seconds": elapsed,
        "summary": summary,
        "cases": {
            case.key: {
                "title": case.title,
                "calls_per_loop": case.calls,
                "ns_per_call_samples": case.samples,
                "overhead_ns_min": overhead(case, {c.key: c for c in cases}, "min"),
                "overhead_ns_median": overhead(case, {c.key: c for c in cases}, "median"),
                "invalid": case.invalid,
            }
            for case in cases
        },
        "commands": [
            {
                "library": c.library,
                "load": c.load,
                "calls": c.calls,
                "seconds": c.seconds,
                "commands": c.commands,
                "round_trips": c.round_trips,
                "total": c.total,
            }
            for c in counts
        ],
        "invalid": bool(invalid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--rounds", type=int, help="rounds of timing (default 21, quick 3)")
    parser.add_argument(
        "--stat", choices=("min", "median"), default="min", help="how rounds are combined"
    )
    parser.add_argument(
        "--url", help="use this Redis server (default: start a private redis-server)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        settings = Settings(
            args.rounds or 3,
            1_000,
            20_000,
            3_000_000,
            args.stat,
            seconds=0.5,
            tight_calls=20_000,
            pybreaker_calls=200,
        )
    else:
        settings = Settings(
            args.rounds or 21,
            1_000,
            200_000,
            30_000_000,
            args.stat,
            seconds=5.0,
            tight_calls=200_000,
            pybreaker_calls=2_000,
        )
    if args.url:
        payload = asyncio.run(run(args.url, False, settings))
    else:
        with private_redis("bm-bench-redis-") as url:
            payload = asyncio.run(run(url, True, settings))
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nWrote {args.json}")
    return 1 if payload["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
