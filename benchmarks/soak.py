"""Soak: mixed load and storage faults for minutes; memory, file descriptors, accounting.

Run ``python benchmarks/soak.py`` (10 minutes, asyncio) or ``python benchmarks/soak.py
--minutes 2 --backend trio``. Options: ``--minutes M`` (default 10), ``--period S`` between
two faults (default 40), ``--hold S`` per fault (default 5), ``--processes N`` per storage
(default 2), ``--tasks N`` per process (default 20), ``--sample S`` (default 10), ``--json
PATH``. Prints markdown tables and a verdict; the exit status is 1 if it is not flat or an
outcome was lost.

Both backends at once, in one event loop: a private ``redis-server`` and a private
PostgreSQL cluster (``tests/faults``, free loopback ports; never the shared 6379/5432), each
behind a ``Proxy``. Per storage, ``--processes`` processes, each with its own storage
(``timeout=0.2`` s) and the two breakers of ``benchmarks/faults.py`` (``load``: never trips,
1-hour rate window, so the server counts every delivered outcome; ``guard``: trips when
the dependency fails, here with ``reset_after=5`` s so it half-opens, probes and closes
again), and ``--tasks`` tasks calling a 1 ms dependency through both (5 % failing).

Every ``--period`` seconds one fault is injected for ``--hold`` seconds, on the two backends
in turn, cycling through the scenarios of ``faults.py`` (killed, paused, latency, blackhole,
resets, Redis restarted empty / PostgreSQL restarted with data); the dependency fails every
call during the middle third of the fault.

Every ``--sample`` seconds: the process's RSS (``VmRSS`` of ``/proc/self/status``), its open
file descriptors (``/proc/self/fd``), the tasks of the event loop, and the accounting of the
``load`` circuits: outcomes the callers recorded against delivered + dropped + stale +
unflushed (``stats()``; the difference may be a few calls in flight while running, and must
be 0 at the end). At the end, after every breaker synced: *lost* (recorded - delivered -
dropped - stale - unflushed, goal 0) and the server's count of each ``load`` circuit
against its delivered outcomes (minus what the last Redis data loss wiped).

Verdict: samples from the first third are warm-up; memory is *flat* if the mean RSS of
the last third is within 5 % of the mean of the second third, file descriptors if their
last-third mean is within 5 of the second third's (connections come and go with the
faults).
"""

from __future__ import annotations

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bm_faults", os.path.join(_HERE, "faults.py"))
assert _spec is not None
assert _spec.loader is not None
faults = importlib.util.module_from_spec(_spec)
sys.modules["bm_faults"] = faults
_spec.loader.exec_module(faults)  # also fixes sys.path (see faults.py)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import sniffio  # noqa: E402
from tests.faults.proxy import Proxy  # noqa: E402

from breaker_machines import Breaker, running  # noqa: E402

RSS_TOLERANCE = 0.05  # last third's mean RSS within 5 % of the second third's
FD_TOLERANCE = 5  # last third's mean fd count within 5 of the second third's
SOAK_GUARD_RULE = dict(faults.GUARD_RULE, reset_after=5.0)
SOAK_LOAD_RULE = dict(faults.LOAD_RULE, window=3600.0)


class SoakMember(faults.Member):
    def __init__(self, storage: Any, tag: str, rng: random.Random) -> None:
        self.storage = storage
        timeout = faults.CALL_TIMEOUT
        self.load = Breaker(f"load-{tag}", storage=storage, timeout=timeout, **SOAK_LOAD_RULE)
        self.guard = Breaker(f"guard-{tag}", storage=storage, timeout=timeout, **SOAK_GUARD_RULE)
        self.dependency = faults.Dependency(rng)
        self.load_tally = faults.Tally()
        self.guard_tally = faults.Tally()


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: int | None
    calls: int
    recorded: int
    accounted: int
    unflushed: int
    degraded: int
    fault: str


@dataclass
class FaultLog:
    t: float
    storage: str
    scenario: str
    detect: float | None
    resync: float | None
    tripped: str
    error: str | None = None


@dataclass
class Fleet:
    storage: str
    server: Any
    proxy: Proxy
    members: list[SoakMember] = field(default_factory=list)
    last_wipe: int = 0

    @property
    def breakers(self) -> list[Breaker]:
        return [b for m in self.members for b in m.breakers]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int | None:
    backend = sniffio.current_async_library()
    if backend == "asyncio":
        import asyncio

        return len(asyncio.all_tasks())
    if backend == "trio":
        import trio

        def count(task: Any) -> int:
            return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

        return count(trio.lowlevel.current_root_task())
    return None


def accounting(fleets: list[Fleet]) -> tuple[int, int, int, int]:
    """(calls made, outcomes recorded by callers, accounted by the breakers, unflushed) of
    the load circuits."""
    calls = recorded = accounted = unflushed = 0
    for fleet in fleets:
        for member in fleet.members:
            for tally in (member.load_tally, member.guard_tally):
                calls += tally.observed + tally.rejected + len(tally.unexpected)
            recorded += member.load_tally.observed
            stats = member.load.stats()
            accounted += stats.delivered + stats.dropped + stats.stale + stats.unflushed
            unflushed += stats.unflushed
    return calls, recorded, accounted, unflushed


async def resync(fleet: Fleet) -> None:
    await faults.resync(fleet.members)


async def one_fault(fleet: Fleet, kind: str, hold: float, log: list[FaultLog], t0: float) -> None:
    fault = faults.make_fault(kind, fleet.server, fleet.proxy)
    entry = FaultLog(time.monotonic() - t0, fleet.storage, kind, None, None, "")
    log.append(entry)
    breakers = fleet.breakers
    try:
        started = time.monotonic()
        await fault.inject()
        with anyio.fail_after(faults.DETECT_LIMIT):
            while not all(b.stats().degraded for b in breakers):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        entry.detect = time.monotonic() - started
        if fault.loses_data:
            fleet.last_wipe = sum(m.load.stats().delivered for m in fleet.members)
        third = hold / 3
        await anyio.sleep(third)
        for member in fleet.members:
            member.dependency.failing = True
        await anyio.sleep(third)
        opened = sum(m.guard.stats().state.name == "OPEN" for m in fleet.members)
        entry.tripped = f"{opened}/{len(fleet.members)}"
        for member in fleet.members:
            member.dependency.failing = False
        await anyio.sleep(third)
    except Exception as error:
        entry.error = f"{type(error).__name__}: {error}"
    finally:
        for member in fleet.members:
            member.dependency.failing = False
        with anyio.CancelScope(shield=True):
            await fault.lift()
            lifted = time.monotonic()
            try:
                with anyio.fail_after(faults.RESYNC_LIMIT):
                    await resync(fleet)
                entry.resync = time.monotonic() - lifted
            except TimeoutError:
                entry.error = (entry.error or "") + f" no resync within {faults.RESYNC_LIMIT:g} s"


async def soak(settings: argparse.Namespace, servers: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(settings.seed)
    samples: list[Sample] = []
    log: list[FaultLog] = []
    current = ["-"]
    async with contextlib.AsyncExitStack() as stack:
        fleets: list[Fleet] = []
        for name, server in servers.items():
            proxy = await stack.enter_async_context(Proxy(server.port))
            fleet = Fleet(name, server, proxy)
            tag = f"{name}-{uuid.uuid4().hex[:8]}"
            for _ in range(settings.processes):
                storage = server.storage(server.url(proxy.port), **faults.STORAGE_OPTIONS)
                await stack.enter_async_context(storage)
                fleet.members.append(SoakMember(storage, tag, random.Random(rng.random())))
            fleets.append(fleet)
        breakers = [b for f in fleets for b in f.breakers]
        t0 = time.monotonic()
        end = t0 + settings.minutes * 60

        async def sampler() -> None:
            while True:
                calls, recorded, accounted, unflushed = accounting(fleets)
                samples.append(
                    Sample(
                        round(time.monotonic() - t0, 1),
                        rss_mb(),
                        fd_count(),
                        task_count(),
                        calls,
                        recorded,
                        accounted,
                        unflushed,
                        sum(b.stats().degraded for b in breakers),
                        current[0],
                    )
                )
                await anyio.sleep(settings.sample)

        async def injector() -> None:
            cycle = 0
            await anyio.sleep(min(settings.period / 2, 15))
            while time.monotonic() + settings.hold + 10 < end:
                fleet = fleets[cycle % len(fleets)]
                kinds = [k for k in faults.SCENARIOS if faults.applies(k, fleet.storage)]
                kind = kinds[(cycle // len(fleets)) % len(kinds)]
                current[0] = f"{fleet.storage} {kind}"
                print(
                    f"  {time.monotonic() - t0:6.1f}s {fleet.storage} {kind}",
                    file=sys.stderr,
                    flush=True,
                )
                await one_fault(fleet, kind, settings.hold, log, t0)
                current[0] = "-"
                cycle += 1
                await anyio.sleep(max(0.0, settings.period - settings.hold))

        async with running(*breakers):
            stop = anyio.Event()
            async with anyio.create_task_group() as group:
                for fleet in fleets:
                    for member in fleet.members:
                        for _ in range(settings.tasks):
                            group.start_soon(member.keep_calling, stop, settings.pause)
                group.start_soon(sampler)
                group.start_soon(injector)
                await anyio.sleep_until(end)
                stop.set()
                group.cancel_scope.cancel()
            for breaker in breakers:
                with anyio.move_on_after(faults.RESYNC_LIMIT):
                    await faults.sync_eventually(breaker)
        calls, recorded, accounted, unflushed = accounting(fleets)
        samples.append(
            Sample(
                round(time.monotonic() - t0, 1),
                rss_mb(),
                fd_count(),
                task_count(),
                calls,
                recorded,
                accounted,
                unflushed,
                sum(b.stats().degraded for b in breakers),
                "end (synced)",
            )
        )
        checks: list[dict[str, Any]] = []
        for fleet in fleets:
            tally = faults.Tally()
            delivered = dropped = stale = left = 0
            for member in fleet.members:
                tally.add(member.load_tally)
                tally.add(member.guard_tally)
                stats = member.load.stats()
                delivered += stats.delivered
                dropped += stats.dropped
                stale += stats.stale
                left += stats.unflushed
            recorded_load = sum(m.load_tally.observed for m in fleet.members)
            counted = await faults.server_count(fleet.server, fleet.members[0].load)
            checks.append(
                {
                    "storage": fleet.storage,
                    "recorded": recorded_load,
                    "delivered": delivered,
                    "dropped": dropped,
                    "stale": stale,
                    "unflushed": left,
                    "lost": recorded_load - delivered - dropped - stale - left,
                    "server": counted,
                    "expected": delivered - fleet.last_wipe,
                    "over_bound": tally.over_bound,
                    "slowest": tally.slowest,
                    "leaked": len(tally.unexpected),
                    "leaked_examples": sorted(set(tally.unexpected))[:3],
                    "guard_trips": sum(m.guard.stats().trips for m in fleet.members),
                    "storage_errors": sum(b.stats().storage_errors for b in fleet.breakers),
                }
            )
    return {"samples": samples, "faults": log, "checks": checks}


def thirds_mean(values: list[float]) -> tuple[float, float]:
    n = len(values)
    second = values[n // 3 : 2 * n // 3] or values
    last = values[2 * n // 3 :] or values
    return statistics.fmean(second), statistics.fmean(last)


def report(
    result: dict[str, Any], settings: argparse.Namespace, seconds: float
) -> tuple[str, bool]:
    samples: list[Sample] = result["samples"]
    lines = [
        f"breaker_machines {metadata.version('breaker-machines')} on Python "
        f"{platform.python_version()} ({platform.platform()}, {os.cpu_count()} CPUs); "
        f"{settings.backend}; {seconds:.0f}s; load average (1 min) {os.getloadavg()[0]:.2f} "
        "at the end.",
        "",
        f"Soak: {settings.minutes:g} min, Redis and PostgreSQL at once, {settings.processes} "
        f"processes x {settings.tasks} tasks per storage; a fault every {settings.period:g} s "
        f"held {settings.hold:g} s, the backends in turn. Samples every {settings.sample:g} s "
        "(accounting of the load circuits: recorded by callers vs delivered + dropped + stale "
        "+ unflushed).",
        "",
        "| t s | RSS MB | fds | tasks | calls | recorded | accounted | accounted - recorded "
        "| unflushed | degraded breakers | fault on |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    lines.extend(
        f"| {s.t:.0f} | {s.rss_mb:.1f} | {s.fds} | {s.tasks if s.tasks is not None else '—'} "
        f"| {s.calls:,} | {s.recorded:,} | {s.accounted:,} | {s.accounted - s.recorded:+,} "
        f"| {s.unflushed:,} | {s.degraded} | {s.fault} |"
        for s in samples
    )
    lines += [
        "",
        "Faults:",
        "",
        "| t s | storage | fault | detect s | resync s | guard open (processes) | error |",
        "|--:|---|---|--:|--:|---|---|",
    ]
    for f in result["faults"]:
        lines.append(
            f"| {f.t:.0f} | {f.storage} | {faults.TITLES[f.scenario]} | "
            f"{faults.fmt_s(f.detect)} | {faults.fmt_s(f.resync)} | {f.tripped} | "
            f"{f.error or ''} |"
        )
    lines += [
        "",
        "End of run (every breaker synced), load circuits:",
        "",
        "| storage | recorded | delivered | dropped | stale | unflushed | lost "
        "| server count = delivered | over bound (slowest s) | leaked | guard trips "
        "| storage errors |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    ok = True
    for c in result["checks"]:
        server_ok = c["server"] == c["expected"]
        ok = ok and server_ok and c["lost"] == 0 and c["over_bound"] == 0 and c["leaked"] == 0
        lines.append(
            f"| {c['storage']} | {c['recorded']:,} | {c['delivered']:,} | {c['dropped']:,} "
            f"| {c['stale']:,} | {c['unflushed']:,} | {c['lost']:,} "
            f"| {'ok' if server_ok else 'MISMATCH'} ({c['server']:,} vs {c['expected']:,}) "
            f"| {c['over_bound']} ({c['slowest']:.3f}) | {c['leaked']} | {c['guard_trips']} "
            f"| {c['storage_errors']:,} |"
        )
    running_samples = samples[:-1] if len(samples) > 1 else samples
    rss2, rss3 = thirds_mean([s.rss_mb for s in running_samples])
    fd2, fd3 = thirds_mean([float(s.fds) for s in running_samples])
    rss_flat = rss3 <= rss2 * (1 + RSS_TOLERANCE)
    fd_flat = fd3 <= fd2 + FD_TOLERANCE
    errors = [f for f in result["faults"] if f.error]
    ok = ok and rss_flat and fd_flat and not errors
    lines += [
        "",
        "Verdict (first third of the samples is warm-up):",
        "",
        f"- memory: mean RSS {rss2:.1f} MB (second third) -> {rss3:.1f} MB (last third), "
        f"{(rss3 / rss2 - 1) * 100:+.1f} % (threshold +{RSS_TOLERANCE * 100:.0f} %): "
        f"{'FLAT' if rss_flat else 'GROWING'}",
        f"- file descriptors: mean {fd2:.1f} -> {fd3:.1f} (threshold +{FD_TOLERANCE}): "
        f"{'FLAT' if fd_flat else 'GROWING'}",
        f"- lost outcomes: {sum(c['lost'] for c in result['checks'])}; server counts "
        + ", ".join(
            f"{c['storage']} {'ok' if c['server'] == c['expected'] else 'MISMATCH'}"
            for c in result["checks"]
        ),
        f"- faults: {len(result['faults'])}, {len(errors)} with an error",
        f"- overall: {'PASS' if ok else 'FAIL'}",
    ]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--period", type=float, default=40.0)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--verbose", action="store_true", help="print the library's log")
    settings = parser.parse_args()
    faults.capture_logs(settings.verbose)
    started = time.monotonic()
    servers: dict[str, Any] = {}
    try:
        for name in ("redis", "postgres"):
            server = faults.make_server(name)
            servers[name] = server
            server.start()
            faults.warm(server)
        result = anyio.run(soak, settings, servers, backend=settings.backend)
    finally:
        for server in servers.values():
            server.close()
    text, ok = report(result, settings, time.monotonic() - started)
    print(text)
    print(f"\nLibrary log records: {faults.LOGS.take()}")
    if settings.json:
        with open(settings.json, "w") as out:
            json.dump(
                {
                    "samples": [asdict(s) for s in result["samples"]],
                    "faults": [asdict(f) for f in result["faults"]],
                    "checks": result["checks"],
                },
                out,
                indent=1,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
