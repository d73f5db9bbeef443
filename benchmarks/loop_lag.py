"""Event-loop lag under 1,000 concurrent guarded tasks, per storage and backend.

Run ``python benchmarks/loop_lag.py`` (the saturating load, under asyncio and trio, with
memory, Redis and PostgreSQL storage: about 90 s on a 2-core machine) and
``python benchmarks/loop_lag.py --load paced`` (the paced load, as long). Options:
``--backend asyncio`` or ``--backend trio`` for one backend; ``--storage memory,redis`` for
some storages; ``--seconds S`` per row (default 10); ``--tasks N`` (default 1,000);
``--no-references`` to skip the two reference rows; ``--profile`` to print, after the
tables, a cProfile of one extra run per storage (where the loop's time went); ``--json
PATH`` to keep every sample. Prints markdown tables; the exit status is 1 if a check failed.

Servers: ``--url`` (default ``$BREAKER_MACHINES_REDIS_URL`` or
``redis://127.0.0.1:6379/0``) and ``--dsn`` (default ``$BREAKER_MACHINES_POSTGRES_DSN`` or
``postgresql://postgres@127.0.0.1:5432/test``). Each row uses a fresh key prefix
(``bm-lag-<random>``, its keys deleted at the end) or schema (``bm_lag_<random>``, dropped
at the end).

What is measured
----------------
In one process, under ``anyio.run(..., backend=...)``: a breaker on the storage, its runner
running (flushing to the storage at its defaults: every 0.1 s or 10,000 outcomes), and
1,000 tasks, each looping ``async with breaker.guard(): await anyio.sleep(d)``. 5 % of the
calls then raise (a counted failure). The breaker has a rate rule that never trips at that
rate (``failure_rate=0.5`` over ``window=10`` s, ``minimum_calls=100``), so every outcome
goes through the core (the expensive path; ``--rule consecutive`` uses
``consecutive_failures=1000`` instead, where successes skip the core); the breaker must end
CLOSED, with no rejection, no storage error and nothing dropped or left unflushed. Two loads:

- *saturating* (default): ``d`` is 0 for half the calls, uniform in [0, 2 ms] for the
  others. The tasks want far more calls than one core can run, so the loop never idles:
  the lag is the time the loop takes to go once through its ready tasks.
- *paced*: ``d`` uniform in [50, 150] ms, about 10,000 calls/s in all, which leaves the
  loop idle most of the time: the lag shows what the breaker and its storage add in bursts
  (flushes, the core's steps, garbage collection).

A monitor task sleeps 1 ms (``anyio.sleep(0.001)``) over and over and records how late it
wakes: lag = (wake-up - start of the sleep) - 1 ms, on ``time.perf_counter()``. After a
0.5 s warm-up, the lag is recorded for ``--seconds``: p50, p99, max and the samples over
5 ms. Goal: p99 <= 5 ms. Calls/s is the calls completed per second over the same span.
The garbage collector's pauses over the span are counted (``gc.callbacks``), with the
longest: a pause stops the loop.

Two rows per backend are references, not storages: *idle* (the monitor alone: the timer
granularity of the loop) and *no breaker* (the same 1,000 tasks with a bare
``await anyio.sleep(d)``: the lag the load itself causes).
"""

from __future__ import annotations

import os
import sys

import _environment  # benchmarks/_environment.py (run as a script: its folder is on the path)
from _harness import clean_redis, drop_schema  # benchmarks/_harness.py

# benchmarks/redis.py sits next to this file: keep this directory off the import path, or
# ``import redis`` would import that script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402

from breaker_machines import Breaker, CircuitOpenError, State, running  # noqa: E402
from breaker_machines.storage import PostgresStorage, RedisStorage  # noqa: E402

GOAL_MS = 5.0  # p99 lag
TICK = 0.001  # the monitor's sleep
WARMUP = 0.5
# A call's sleep: 0 for a share of the calls, else uniform in [low, high] seconds.
LOADS = {
    "saturating": {"zero_share": 0.5, "low": 0.0, "high": 0.002},
    "paced": {"zero_share": 0.0, "low": 0.050, "high": 0.150},
}
FAILURE_SHARE = 0.05  # share of calls that raise (never enough to trip)
START_LIMIT = 60.0  # seconds a storage may take to open, subscribe and sync
NAME = "loop lag bench"
DEFAULT_URL = os.environ.get("BREAKER_MACHINES_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_DSN = os.environ.get(
    "BREAKER_MACHINES_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
# Trip rules that never trip at FAILURE_SHARE: a rate rule (every outcome steps the core)
# or a run of consecutive failures (successes and most failures skip the core).
RULES: dict[str, dict[str, Any]] = {
    "rate": {"failure_rate": 0.5, "window": 10.0, "minimum_calls": 100},
    "consecutive": {"consecutive_failures": 1000},
}
CASES = ("idle", "bare", "memory", "redis", "postgres")
TITLES = {
    "idle": "idle (monitor only)",
    "bare": "no breaker (bare tasks)",
    "memory": "MemoryStorage",
    "redis": "RedisStorage",
    "postgres": "PostgresStorage",
}


class Boom(Exception):
    """The dependency failed."""


@dataclass
class Settings:
    seconds: float
    tasks: int
    url: str
    dsn: str
    token: str
    load: str = "saturating"
    rule: str = "rate"
    seed: int = 20240601


@dataclass
class Row:
    case: str
    backend: str
    lags_ms: list[float] = field(default_factory=list)
    calls: int = 0
    failures: int = 0
    seconds: float = 0.0
    invalid: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    cleanup: str | None = None
    gc_pauses: list[tuple[float, int]] = field(default_factory=list)  # (ms, generation)

    @property
    def breaker_row(self) -> bool:
        return self.case in ("memory", "redis", "postgres")


# ---------------------------------------------------------------------------- one measurement


@contextlib.asynccontextmanager
async def open_storage(
    case: str, settings: Settings, tag: str
) -> AsyncIterator[RedisStorage | PostgresStorage | None]:
    if case == "redis":
        async with RedisStorage(settings.url, prefix=f"bm-lag-{settings.token}-{tag}") as redis:
            with anyio.fail_after(START_LIMIT):
                await redis.wait_subscribed()
            yield redis
    elif case == "postgres":
        schema = f"bm_lag_{settings.token}_{tag}"
        async with PostgresStorage(settings.dsn, schema=schema) as postgres:
            with anyio.fail_after(START_LIMIT):
                await postgres.wait_subscribed()
            yield postgres
    else:
        yield None


async def measure(case: str, backend: str, settings: Settings, tag: str) -> Row:
    row = Row(case, backend)
    rng = random.Random(f"{settings.seed}-{case}-{backend}")
    load = LOADS[settings.load]
    counts = {"calls": 0, "failures": 0, "rejections": 0}
    recording = False
    lags: list[float] = []
    sleep = anyio.sleep
    clock = time.perf_counter

    def delays(n: int) -> list[float]:
        zero, low, high = load["zero_share"], load["low"], load["high"]
        return [0.0 if rng.random() < zero else rng.uniform(low, high) for _ in range(n)]

    def fails(n: int) -> list[bool]:
        return [rng.random() < FAILURE_SHARE for _ in range(n)]

    async def bare_task(seed: int) -> None:
        pattern = delays(97 + seed % 13)  # a precomputed cycle per task: no RNG in the loop
        n = len(pattern)
        i = seed
        while True:
            await sleep(pattern[i % n])
            counts["calls"] += 1
            i += 1

    async def guarded_task(breaker: Breaker, seed: int) -> None:
        pattern = delays(97 + seed % 13)
        failing = fails(89 + seed % 11)
        n, m = len(pattern), len(failing)
        guard = breaker.guard
        i = seed
        while True:
            try:
                async with guard():
                    await sleep(pattern[i % n])
                    if failing[i % m]:
                        raise Boom
            except Boom:
                counts["failures"] += 1
            except CircuitOpenError:
                counts["rejections"] += 1
                await sleep(0.01)
            counts["calls"] += 1
            i += 1

    gc_started = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_started
        if phase == "start":
            gc_started = clock()
        elif recording:
            row.gc_pauses.append(((clock() - gc_started) * 1000, info["generation"]))

    async def monitor() -> None:
        nonlocal recording
        end = clock() + WARMUP
        while clock() < end:
            await sleep(TICK)
        recording = True
        calls0 = counts["calls"]
        failures0 = counts["failures"]
        started = clock()
        end = started + settings.seconds
        while True:
            t0 = clock()
            if t0 >= end:
                break
            await sleep(TICK)
            lags.append((clock() - t0 - TICK) * 1000)
        recording = False
        row.seconds = clock() - started
        row.calls = counts["calls"] - calls0
        row.failures = counts["failures"] - failures0

    gc.callbacks.append(on_gc)
    try:
        async with open_storage(case, settings, tag) as storage:
            breaker: Breaker | None = None
            if case in ("memory", "redis", "postgres"):
                breaker = Breaker(NAME, storage=storage, reset_after=3600, **RULES[settings.rule])
            async with contextlib.AsyncExitStack() as stack:
                if breaker is not None:
                    # (entering running() is bounded by the storage's timeout: one refresh)
                    await stack.enter_async_context(running(breaker))
                    with anyio.fail_after(START_LIMIT):
                        await breaker.sync()  # creates the shared record before the load
                async with anyio.create_task_group() as tg:
                    if case != "idle":
                        for index in range(settings.tasks):
                            if breaker is None:
                                tg.start_soon(bare_task, index)
                            else:
                                tg.start_soon(guarded_task, breaker, index)
                    await monitor()
                    tg.cancel_scope.cancel()
                if breaker is not None:
                    with anyio.fail_after(START_LIMIT):
                        await breaker.sync()
            if breaker is not None:
                stats = breaker.stats()
                row.stats = {
                    "state": stats.state.value,
                    "rejections": counts["rejections"],
                    "storage_errors": getattr(stats, "storage_errors", 0),
                    "dropped": getattr(stats, "dropped", 0),
                    "stale": getattr(stats, "stale", 0),
                    "unflushed": getattr(stats, "unflushed", 0),
                    "trips": stats.trips,
                }
                if isinstance(storage, PostgresStorage):
                    row.stats["statements"] = storage.statements
                keys = ("rejections", "storage_errors", "dropped", "unflushed")
                problems = [f"{key} {row.stats[key]}" for key in keys if row.stats[key]]
                if stats.state is not State.CLOSED:
                    problems.append(f"ended {stats.state.value}")
                if problems:
                    row.invalid = ", ".join(problems)
    finally:
        gc.callbacks.remove(on_gc)
    row.lags_ms = lags
    return row


def run_case(case: str, backend: str, settings: Settings, profile: bool = False) -> Row:
    tag = f"{case[:2]}{backend[:2]}{'p' if profile else ''}"
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler is not None:
            profiler.enable()
        row = anyio.run(measure, case, backend, settings, tag, backend=backend)
    except Exception as error:  # a failed case is reported, not fatal to the others
        row = Row(case, backend, invalid=f"failed: {error!r}")
    finally:
        if profiler is not None:
            profiler.disable()
        cleanup: str | None = None
        if case == "redis":
            pattern = f"bm-lag-{settings.token}-{tag}:*"
            deleted = anyio.run(clean_redis, settings.url, pattern)
            cleanup = f"deleted {deleted} keys"
        elif case == "postgres":
            anyio.run(drop_schema, settings.dsn, f"bm_lag_{settings.token}_{tag}")
            cleanup = "dropped its schema"
    row.cleanup = cleanup
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        print(f"\n<details><summary>cProfile, {TITLES[case]}, {backend}</summary>\n")
        print("```text")
        lines = out.getvalue().strip().splitlines()
        print("\n".join(line.rstrip() for line in lines if line.strip()))
        print("```\n</details>")
    return row


# ---------------------------------------------------------------------------- reporting


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def environment() -> dict[str, Any]:
    return _environment.environment("breaker-machines", "anyio", "trio", "redis", "asyncpg")


def describe(name: str) -> str:
    load = LOADS[name]
    sleeps = f"uniform in [{load['low'] * 1000:g}, {load['high'] * 1000:g}] ms"
    if load["zero_share"]:
        return f"each call sleeping 0 ({load['zero_share']:.0%} of calls) or {sleeps}"
    return f"each call sleeping {sleeps}"


def print_tables(rows: list[Row], settings: Settings) -> None:
    print(
        f"\nEvent-loop lag of a task sleeping {TICK * 1000:g} ms, ms (lag = wake-up - "
        f"requested; {settings.seconds:g} s per row after {WARMUP:g} s of warm-up; "
        f"{settings.tasks:,} tasks, {settings.load} load: {describe(settings.load)}, "
        f"{FAILURE_SHARE:.0%} failing; breaker rule "
        f"{', '.join(f'{k}={v:g}' for k, v in RULES[settings.rule].items())}; "
        "nearest-rank percentiles):\n"
    )
    print(
        f"| backend | storage | samples | p50 | p99 | max | > {GOAL_MS:g} ms | calls/s "
        f"| failures | GC pauses (longest) | goal p99 <= {GOAL_MS:g} ms |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for r in rows:
        title = TITLES[r.case]
        if not r.lags_ms:
            print(f"| {r.backend} | {title} (INVALID: {r.invalid}) | 0 | | | | | | | | n/a |")
            continue
        p50, p99 = percentile(r.lags_ms, 0.5), percentile(r.lags_ms, 0.99)
        rate = f"{r.calls / r.seconds:,.0f}" if r.case != "idle" else "—"
        share = f"{r.failures / r.calls:.1%}" if r.calls and r.breaker_row else "—"
        if r.invalid is not None:
            verdict = f"INVALID: {r.invalid}"
        elif r.breaker_row:
            verdict = "MET" if p99 <= GOAL_MS else f"MISSED ({p99 / GOAL_MS:.1f}x)"
        else:
            verdict = "(reference)"
        over = sum(1 for lag in r.lags_ms if lag > GOAL_MS)
        pauses = [ms for ms, _ in r.gc_pauses]
        collected = f"{len(pauses):,} ({max(pauses):.1f} ms)" if pauses else "0"
        print(
            f"| {r.backend} | {title} | {len(r.lags_ms):,} | {p50:.2f} | {p99:.2f} "
            f"| {max(r.lags_ms):.2f} | {over:,} | {rate} | {share} | {collected} | {verdict} |"
        )
    print("\nChecks (breaker rows):\n")
    for r in rows:
        if not r.breaker_row:
            continue
        extra = f"; {r.cleanup}" if r.cleanup else ""
        shown = ", ".join(f"{k} {v}" for k, v in r.stats.items())
        print(f"- {r.backend}, {TITLES[r.case]}: {shown or r.invalid}{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument(
        "--storage",
        default="memory,redis,postgres",
        help="comma-separated: memory, redis, postgres (default all three)",
    )
    parser.add_argument(
        "--load",
        choices=tuple(LOADS),
        default="saturating",
        help="saturating: sleep 0 or up to 2 ms (default); paced: sleep 50-150 ms",
    )
    parser.add_argument(
        "--rule",
        choices=tuple(RULES),
        default="rate",
        help="rate: failure_rate=0.5 over 10 s (default); consecutive: consecutive_failures=1000",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per row (default 10)")
    parser.add_argument("--tasks", type=int, default=1000, help="guarded tasks (default 1,000)")
    parser.add_argument("--no-references", action="store_true", help="skip idle and no breaker")
    parser.add_argument("--profile", action="store_true", help="cProfile each storage (extra)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis (default {DEFAULT_URL})")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL (default {DEFAULT_DSN})")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    args = parser.parse_args(argv)
    storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    unknown = set(storages) - {"memory", "redis", "postgres"}
    if unknown:
        parser.error(f"unknown storage {sorted(unknown)}")
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    cases = ([] if args.no_references else ["idle", "bare"]) + storages
    settings = Settings(
        args.seconds, args.tasks, args.url, args.dsn, uuid.uuid4().hex[:12], args.load, args.rule
    )
    env = environment()
    started = time.perf_counter()
    rows: list[Row] = []
    for backend in backends:
        for case in cases:
            print(f"  [{backend}] {case}", file=sys.stderr, flush=True)
            seconds = min(settings.seconds, 2.0) if case == "idle" else settings.seconds
            rows.append(run_case(case, backend, dataclasses.replace(settings, seconds=seconds)))
    elapsed = time.perf_counter() - started
    v = env["versions"]
    print(
        f"breaker_machines {v['breaker-machines']} on Python {env['python']} "
        f"({env['platform']}, {env['cpus']} CPUs); anyio {v['anyio']}, trio {v['trio']}, "
        f"redis-py {v['redis']}, asyncpg {v['asyncpg']}; {elapsed:.0f}s."
    )
    if "imported_from" in env:
        print(f"Note: breaker_machines imported from {env['imported_from']}, not this checkout.")
    elif env.get("git", {}).get("src_modified"):
        print(f"Note: src/ has uncommitted changes (HEAD {env['git']['head']}).")
    before, after = env["loadavg"], os.getloadavg()
    print(
        f"Load average (1 min) {before[0]:.2f} at the start, {after[0]:.2f} at the end "
        f"({os.cpu_count()} CPUs): other work on the machine shows in the tails."
    )
    print_tables(rows, settings)
    if args.profile:
        for backend in backends:
            for case in storages:
                print(f"  [{backend}] {case} (profiled)", file=sys.stderr, flush=True)
                run_case(case, backend, settings, profile=True)
    if args.json:
        payload = {
            "environment": env,
            "seconds": settings.seconds,
            "tasks": settings.tasks,
            "load": {"name": settings.load, **LOADS[settings.load]},
            "rule": RULES[settings.rule],
            "rows": [
                {
                    "backend": r.backend,
                    "case": r.case,
                    "lags_ms": r.lags_ms,
                    "calls": r.calls,
                    "failures": r.failures,
                    "seconds": r.seconds,
                    "stats": r.stats,
                    "gc_pauses": r.gc_pauses,
                    "invalid": r.invalid,
                }
                for r in rows
            ],
        }
        Path(args.json).write_text(json.dumps(payload) + "\n")
        print(f"\nWrote {args.json}")
    return 1 if any(r.invalid for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
