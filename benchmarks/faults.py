"""Shared storage faults under load: bounded callers, local protection, accounting, recovery.

Run ``python benchmarks/faults.py`` (every scenario on Redis and PostgreSQL under asyncio:
about 90 s on a 2-core machine) and ``python benchmarks/faults.py --backend trio``.
Options: ``--storage redis`` or ``--storage postgres`` for one backend; ``--scenario
killed,paused`` for some scenarios (names below); ``--processes N`` (default 4) and
``--tasks N`` per process (default 25); ``--hold S``, how long each fault lasts (default 3);
``--json PATH`` to keep every figure. Prints markdown tables; the exit status is 1 if a goal
was missed.

Servers: every scenario runs against private servers started by the script on free
loopback ports (``RedisServer`` and ``PostgresServer`` of ``tests/faults``; the shared
servers at 6379 and 5432 are never touched), each behind a ``Proxy`` (``tests/faults/
proxy.py``) that plays the network. ``redis-server`` and the PostgreSQL binaries must be
installed.

What is measured
----------------
*N processes* (default 4) are played in one process: each has its own storage (through the
proxy, ``timeout=0.2`` s, other options at their defaults, ``max_connections=5``) and two
breakers on it, running their runners:

* ``load``, one circuit shared by the fleet, whose rule never trips (``failure_rate=0.99``,
  ``minimum_calls=10**6``, ``window=600`` s): every outcome is a CLOSED outcome that must
  reach the server's rate window exactly once;
* ``guard``, one circuit shared by the fleet that trips when the dependency fails
  (``failure_rate=0.5`` over ``window=1`` s, ``minimum_calls=20``, ``reset_after=600`` s:
  once open it stays open, no probes).

Each process has a fake dependency (sleeps 1 ms; 5 % of calls fail) and ``--tasks`` tasks
(default 25) that loop: call it through ``load``, then through ``guard``, then pause
``--pause`` (default 20 ms). Every breaker has a call timeout of 0.1 s.

A scenario: 1 s of load; then the fault is injected and the script waits until every
breaker reports ``stats().degraded``; then the fault is held for ``--hold`` seconds, the
middle third of which the dependency fails every call (the guard must open *locally*, in
every process, while the storage is unreachable); then the fault is lifted. *Resync* is the
time from the end of the lift (the server answering again, for the scenarios that restart
it) until every breaker has ``stats().degraded`` False, a ``sync()`` of each has succeeded
and all processes hold the same stored version of each circuit. 1 s more of load, then the
callers stop and every breaker syncs once more. Figures:

* *calls in fault*: calls made (through both circuits, rejections included) while the fault
  was on;
* *over bound*: calls that took longer than the call timeout + 0.25 s (goal 0), over the
  whole scenario, and the slowest call;
* *leaked*: exceptions other than the dependency's own error, ``CircuitTimeoutError`` and
  ``CircuitOpenError`` that reached a caller (goal 0: storage errors never do);
* *tripped*: in how many processes ``guard`` was OPEN (and degraded) at the end of the
  failing third of the fault;
* *delivered / dropped / stale*: ``breaker.stats()`` summed over both circuits and all
  processes; *lost* = outcomes the callers saw (successes, failures, timeouts) - delivered -
  dropped - stale - unflushed (goal 0);
* *server count*: the calls in ``load``'s rate window as a fresh storage reads it, against
  the sum of ``load``'s delivered outcomes (minus what the fault wiped: a Redis without
  persistence that is killed or restarted loses everything it held; that share is the sum
  of delivered once every process had noticed the fault). ``ok`` when equal (goal).
* *detect*: from the start of the injection until every breaker is degraded; *lift*: how
  long lifting took (starting a server); *resync* as above; *storage errors after lift*:
  failed storage operations of all breakers between the lift and the resync (each one
  doubles that breaker's back-off).

Scenarios (``--scenario`` names): ``killed`` (SIGKILL, then started again), ``paused``
(SIGSTOP, then SIGCONT), ``latency`` (0.4 s each way in the proxy: twice the storage
timeout), ``blackhole`` (the proxy swallows everything; connections are reset when it is
lifted), ``resets`` (the proxy resets every connection and every new one),
``restart-empty`` (Redis only: clean stop, started without its data), ``restart-data``
(PostgreSQL only: clean stop, started on its data).
"""

from __future__ import annotations

import os
import sys

# benchmarks/redis.py sits next to this file: keep this directory off the import path, or
# ``import redis`` would import that script. The repository root gives ``tests.faults``.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
from tests.faults.proxy import Proxy  # noqa: E402
from tests.faults.servers import FaultServer, RedisServer  # noqa: E402

from breaker_machines import (  # noqa: E402
    Breaker,
    CircuitOpenError,
    CircuitTimeoutError,
    State,
    StorageError,
    running,
)
from breaker_machines.storage import Batch, SharedStorage  # noqa: E402

STORAGE_TIMEOUT = 0.2
STORAGE_OPTIONS: dict[str, Any] = {"timeout": STORAGE_TIMEOUT, "max_connections": 5}
CALL_TIMEOUT = 0.1
SLACK = 0.25  # a call may take CALL_TIMEOUT + SLACK; beyond, it is over its bound
FAILURE_SHARE = 0.05
LATENCY = 2 * STORAGE_TIMEOUT
WARM = 1.0  # load before the fault, and after recovery
DETECT_LIMIT = 5.0  # every breaker must notice the fault within this
RESYNC_LIMIT = 20.0
LOAD_RULE: dict[str, Any] = {"failure_rate": 0.99, "minimum_calls": 10**6, "window": 600.0}
GUARD_RULE: dict[str, Any] = {
    "failure_rate": 0.5,
    "minimum_calls": 20,
    "window": 1.0,
    "reset_after": 600.0,
}
SCENARIOS = ("killed", "paused", "latency", "blackhole", "resets", "restart-empty", "restart-data")
TITLES = {
    "killed": "killed mid-load, restarted",
    "paused": "paused (SIGSTOP)",
    "latency": f"latency {LATENCY:g} s",
    "blackhole": "blackhole",
    "resets": "connection resets",
    "restart-empty": "Redis restarted empty",
    "restart-data": "PostgreSQL restarted with data",
}


class LogCounter(logging.Handler):
    """Counts the library's log records by level (printed with ``--verbose`` only)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


LOGS = LogCounter()


def capture_logs(verbose: bool) -> None:
    logger = logging.getLogger("breaker_machines")
    logger.addHandler(LOGS)
    logger.setLevel(logging.INFO)
    if not verbose:
        logger.propagate = False


class DependencyError(Exception):
    """The protected dependency's own failure."""


class Dependency:
    """Sleeps 1 ms; fails FAILURE_SHARE of calls, or every call while ``failing``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.failing = False

    async def __call__(self) -> str:
        await anyio.sleep(0.001)
        if self.failing or self.rng.random() < FAILURE_SHARE:
            raise DependencyError
        return "ok"


@dataclass
class Tally:
    """What the callers of one breaker saw."""

    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    rejected: int = 0
    unexpected: list[str] = field(default_factory=list)
    over_bound: int = 0
    slowest: float = 0.0
    in_fault: int = 0

    @property
    def observed(self) -> int:
        return self.succeeded + self.failed + self.timed_out

    def add(self, other: Tally) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.timed_out += other.timed_out
        self.rejected += other.rejected
        self.unexpected += other.unexpected
        self.over_bound += other.over_bound
        self.slowest = max(self.slowest, other.slowest)
        self.in_fault += other.in_fault


class Clock:
    """Whether the fault is on (shared by every caller)."""

    fault_on = False


async def guarded_call(breaker: Breaker, dependency: Dependency, tally: Tally) -> None:
    started = time.monotonic()
    if Clock.fault_on:
        tally.in_fault += 1
    try:
        await breaker.call(dependency)
    except CircuitOpenError:
        tally.rejected += 1
    except CircuitTimeoutError:
        tally.timed_out += 1
    except DependencyError:
        tally.failed += 1
    except Exception as error:  # a storage error (or anything else) reached the caller
        tally.unexpected.append(repr(error))
    else:
        tally.succeeded += 1
    elapsed = time.monotonic() - started
    tally.slowest = max(tally.slowest, elapsed)
    if elapsed > CALL_TIMEOUT + SLACK:
        tally.over_bound += 1


class Member:
    """One process of the fleet: a storage, the two breakers, a dependency, the tallies."""

    def __init__(self, storage: SharedStorage, tag: str, rng: random.Random) -> None:
        self.storage = storage
        self.load = Breaker(f"load-{tag}", storage=storage, timeout=CALL_TIMEOUT, **LOAD_RULE)
        self.guard = Breaker(f"guard-{tag}", storage=storage, timeout=CALL_TIMEOUT, **GUARD_RULE)
        self.dependency = Dependency(rng)
        self.load_tally = Tally()
        self.guard_tally = Tally()

    @property
    def breakers(self) -> tuple[Breaker, Breaker]:
        return (self.load, self.guard)

    async def keep_calling(self, stop: anyio.Event, pause: float) -> None:
        while not stop.is_set():
            await guarded_call(self.load, self.dependency, self.load_tally)
            await guarded_call(self.guard, self.dependency, self.guard_tally)
            await anyio.sleep(pause)


def stored(breaker: Breaker) -> int:
    """The stored version of the circuit as ``breaker`` last exchanged it."""
    replica = breaker._replica
    assert replica is not None
    return replica.stored


async def blocking(fn: Callable[[], None]) -> None:
    await anyio.to_thread.run_sync(fn)


async def sync_eventually(breaker: Breaker) -> None:
    while True:
        try:
            await breaker.sync()
        except StorageError:
            await anyio.sleep(0.05)
        else:
            return


async def resync(members: list[Member]) -> None:
    """Every breaker out of degraded mode, synced, and the fleet on one stored version."""
    breakers = [b for m in members for b in m.breakers]
    while any(b.stats().degraded for b in breakers):  # noqa: ASYNC110 - the runners decide
        await anyio.sleep(0.01)
    while True:
        for breaker in breakers:
            await sync_eventually(breaker)
        if all(
            len({stored(b) for b in group}) == 1
            for group in ([m.load for m in members], [m.guard for m in members])
        ) and not any(b.stats().degraded for b in breakers):
            return
        await anyio.sleep(0.01)


async def server_count(server: FaultServer, breaker: Breaker) -> int:
    """The calls in ``breaker``'s circuit's rate window, as a fresh storage reads them."""
    async with server.storage(server.url(), timeout=10.0) as fresh:
        record = await fresh.flush(breaker.name, breaker.policy, Batch(stored(breaker)))
    return sum(bucket[0] for bucket in record.rate_buckets)


# =========================================================================== faults

Step = Callable[[], Awaitable[None]]


@dataclass
class Fault:
    inject: Step
    lift: Step
    loses_data: bool


def make_fault(kind: str, server: FaultServer, proxy: Proxy) -> Fault:
    redis = server.backend == "redis"

    async def latency_on() -> None:
        proxy.latency = LATENCY

    async def latency_off() -> None:
        proxy.latency = 0.0

    async def blackhole_on() -> None:
        proxy.mode = "blackhole"

    async def resets_on() -> None:
        proxy.mode = "reset"
        proxy.reset_all()

    async def proxy_pass() -> None:
        proxy.mode = "pass"

    if kind == "killed":
        return Fault(lambda: blocking(server.kill), lambda: blocking(server.start), redis)
    if kind == "paused":
        return Fault(lambda: blocking(server.pause), lambda: blocking(server.resume), False)
    if kind == "latency":
        return Fault(latency_on, latency_off, False)
    if kind == "blackhole":
        return Fault(blackhole_on, proxy_pass, False)
    if kind == "resets":
        return Fault(resets_on, proxy_pass, False)
    if kind in ("restart-empty", "restart-data"):
        return Fault(
            lambda: blocking(server.stop),
            lambda: blocking(server.start),
            redis,
        )
    raise ValueError(kind)


def applies(kind: str, backend: str) -> bool:
    if kind == "restart-empty":
        return backend == "redis"
    if kind == "restart-data":
        return backend == "postgres"
    return True


# =========================================================================== one scenario


@dataclass
class Result:
    scenario: str
    storage: str
    backend: str
    calls_in_fault: int = 0
    calls: int = 0
    over_bound: int = 0
    slowest: float = 0.0
    leaked: int = 0
    leaked_examples: list[str] = field(default_factory=list)
    tripped: int = 0
    processes: int = 0
    observed: int = 0
    delivered: int = 0
    dropped: int = 0
    stale: int = 0
    unflushed: int = 0
    load_dropped: int = 0
    load_stale: int = 0
    server_counted: int | None = None
    server_expected: int = 0
    wiped: int = 0
    detect: float = 0.0
    lift: float = 0.0
    resync: float | None = None
    errors_after_lift: int = 0
    error: str | None = None
    logs: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.observed - self.delivered - self.dropped - self.stale - self.unflushed

    @property
    def server_ok(self) -> bool:
        return self.server_counted == self.server_expected

    @property
    def goals_met(self) -> bool:
        return (
            self.error is None
            and self.over_bound == 0
            and self.leaked == 0
            and self.tripped == self.processes
            and self.lost == 0
            and self.server_ok
        )


async def run_scenario(
    kind: str, server: FaultServer, settings: argparse.Namespace, seed: int
) -> Result:
    backend = settings.backend
    result = Result(kind, server.backend, backend, processes=settings.processes)
    rng = random.Random(seed)
    Clock.fault_on = False
    try:
        return await _run_scenario(kind, server, settings, rng, result)
    finally:
        Clock.fault_on = False


async def _run_scenario(
    kind: str, server: FaultServer, settings: argparse.Namespace, rng: random.Random, result: Result
) -> Result:
    tag = uuid.uuid4().hex[:10]
    async with Proxy(server.port) as proxy:
        fault = make_fault(kind, server, proxy)
        url = server.url(proxy.port)
        storages = [server.storage(url, **STORAGE_OPTIONS) for _ in range(settings.processes)]
        async with contextlib.AsyncExitStack() as stack:
            for storage in storages:
                await stack.enter_async_context(storage)
            members = [Member(s, tag, random.Random(rng.random())) for s in storages]
            breakers = [b for m in members for b in m.breakers]
            wiped = 0
            async with running(*breakers):
                stop = anyio.Event()
                async with anyio.create_task_group() as group:
                    for member in members:
                        for _ in range(settings.tasks):
                            group.start_soon(member.keep_calling, stop, settings.pause)
                    await anyio.sleep(WARM)
                    for breaker in breakers:
                        await breaker.sync()

                    Clock.fault_on = True
                    started = time.monotonic()
                    await fault.inject()
                    with anyio.fail_after(DETECT_LIMIT):
                        while not all(b.stats().degraded for b in breakers):  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    result.detect = time.monotonic() - started
                    if fault.loses_data:
                        wiped = sum(m.load.stats().delivered for m in members)
                    third = settings.hold / 3
                    await anyio.sleep(third)
                    for member in members:
                        member.dependency.failing = True
                    await anyio.sleep(third)
                    result.tripped = sum(
                        m.guard.stats().state is State.OPEN and m.guard.stats().degraded
                        for m in members
                    )
                    for member in members:
                        member.dependency.failing = False
                    await anyio.sleep(third)

                    errors = sum(b.stats().storage_errors for b in breakers)
                    lifting = time.monotonic()
                    await fault.lift()
                    lifted = time.monotonic()
                    Clock.fault_on = False
                    result.lift = lifted - lifting
                    try:
                        with anyio.fail_after(RESYNC_LIMIT):
                            await resync(members)
                        result.resync = time.monotonic() - lifted
                        result.errors_after_lift = (
                            sum(b.stats().storage_errors for b in breakers) - errors
                        )
                    except TimeoutError:
                        result.error = f"no resync within {RESYNC_LIMIT:g} s"
                    await anyio.sleep(WARM)
                    stop.set()
                for breaker in breakers:
                    with anyio.move_on_after(RESYNC_LIMIT):
                        await sync_eventually(breaker)
            total = Tally()
            for member in members:
                total.add(member.load_tally)
                total.add(member.guard_tally)
                for breaker in member.breakers:
                    stats = breaker.stats()
                    result.delivered += stats.delivered
                    result.dropped += stats.dropped
                    result.stale += stats.stale
                    result.unflushed += stats.unflushed
                    if breaker is member.load:
                        result.load_dropped += stats.dropped
                        result.load_stale += stats.stale
            result.calls_in_fault = total.in_fault
            result.calls = total.observed + total.rejected + len(total.unexpected)
            result.over_bound = total.over_bound
            result.slowest = total.slowest
            result.leaked = len(total.unexpected)
            result.leaked_examples = sorted(set(total.unexpected))[:3]
            result.observed = total.observed
            result.wiped = wiped
            result.server_expected = sum(m.load.stats().delivered for m in members) - wiped
            result.server_counted = await server_count(server, members[0].load)
    return result


# =========================================================================== servers


def make_server(backend: str) -> FaultServer:
    if backend == "redis":
        return RedisServer()
    from tests.faults.postgres_server import PostgresServer

    return PostgresServer()  # type: ignore[return-value]


def warm(server: FaultServer) -> None:
    """Create the PostgreSQL schema with a generous timeout before 0.2 s timeouts apply."""

    async def one() -> None:
        from breaker_machines import Policy

        async with server.storage(server.url(), timeout=30.0) as storage:
            await storage.flush("warm-up", Policy(), Batch(0))

    anyio.run(one)


def revive(server: FaultServer) -> None:
    server.resume()
    if not server.running:
        server.start()


def run_all(settings: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    for index, storage in enumerate(settings.storage):
        server = make_server(storage)
        try:
            server.start()
            warm(server)
            for number, kind in enumerate(settings.scenario):
                if not applies(kind, storage):
                    continue
                print(f"  [{settings.backend}] {storage} {kind}", file=sys.stderr, flush=True)
                revive(server)
                seed = settings.seed + 100 * index + number
                try:
                    result = anyio.run(
                        run_scenario, kind, server, settings, seed, backend=settings.backend
                    )
                except Exception as error:  # a broken scenario is a row, not a crash
                    traceback.print_exc()
                    result = Result(kind, storage, settings.backend, processes=settings.processes)
                    result.error = f"{type(error).__name__}: {error}"
                result.logs = LOGS.take()
                results.append(result)
        finally:
            server.close()
    return results


# =========================================================================== report


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def report(results: list[Result], settings: argparse.Namespace, seconds: float) -> str:
    versions = []
    for package in ("anyio", "trio", "redis", "asyncpg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    load = os.getloadavg()[0]
    lines = [
        f"breaker_machines {metadata.version('breaker-machines')} on Python "
        f"{platform.python_version()} ({platform.platform()}, {os.cpu_count()} CPUs); "
        f"{', '.join(versions)}; {seconds:.0f}s; load average (1 min) {load:.2f} at the end.",
        "",
        f"Storage faults under load ({settings.backend}): {settings.processes} processes x "
        f"{settings.tasks} tasks, each calling a 1 ms dependency through two breakers "
        f"(5% failing; 100% in the middle third of the fault); storage timeout "
        f"{STORAGE_TIMEOUT:g} s, call timeout {CALL_TIMEOUT:g} s; fault held {settings.hold:g} s. "
        f"Bound: a call within {CALL_TIMEOUT + SLACK:g} s. Outcomes summed over both circuits "
        "and all processes (in brackets: the load circuit's share, which never trips); "
        "server count for the load circuit.",
        "",
        "| storage | fault | calls in fault | over bound (slowest s) | leaked | tripped locally "
        "| delivered | dropped (load) | stale (load) | lost | server count = delivered "
        "| detect s | lift s | resync s | storage errors after lift |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.error is not None and r.server_counted is None:
            lines.append(f"| {r.storage} | {TITLES[r.scenario]} | ERROR: {r.error} |" + " |" * 12)
            continue
        tripped = "yes" if r.tripped == r.processes else f"NO ({r.tripped}/{r.processes})"
        server = (
            f"{'ok' if r.server_ok else 'MISMATCH'} ({r.server_counted:,}"
            f"{'' if r.server_ok else f' vs {r.server_expected:,}'}"
            f"{f', {r.wiped:,} wiped' if r.wiped else ''})"
        )
        resync = fmt_s(r.resync) if r.error is None else f"FAILED ({r.error})"
        lines.append(
            f"| {r.storage} | {TITLES[r.scenario]} | {r.calls_in_fault:,} | {r.over_bound} "
            f"({r.slowest:.3f}) | {r.leaked} | {tripped} | {r.delivered:,} | {r.dropped:,} "
            f"({r.load_dropped:,}) "
            f"| {r.stale:,} ({r.load_stale:,}) | {r.lost:,} | {server} | {r.detect:.2f} "
            f"| {r.lift:.2f} | {resync} | {r.errors_after_lift} |"
        )
    lines.append("")
    lines.append("Library log records per row (breaker_machines logger, by level):")
    lines.append("")
    for r in results:
        counts = ", ".join(f"{level} {n:,}" for level, n in sorted(r.logs.items())) or "none"
        lines.append(f"- {r.storage}, {TITLES[r.scenario]}: {counts}")
    lines.append("")
    missed = [r for r in results if not r.goals_met]
    if not missed:
        lines.append(
            "Goals (over bound 0, leaked 0, tripped in every process, lost 0, server count "
            "= delivered): all MET."
        )
    else:
        lines.append("Goals missed:")
        for r in missed:
            why = []
            if r.error:
                why.append(r.error)
            if r.over_bound:
                why.append(f"{r.over_bound} calls over bound (slowest {r.slowest:.3f} s)")
            if r.leaked:
                why.append(f"{r.leaked} leaked: {', '.join(r.leaked_examples)}")
            if r.tripped != r.processes:
                why.append(f"guard tripped in {r.tripped}/{r.processes} processes")
            if r.lost:
                why.append(f"lost {r.lost}")
            if r.server_counted is not None and not r.server_ok:
                why.append(f"server counted {r.server_counted} vs {r.server_expected} delivered")
            lines.append(f"- {r.storage}, {TITLES[r.scenario]}: {'; '.join(why)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--storage", default="redis,postgres")
    parser.add_argument("--scenario", default=",".join(SCENARIOS))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=25)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--hold", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--verbose", action="store_true", help="print the library's log")
    settings = parser.parse_args()
    capture_logs(settings.verbose)
    settings.storage = [s for s in settings.storage.split(",") if s]
    settings.scenario = [s for s in settings.scenario.split(",") if s]
    for kind in settings.scenario:
        if kind not in SCENARIOS:
            parser.error(f"unknown scenario {kind!r} (choose from {', '.join(SCENARIOS)})")
    started = time.monotonic()
    results = run_all(settings)
    print(report(results, settings, time.monotonic() - started))
    if settings.json:
        with open(settings.json, "w") as out:
            json.dump([asdict(r) | {"lost": r.lost} for r in results], out, indent=1)
    return 0 if all(r.goals_met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
