"""PostgreSQL storage: per-call overhead and statements per call, against memory storage.

Run ``python benchmarks/postgres.py`` (``--quick`` for a smoke run, ``--json PATH`` to keep
the numbers, ``--dsn postgresql://...`` for another server; the default is
``$BREAKER_MACHINES_POSTGRES_DSN`` or ``postgresql://postgres@127.0.0.1:5432/test``). Prints
markdown tables.

What is measured
----------------
1. **Per-call overhead** of a guarded success, ``with breaker.guard(): pass``, in a tight
   loop under asyncio with the breaker's runner running: a breaker on ``PostgresStorage``
   (defaults: flush every 0.1 s or 10,000 outcomes) against one on ``MemoryStorage``, in the
   same run. The loop yields (``await asyncio.sleep(0)``) every 100 calls, so the runner
   flushes while the caller works; everything the runner does on the event loop (the batch,
   the statement and its answer through asyncpg, parsing the record, the core's step on the
   fleet's counts) is inside the timed loop. The overhead is ``t(guarded loop) - t(the same
   loop with a bare body)``, per call. A third breaker, on a PostgresStorage that never
   flushes by itself and is flushed between timed slices (outside the timing), splits the
   figure into the guard's own cost and the runner's.
2. **Statements per guarded call** at a steady load: ``storage.statements`` (statements the
   storage sent: one ``SELECT <table>_flush(...)`` per flush) read before and after N guarded
   calls with the runner flushing at its defaults, divided by N. A tight loop (the flush size
   decides) and loads paced at 10,000 and 1,000 calls/s (the flush interval decides). Each
   load has a storage and a table of its own (``tight``, ``rate10k``, ``rate1k``) whose
   connections run with ``track_functions=pl`` (set in the DSN, which needs a superuser), so
   the server counts every call of the table's functions (``pg_stat_user_functions``) and
   every row written (``pg_stat_user_tables``): a count that does not come from the client,
   checked against ``storage.statements`` over the storage's whole life.
   ``pg_stat_statements`` is used too when the extension is installed in the database and
   loaded (``shared_preload_libraries``); otherwise the script says it is not available.
3. **One flush**, timed alone on a storage whose runner does nothing: wall time and this
   process's CPU time per ``storage.flush()`` of 1,000 outcomes, and of an empty batch (a
   refresh).

Everything lives in a fresh schema ``bm_bench_<random>`` that is dropped at the end.

How
---
Like ``benchmarks/redis.py``: each case is checked (the breaker is CLOSED, the success
counted, no storage error, no outcome dropped) before and after timing, calibrated (N so a
loop lasts about 30 ms, clamped to 1k..200k calls), warmed up, then timed in R rounds (21;
3 with ``--quick``) in a shuffled order with ``gc.collect()`` before each loop. A figure is
the minimum over rounds (the median in brackets). The exit status is 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

import _environment  # benchmarks/_environment.py (run as a script: its folder is on the path)
import _harness  # benchmarks/_harness.py: checking, calibrating and timing cases
from _harness import Case, Check, Loop, expect, figure, ns, overhead, ratio, status, x
from breaker_machines import Breaker, State, running
from breaker_machines.storage import Batch, PostgresStorage, StorageError

perf_counter_ns = time.perf_counter_ns

DEFAULT_DSN = os.environ.get(
    "BREAKER_MACHINES_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
CHUNK = 100  # a tight loop yields to the event loop every CHUNK calls
PACED_CHUNK = 10  # a paced load runs this many calls per tick
UNFLUSHED_SLICE = 2_000  # calls timed between two untimed flushes (the unflushed case)
FLUSH_OUTCOMES = 1_000  # outcomes in each flush timed alone
OVERHEAD_GOAL = 1.5  # PostgreSQL / memory overhead (the Redis storage's goal)
STATEMENTS_GOAL = 0.01  # statements per guarded call (the Redis storage's goal)
STATS_LIMIT = 15.0  # seconds to wait for the server's statistics of closed connections


@dataclass(kw_only=True)
class Settings(_harness.Settings):
    seconds: float  # duration of each paced load
    tight_calls: int
    flushes: int  # flushes timed alone


# ---------------------------------------------------------------------------- the server


def with_parameters(dsn: str, **parameters: str) -> str:
    """``dsn`` with query parameters added (asyncpg passes unknown ones to the server)."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(parameters.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def tracked_dsn(dsn: str, application: str) -> tuple[str, str | None]:
    """A DSN whose connections count function calls (``track_functions=pl``), or the plain
    DSN and why not (the setting needs a superuser)."""
    tracked = with_parameters(dsn, track_functions="pl", application_name=application)
    try:
        connection = await asyncpg.connect(tracked, timeout=10)
    except Exception as error:
        return dsn, f"track_functions=pl refused ({type(error).__name__}: {error})"
    await connection.close()
    return tracked, None


async def statements_extension(admin: Any) -> str | None:
    """None if pg_stat_statements can be read here, else why not."""
    installed = await admin.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'"
    )
    preload = await admin.fetchval("SHOW shared_preload_libraries")
    available = await admin.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
    )
    if installed is None:
        return (
            "not available: the extension is not installed in this database "
            f"(available to CREATE EXTENSION: {'yes' if available else 'no'}; "
            f"shared_preload_libraries = {preload!r})"
        )
    try:
        await admin.fetchval("SELECT count(*) FROM pg_stat_statements")
    except Exception as error:
        return f"not available: {type(error).__name__}: {error}"
    return None


async def statement_calls(admin: Any, schema: str, table: str) -> int:
    """Calls pg_stat_statements counted for this table's functions (all statements)."""
    pattern = f'%"{schema}"."{table}\\_%'
    value = await admin.fetchval(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE $1", pattern
    )
    return int(value)


async def server_counts(admin: Any, schema: str, table: str, application: str) -> dict[str, Any]:
    """Function calls and rows written for ``table``'s objects, as the server counted them,
    once every connection of ``application`` is gone (its statistics are flushed at exit)."""
    deadline = time.monotonic() + STATS_LIMIT
    previous: dict[str, Any] | None = None
    while True:
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        remaining = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
        )
        functions = await admin.fetch(
            "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = $1 "
            "AND funcname LIKE $2",
            schema,
            f"{table}\\_%",
        )
        tables = await admin.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = ANY($2::text[])",
            schema,
            [table, f"{table}_buckets", f"{table}_probes"],
        )
        counts = {
            "functions": {
                row["funcname"].removeprefix(f"{table}_"): int(row["calls"]) for row in functions
            },
            "tables": {
                row["relname"]: {
                    "inserted": int(row["n_tup_ins"]),
                    "updated": int(row["n_tup_upd"]),
                    "hot_updated": int(row["n_tup_hot_upd"]),
                    "deleted": int(row["n_tup_del"]),
                }
                for row in tables
            },
        }
        if remaining == 0 and counts == previous:
            return {**counts, "settled": True}
        if time.monotonic() > deadline:
            return {**counts, "settled": False}
        previous = counts if remaining == 0 else None
        await asyncio.sleep(0.2)  # the server's statistics arrive on their own schedule


# ---------------------------------------------------------------------------- the cases


def cases_for(memory: Breaker, shared: Breaker, unflushed: Breaker) -> list[Case]:
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
            "bm/postgres",
            "breaker_machines, PostgresStorage",
            guarded(shared),
            "bm/bare",
            checked(shared),
        ),
        Case(
            "bm/postgres-unflushed",
            "breaker_machines, PostgresStorage, flushed outside the timing",
            guarded_then_flushed(unflushed),
            "bm/bare",
            checked(unflushed),
        ),
    ]


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


# ---------------------------------------------------------------------------- timing


async def measure(cases: list[Case], settings: Settings) -> None:
    """Check, calibrate, warm up, then time every valid case in shuffled rounds; a storage
    error in a loop marks its case INVALID."""
    await _harness.measure(
        cases,
        settings,
        label="overhead",
        probe=1_000,
        step=CHUNK,
        warm_up=True,
        catch=(StorageError,),
        describe=failed,
    )


def failed(number: int | None, error: Exception) -> str:
    return f"warm-up: {error}" if number is None else f"round {number}: {error}"


# ---------------------------------------------------------------------------- statements


@dataclass
class Count:
    load: str
    table: str
    calls: int
    seconds: float
    statements: int  # storage.statements over the steady load
    lifetime: int  # storage.statements from open to close
    server: dict[str, Any] | None = None  # pg_stat_user_functions / _tables, whole life
    extension: int | None = None  # pg_stat_statements over the steady load
    dropped: int = 0  # outcomes the breaker dropped (its batch was full)
    errors: int = 0  # failed storage operations
    invalid: str | None = None


async def count_load(
    admin: Any,
    *,
    dsn: str,
    application: str | None,
    extension: bool,
    schema: str,
    table: str,
    load: str,
    rate: int | None,
    calls: int,
) -> Count:
    """Statements per guarded call for one load, on a storage and a table of its own."""
    storage = PostgresStorage(dsn, schema=schema, table=table)
    breaker = Breaker(f"bench-{table}", storage=storage)
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

    run = tight if rate is None else paced(rate)
    invalid = None
    async with storage:
        await storage.wait_subscribed()
        async with running(breaker):
            await breaker.sync()  # start from an empty batch
            await tight(10 * CHUNK)  # and in the steady state: the runner flushing
            before = storage.statements
            ext_before = await statement_calls(admin, schema, table) if extension else 0
            started = time.perf_counter()
            done = await run(calls)
            seconds = time.perf_counter() - started
            statements = storage.statements - before
            ext = await statement_calls(admin, schema, table) - ext_before if extension else None
            try:
                await checked(breaker)()
            except AssertionError as error:
                invalid = str(error)
            except Exception as error:
                invalid = f"the check raised {error!r}"
            stats = breaker.stats()
    count = Count(load, table, done, seconds, statements, storage.statements, extension=ext)
    count.dropped = stats.dropped
    count.errors = storage.errors
    count.invalid = invalid or (f"{storage.errors} storage errors" if storage.errors else None)
    if application is not None:
        count.server = await server_counts(admin, schema, table, application)
    print(f"  [statements] {load}: done", file=sys.stderr, flush=True)
    return count


# ---------------------------------------------------------------------------- one flush


@dataclass
class FlushTiming:
    what: str
    flushes: int
    wall_us: list[float]
    cpu_us: float  # this process's CPU per flush (asyncpg, the bridge, parsing)


async def time_flushes(
    storage: PostgresStorage, breaker: Breaker, flushes: int
) -> list[FlushTiming]:
    """``storage.flush()`` timed alone: a full batch of successes, and an empty one."""
    policy = breaker.policy
    name = breaker.name
    await storage.flush(name, policy, Batch(0, "s" * FLUSH_OUTCOMES))  # creates the row
    timings = []
    for what, outcomes in ((f"{FLUSH_OUTCOMES:,} successes", "s" * FLUSH_OUTCOMES), ("empty", "")):
        wall = []
        cpu0 = time.process_time()
        for _ in range(flushes):
            t0 = perf_counter_ns()
            await storage.flush(name, policy, Batch(0, outcomes))
            wall.append((perf_counter_ns() - t0) / 1000)
        cpu = (time.process_time() - cpu0) / flushes * 1e6
        timings.append(FlushTiming(what, flushes, wall, cpu))
    return timings


# ---------------------------------------------------------------------------- reporting


def print_tables(
    cases: list[Case],
    counts: list[Count],
    flushes: list[FlushTiming],
    settings: Settings,
    env: dict[str, Any],
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
        title = case.title if case.invalid is None else f"{case.title} (INVALID: {case.invalid})"
        if not case.samples:
            print(f"| {title} | | | |")
            continue
        cost = f"{ns(figure(case, settings.stat))} [{ns(figure(case, other))}]"
        extra = "—"
        if case.baseline is not None:
            top = overhead(case, by_key, settings.stat, shown=True)
            extra = f"{ns(top)} [{ns(overhead(case, by_key, other, shown=True))}]"
        print(f"| {title} | {cost} | {extra} | {case.calls:,} |")

    pg_vs_memory = ratio(by_key, "bm/postgres", "bm/memory", settings.stat)
    pg_vs_memory_other = ratio(by_key, "bm/postgres", "bm/memory", other)
    unflushed_vs_memory = ratio(by_key, "bm/postgres-unflushed", "bm/memory", settings.stat)

    print(
        "\nStatements per guarded call (storage.statements after - before, / calls), and "
        "what the server counted over each storage's whole life (open to close: the "
        "start-up refresh and sweep, the warm-up and the final flush included):\n"
    )
    print(
        "| load | calls | seconds | statements | statements/call | statements/s "
        "| dropped | storage errors | lifetime: sent | lifetime: server |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for c in counts:
        sent = served = "n/a"
        if c.server is not None:
            functions = c.server["functions"]
            top = sum(functions.get(f, 0) for f in ("flush", "propose", "acquire", "sweep"))
            sent, served = f"{c.lifetime:,}", f"{top:,}"
            if not c.server["settled"]:
                served += " (unsettled)"
        shown = c.load if c.invalid is None else f"{c.load} (INVALID: {c.invalid})"
        print(
            f"| {shown} | {c.calls:,} | {c.seconds:.2f} | {c.statements:,} "
            f"| {c.statements / c.calls:.5f} | {c.statements / c.seconds:,.0f} "
            f"| {c.dropped:,} | {c.errors:,} | {sent} | {served} |"
        )
    print(
        "\n*lifetime: server* is the calls of the table's flush, propose, acquire and sweep "
        "functions in pg_stat_user_functions: it should equal *lifetime: sent* "
        "(storage.statements), one function call per statement."
    )
    print(f"\npg_stat_statements: {env['pg_stat_statements']}")
    for c in counts:
        if c.extension is not None:
            print(f"- {c.load}: pg_stat_statements counted {c.extension:,} statements")
    if any(c.server is not None for c in counts):
        print("\nServer-side, per flush (pg_stat_user_functions, pg_stat_user_tables):\n")
        print("| load | function calls | rows inserted | rows updated (HOT) | rows deleted |")
        print("|---|---|--:|--:|--:|")
        for c in counts:
            if c.server is None:
                continue
            functions = c.server["functions"]
            flushes_done = max(1, functions.get("flush", 0))
            calls_text = ", ".join(f"{f} {n:,}" for f, n in sorted(functions.items()))
            rows = c.server["tables"].values()
            ins = sum(t["inserted"] for t in rows) / flushes_done
            upd = sum(t["updated"] for t in rows) / flushes_done
            hot = sum(t["hot_updated"] for t in rows) / flushes_done
            dele = sum(t["deleted"] for t in rows) / flushes_done
            print(f"| {c.load} | {calls_text} | {ins:.2f} | {upd:.2f} ({hot:.2f}) | {dele:.2f} |")
    elif env.get("server_counts"):
        print(f"\nServer-side counts: {env['server_counts']}")

    print("\nOne `storage.flush()` timed alone (no runner), µs:\n")
    print("| batch | flushes | wall median | wall p90 | this process's CPU per flush |")
    print("|---|--:|--:|--:|--:|")
    for f in flushes:
        wall = sorted(f.wall_us)
        p90 = wall[min(len(wall) - 1, int(len(wall) * 0.9))]
        print(
            f"| {f.what} | {f.flushes:,} | {statistics.median(wall):,.0f} | {p90:,.0f} "
            f"| {f.cpu_us:,.0f} |"
        )

    print("\nGoals (those of the Redis storage; a figure within 10% of its goal is borderline):\n")
    print("| goal | measured | status |")
    print("|---|--:|---|")
    print(
        f"| overhead, PostgresStorage / MemoryStorage <= {OVERHEAD_GOAL}x "
        f"| {x(pg_vs_memory)} [{x(pg_vs_memory_other)}] | {status(pg_vs_memory, OVERHEAD_GOAL)} |"
    )
    met: dict[str, bool] = {}
    for c in counts:
        value = c.statements / c.calls
        met[c.load] = c.invalid is None and value <= STATEMENTS_GOAL
        verdict = status(value, STATEMENTS_GOAL) if c.invalid is None else "n/a (INVALID)"
        print(f"| statements per call <= {STATEMENTS_GOAL}, {c.load} | {value:.5f} | {verdict} |")
    print(
        f"\n- overhead of PostgresStorage flushed outside the timing / MemoryStorage: "
        f"{x(unflushed_vs_memory)} (the guard's own cost; the rest is the runner's flushing)"
    )
    print(f"\nServer: {env['server']}.")
    return {
        "postgres_vs_memory": pg_vs_memory,
        "postgres_vs_memory_other_stat": pg_vs_memory_other,
        "postgres_unflushed_vs_memory": unflushed_vs_memory,
        "met": {
            "overhead": pg_vs_memory is not None and pg_vs_memory <= OVERHEAD_GOAL,
            "statements": met,
        },
    }


def environment(settings: Settings, server: str) -> dict[str, Any]:
    versions = _environment.versions("breaker-machines", "anyio", "asyncpg")
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "rounds": settings.rounds,
        "stat": settings.stat,
        "server": f"PostgreSQL {server}",
    }
    git = _environment.checkout()
    if git:
        info["git"] = git
    return info


# ---------------------------------------------------------------------------- main


async def run(dsn: str, settings: Settings) -> dict[str, Any]:
    schema = f"bm_bench_{uuid.uuid4().hex[:12]}"
    application = f"bm-bench-{schema}"
    started = time.perf_counter()
    admin = await asyncpg.connect(dsn, timeout=10)
    try:
        env = environment(settings, await admin.fetchval("SHOW server_version"))
        reason = await statements_extension(admin)
        env["pg_stat_statements"] = reason or "available: counts shown below"
        counting_dsn, refused = await tracked_dsn(dsn, application)
        env["server_counts"] = refused
        try:
            async with (
                PostgresStorage(dsn, schema=schema, table="timing") as storage,
                PostgresStorage(
                    dsn,
                    schema=schema,
                    table="timing",
                    flush_interval=3600,
                    flush_size=UNFLUSHED_SLICE * 2,
                    refresh_interval=3600,
                ) as quiet_storage,
            ):
                await storage.wait_subscribed()
                memory = Breaker("bench-memory")
                shared = Breaker("bench-postgres", storage=storage)
                unflushed = Breaker("bench-postgres-unflushed", storage=quiet_storage)
                async with running(memory, shared, unflushed):
                    cases = cases_for(memory, shared, unflushed)
                    await measure(cases, settings)
                    try:
                        await shared.sync()
                        stored = (await storage.flush(shared.name, shared.policy, Batch(0))).status
                        final = None if stored is State.CLOSED else f"stored status {stored.value}"
                    except StorageError as error:
                        final = f"the final sync failed: {error}"
                timed_alone = Breaker("bench-postgres-flush", storage=quiet_storage)
                flushes = await time_flushes(quiet_storage, timed_alone, settings.flushes)
                print("  [flush] done", file=sys.stderr, flush=True)
                errors = storage.errors + quiet_storage.errors
            counts = [
                await count_load(
                    admin,
                    dsn=counting_dsn,
                    application=None if refused else application,
                    extension=reason is None,
                    schema=schema,
                    table=table,
                    load=load,
                    rate=rate,
                    calls=calls,
                )
                for table, load, rate, calls in (
                    ("tight", "tight loop", None, settings.tight_calls),
                    ("rate10k", "10,000 calls/s", 10_000, int(10_000 * settings.seconds)),
                    ("rate1k", "1,000 calls/s", 1_000, int(1_000 * settings.seconds)),
                )
            ]
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await admin.close()
    elapsed = time.perf_counter() - started
    print(
        f"breaker_machines {env['versions']['breaker-machines']} with PostgresStorage vs "
        f"MemoryStorage (asyncpg {env['versions']['asyncpg']}) on Python {env['python']} "
        f"({env['platform']}); {elapsed:.0f}s; schema {schema} dropped."
    )
    if env.get("git", {}).get("src_modified"):
        print(f"Note: src/ has uncommitted changes (HEAD {env['git']['head']}).")
    summary = print_tables(cases, counts, flushes, settings, env)
    invalid = [case for case in cases if case.invalid is not None]
    bad_counts = [c for c in counts if c.invalid is not None]
    if errors or final or bad_counts:
        print(
            f"\nINVALID: storage errors {errors} in the overhead cases; "
            f"{final or 'final sync ok'}; loads {[(c.load, c.invalid) for c in bad_counts]}"
        )
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
        "statements": [
            {
                "load": c.load,
                "table": c.table,
                "calls": c.calls,
                "seconds": c.seconds,
                "statements": c.statements,
                "lifetime_statements": c.lifetime,
                "server": c.server,
                "pg_stat_statements": c.extension,
                "dropped": c.dropped,
                "errors": c.errors,
                "invalid": c.invalid,
            }
            for c in counts
        ],
        "flush": [
            {"batch": f.what, "wall_us": f.wall_us, "cpu_us_per_flush": f.cpu_us} for f in flushes
        ],
        "invalid": bool(invalid or bad_counts or errors or final),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--rounds", type=int, help="rounds of timing (default 21, quick 3)")
    parser.add_argument(
        "--stat", choices=("min", "median"), default="min", help="how rounds are combined"
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"the server (default {DEFAULT_DSN})")
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
            flushes=50,
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
            flushes=500,
        )
    payload = asyncio.run(run(args.dsn, settings))
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nWrote {args.json}")
    return 1 if payload["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
