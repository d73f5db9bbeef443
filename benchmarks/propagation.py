"""Trip propagation latency: how soon the other processes of a fleet see a trip.

Run ``python benchmarks/propagation.py`` (Redis pub/sub and PostgreSQL NOTIFY, workers under
asyncio), ``python benchmarks/propagation.py --backend trio`` (workers under trio) or
``--backend both``; ``--storage redis`` or ``--storage postgres`` for one storage only,
``--rounds N`` (default 200), ``--trip force`` (trip with ``force_open()`` instead of a
failing call), ``--json PATH`` to keep every sample. About 10 s per storage and backend on a
2-core machine, process start-up included. Prints markdown tables.

Servers: ``--url`` (default ``$BREAKER_MACHINES_REDIS_URL`` or
``redis://127.0.0.1:6379/0``) and ``--dsn`` (default ``$BREAKER_MACHINES_POSTGRES_DSN`` or
``postgresql://postgres@127.0.0.1:5432/test``). Each run uses a fresh key prefix
(``bm-prop-<random>``, its keys deleted at the end) and a fresh schema
(``bm_prop_<random>``, dropped at the end).

What is measured
----------------
Four OS processes (this file, run with ``--worker``) each open a storage and a ``Breaker``
on the same name (``consecutive_failures=1``, ``reset_after=3600``) with its runner running,
and an ``on_transition`` callback (sync: it runs as soon as the transition is announced)
that stamps ``time.monotonic()`` and reports the transition on stdout. On Linux
``time.monotonic()`` is ``CLOCK_MONOTONIC``, one clock for every process on the machine, so
stamps from different processes can be subtracted.

Each round, the parent tells one process (in turn) to trip the circuit: one failing call
``async with breaker.guard(): raise Boom()`` (the core decides OPEN; the runner writes the
transition with a compare-and-set, which publishes or notifies it, then announces it with
``won=True``). The three other processes adopt the published record and announce it with
``won=False``. The parent waits (bounded) until all four have announced OPEN, tells the same
process to ``reset()`` (a forced write of CLOSED, propagated the same way), waits until all
four have announced CLOSED, pauses briefly, and starts the next round.

*Latency* = the observer's stamp - the writer's stamp (its ``won=True`` callback, right after
the write returned), over every observer and round: p50, p99, max (and min: the observer can
be first, since the message leaves the server before the writer's answer arrives). The
same figures from the *decision* (``Transition.at`` of the winner: the breaker's clock when
the failing call ended) include the write's round trip. Goal: p99 <= 10 ms on loopback.

Coordination is by JSON lines on the workers' stdin and stdout; every wait is bounded
(start-up, each phase of a round, the exit), so a broken fleet fails instead of hanging.
The exit status is 1 if an observation was missed or a worker failed.
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
import asyncio  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

PROCESSES = 4
GOAL_MS = 10.0  # p99 of observed - written
START_LIMIT = 90.0  # seconds for every worker to import, connect and adopt the state
PHASE_LIMIT = 5.0  # seconds all four may take to announce one transition (> refresh_interval)
EXIT_LIMIT = 15.0
WORKER_LIFETIME = 900.0  # seconds a worker lives at most
SCRIPT = os.path.abspath(__file__)
NAME = "propagation bench"
DEFAULT_URL = os.environ.get("BREAKER_MACHINES_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_DSN = os.environ.get(
    "BREAKER_MACHINES_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
OPENED = ("open", "forced_open")


# ---------------------------------------------------------------------------- the worker


class Boom(Exception):
    """The dependency failed."""


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def worker(config: dict[str, Any]) -> None:
    """One process of the fleet: a storage, a breaker, its runner; obey stdin."""
    import anyio
    import anyio.to_thread

    from breaker_machines import Breaker, Transition, running
    from breaker_machines.storage import PostgresStorage, RedisStorage

    index = config["index"]

    def on_transition(transition: Transition) -> None:
        stamp = time.monotonic()  # first: what follows is not part of the latency
        emit(
            {
                "event": "transition",
                "w": index,
                "source": transition.source.value,
                "target": transition.target.value,
                "reason": transition.reason.value,
                "version": transition.version,
                "won": transition.won,
                "at": transition.at,
                "t": stamp,
            }
        )

    storage: RedisStorage | PostgresStorage
    if config["storage"] == "redis":
        storage = RedisStorage(config["url"], prefix=config["prefix"])
    else:
        storage = PostgresStorage(config["dsn"], schema=config["schema"])
    async with storage:
        with anyio.fail_after(START_LIMIT):
            await storage.wait_subscribed()
        breaker = Breaker(
            NAME,
            storage=storage,
            consecutive_failures=1,
            reset_after=3600,
            on_transition=on_transition,
        )
        # The parent bounds every wait of its own and kills a worker that does not exit;
        # this bounds a worker whose parent is gone without closing its stdin.
        with anyio.fail_after(WORKER_LIFETIME):
            async with running(breaker):
                emit({"event": "ready", "w": index, "state": breaker.state.value})
                await obey(breaker, config, anyio.to_thread.run_sync)
        stats = breaker.stats()
        emit(
            {
                "event": "bye",
                "w": index,
                "storage_errors": stats.storage_errors,
                "degraded": stats.degraded,
                "stale": stats.stale,
                "dropped": stats.dropped,
                "callback_errors": stats.callback_errors,
            }
        )


async def obey(breaker: Any, config: dict[str, Any], run_sync: Any) -> None:
    import anyio.lowlevel

    index = config["index"]
    while True:
        # Waits for the parent without a deadline: an idle fleet is what the parent wants
        # while others announce. The parent closes stdin (EOF) or says quit at the end.
        line = await run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return
        command = json.loads(line)
        what = command["cmd"]
        if what == "quit":
            return
        stamp = time.monotonic()
        if what == "trip":
            if config["trip"] == "force":
                breaker.force_open()
            else:
                try:
                    async with breaker.guard():
                        raise Boom
                except Boom:
                    pass
        elif what == "reset":
            breaker.reset()
        else:
            raise ValueError(f"unknown command {command!r}")
        emit({"event": "done", "w": index, "cmd": what, "round": command["round"], "t": stamp})
        await anyio.lowlevel.checkpoint()


def worker_main(raw: str) -> int:
    import anyio

    config = json.loads(raw)
    try:
        anyio.run(worker, config, backend=config["backend"])
    except BaseException as error:
        emit({"event": "error", "w": config["index"], "error": repr(error)})
        raise
    return 0


# ---------------------------------------------------------------------------- the parent


@dataclass
class Sample:
    round: int
    writer: int
    observer: int
    latency_ms: float  # observer's stamp - writer's won=True stamp
    from_decision_ms: float  # observer's stamp - Transition.at of the winner


@dataclass
class Result:
    storage: str
    backend: str
    rounds: int = 0
    opens: list[Sample] = field(default_factory=list)
    closes: list[Sample] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)  # the winner's decision -> written
    missed: int = 0
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    seconds: float = 0.0


class Fleet:
    """The four worker processes, their stdin, and one queue of their stdout events."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stderr: list[collections.deque[str]] = []
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, configs: list[dict[str, Any]]) -> None:
        for config in configs:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                SCRIPT,
                "--worker",
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self.processes.append(process)
            tail: collections.deque[str] = collections.deque(maxlen=40)
            self.stderr.append(tail)
            self.readers.append(asyncio.create_task(self._read(config["index"], process)))
            self.readers.append(asyncio.create_task(self._drain(process, tail)))

    async def _read(self, index: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                await self.events.put({"event": "eof", "w": index})
                return
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "noise", "w": index, "line": line.decode(errors="replace")}
            await self.events.put(event)

    @staticmethod
    async def _drain(process: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
        assert process.stderr is not None
        while True:
            line = await process.stderr.readline()
            if not line:
                return
            tail.append(line.decode(errors="replace").rstrip())

    def send(self, index: int, command: dict[str, Any]) -> None:
        stdin = self.processes[index].stdin
        assert stdin is not None
        stdin.write((json.dumps(command) + "\n").encode())

    async def next_event(self, deadline: float) -> dict[str, Any] | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self.events.get(), remaining)
        except asyncio.TimeoutError:
            return None

    async def stop(self) -> None:
        for index, process in enumerate(self.processes):
            if process.returncode is None and process.stdin is not None:
                try:
                    self.send(index, {"cmd": "quit"})
                    process.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), EXIT_LIMIT)
            except asyncio.TimeoutError:
                process.kill()  # one of ours, by its handle
                await process.wait()
        for reader in self.readers:
            try:
                await asyncio.wait_for(reader, 5)
            except asyncio.TimeoutError:
                reader.cancel()

    def tails(self) -> str:
        return "\n".join(
            f"--- worker {i} stderr ---\n" + "\n".join(tail)
            for i, tail in enumerate(self.stderr)
            if tail
        )


class WorkerFailed(Exception):
    pass


async def phase(
    fleet: Fleet,
    result: Result,
    *,
    round_: int,
    writer: int,
    command: str,
    targets: tuple[str, ...],
    floor: int,
) -> tuple[list[Sample], int]:
    """Send ``command`` to ``writer``; collect every process's announcement of it."""
    fleet.send(writer, {"cmd": command, "round": round_})
    deadline = time.monotonic() + PHASE_LIMIT
    seen: dict[int, dict[str, Any]] = {}
    done = False
    while len(seen) < PROCESSES or not done:
        event = await fleet.next_event(deadline)
        if event is None:
            break
        kind = event["event"]
        if kind in ("error", "eof", "bye"):
            raise WorkerFailed(f"worker {event['w']}: {event}")
        if kind == "done":
            done = True
            continue
        if (
            kind == "transition"
            and event["target"] in targets
            and event["version"] > floor
            and event["w"] not in seen
        ):
            seen[event["w"]] = event
            continue
        result.unexpected.append({"round": round_, "phase": command, **event})
    winner = seen.get(writer)
    if winner is None or not winner["won"]:
        raise WorkerFailed(f"round {round_} {command}: no won=True announcement from {writer}")
    samples = []
    for index, event in seen.items():
        if index == writer:
            continue
        if event["won"] or event["version"] != winner["version"]:
            result.unexpected.append({"round": round_, "phase": command, **event})
        samples.append(
            Sample(
                round_,
                writer,
                index,
                (event["t"] - winner["t"]) * 1000,
                (event["t"] - winner["at"]) * 1000,
            )
        )
    result.missed += PROCESSES - len(seen)
    if command == "trip":
        result.write_ms.append((winner["t"] - winner["at"]) * 1000)
    return samples, max(e["version"] for e in seen.values())


async def measure(
    storage: str, backend: str, args: argparse.Namespace, prefix: str, schema: str
) -> Result:
    result = Result(storage, backend)
    started = time.monotonic()
    fleet = Fleet()
    configs = [
        {
            "index": index,
            "storage": storage,
            "backend": backend,
            "url": args.url,
            "dsn": args.dsn,
            "prefix": prefix,
            "schema": schema,
            "trip": args.trip,
        }
        for index in range(PROCESSES)
    ]
    print(f"  [{storage}/{backend}] starting {PROCESSES} workers", file=sys.stderr, flush=True)
    try:
        await fleet.start(configs)
        ready: set[int] = set()
        deadline = time.monotonic() + START_LIMIT
        while len(ready) < PROCESSES:
            event = await fleet.next_event(deadline)
            if event is None:
                raise WorkerFailed(f"only {sorted(ready)} were ready after {START_LIMIT:.0f}s")
            if event["event"] == "ready":
                if event["state"] != "closed":
                    raise WorkerFailed(f"worker {event['w']} started {event['state']}")
                ready.add(event["w"])
            elif event["event"] in ("error", "eof"):
                raise WorkerFailed(f"worker {event['w']}: {event}")
        floor = 0
        for round_ in range(args.rounds):
            writer = round_ % PROCESSES
            opens, floor = await phase(
                fleet,
                result,
                round_=round_,
                writer=writer,
                command="trip",
                targets=OPENED,
                floor=floor,
            )
            result.opens += opens
            closes, floor = await phase(
                fleet,
                result,
                round_=round_,
                writer=writer,
                command="reset",
                targets=("closed",),
                floor=floor,
            )
            result.closes += closes
            result.rounds += 1
            await asyncio.sleep(args.pause)
            if round_ % 50 == 49:
                print(f"  [{storage}/{backend}] {round_ + 1} rounds", file=sys.stderr, flush=True)
    except WorkerFailed as error:
        result.failure = str(error)
    finally:
        await fleet.stop()
        while not fleet.events.empty():
            event = fleet.events.get_nowait()
            if event["event"] == "bye":
                result.worker_stats.append(event)
            elif event["event"] in ("error", "noise"):
                result.unexpected.append(event)
    if result.failure is not None:
        print(f"  [{storage}/{backend}] FAILED: {result.failure}", file=sys.stderr)
        print(fleet.tails(), file=sys.stderr)
    result.seconds = time.monotonic() - started
    return result


async def server_versions(args: argparse.Namespace, storages: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    if "redis" in storages:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(args.url)
        try:
            info = await client.info("server")
            found["redis"] = f"redis-server {info.get('redis_version')}"
        finally:
            await client.aclose()
    if "postgres" in storages:
        import asyncpg

        connection = await asyncpg.connect(args.dsn, timeout=10)
        try:
            found["postgres"] = f"PostgreSQL {await connection.fetchval('SHOW server_version')}"
        finally:
            await connection.close()
    return found


# ---------------------------------------------------------------------------- reporting


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(value: float) -> str:
    return f"{value:.2f}"


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "min": min(values),
    }


def environment() -> dict[str, Any]:
    return _environment.environment("breaker-machines", "anyio", "trio", "redis", "asyncpg")


TITLES = {"redis": "Redis pub/sub", "postgres": "PostgreSQL NOTIFY"}


def print_tables(results: list[Result], args: argparse.Namespace) -> None:
    trip = "one failing call" if args.trip == "failure" else "force_open()"
    print(
        f"\nTrip propagation, observed - written, ms ({PROCESSES} processes, "
        f"{args.rounds} rounds, trip by {trip}; every observer of every round; "
        f"nearest-rank percentiles):\n"
    )
    print(
        "| transport | backend | rounds | observations | missed | p50 | p99 | max | min "
        f"| goal p99 <= {GOAL_MS:g} ms |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for r in results:
        s = summary([x.latency_ms for x in r.opens])
        if not s:
            print(
                f"| {TITLES[r.storage]} | {r.backend} | {r.rounds} | 0 | {r.missed} | | | | | n/a |"
            )
            continue
        verdict = "MET" if s["p99"] <= GOAL_MS and not r.missed else "MISSED"
        print(
            f"| {TITLES[r.storage]} | {r.backend} | {r.rounds} | {len(r.opens):,} | {r.missed} "
            f"| {ms(s['p50'])} | {ms(s['p99'])} | {ms(s['max'])} | {ms(s['min'])} | {verdict} |"
        )

    print(
        f"\nThe same trips, ms from the decision ({trip} in the writer, its "
        "`Transition.at`): the write's round trip included. *write* is the writer's own "
        "decision -> written (its `won=True` callback):\n"
    )
    print(
        "| transport | backend | observed p50 | observed p99 | observed max "
        "| write p50 | write p99 | write max |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for r in results:
        s = summary([x.from_decision_ms for x in r.opens])
        w = summary(r.write_ms)
        if not s or not w:
            continue
        print(
            f"| {TITLES[r.storage]} | {r.backend} | {ms(s['p50'])} | {ms(s['p99'])} "
            f"| {ms(s['max'])} | {ms(w['p50'])} | {ms(w['p99'])} | {ms(w['max'])} |"
        )

    print("\nResets (`reset()`, a forced write of CLOSED), observed - written, ms (no goal):\n")
    print("| transport | backend | observations | p50 | p99 | max | min |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for r in results:
        s = summary([x.latency_ms for x in r.closes])
        if not s:
            continue
        print(
            f"| {TITLES[r.storage]} | {r.backend} | {len(r.closes):,} | {ms(s['p50'])} "
            f"| {ms(s['p99'])} | {ms(s['max'])} | {ms(s['min'])} |"
        )

    print("\nChecks:\n")
    for r in results:
        errors = sum(s.get("storage_errors") or 0 for s in r.worker_stats)
        callback_errors = sum(s.get("callback_errors") or 0 for s in r.worker_stats)
        slow = sum(1 for x in r.opens if x.latency_ms > 100)
        line = (
            f"- {TITLES[r.storage]}, {r.backend}: {r.seconds:.1f}s; {len(r.worker_stats)} of "
            f"{PROCESSES} workers exited cleanly; missed {r.missed}; storage errors {errors}; "
            f"callback errors {callback_errors}; unexpected events {len(r.unexpected)}; "
            f"observations over 100 ms (the refresh backstop, not the push) {slow}"
        )
        if r.failure:
            line += f"; FAILED: {r.failure}"
        print(line)
        for event in r.unexpected[:5]:
            print(f"  - unexpected: {json.dumps(event)}")


async def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    storages = ["redis", "postgres"] if args.storage == "both" else [args.storage]
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    env = environment()
    servers = await server_versions(args, storages)
    token = uuid.uuid4().hex[:12]
    prefix, schema = f"bm-prop-{token}", f"bm_prop_{token}"
    started = time.monotonic()
    results: list[Result] = []
    cleaned: list[str] = []
    try:
        for storage in storages:
            for backend in backends:
                # a fresh prefix / schema per configuration: fleet versions start at 0
                suffix = f"{storage[:2]}{backend[:2]}"
                results.append(
                    await measure(
                        storage, backend, args, f"{prefix}-{suffix}", f"{schema}_{suffix}"
                    )
                )
    finally:
        for storage in storages:
            for backend in backends:
                suffix = f"{storage[:2]}{backend[:2]}"
                if storage == "redis":
                    deleted = await clean_redis(args.url, f"{prefix}-{suffix}:*")
                    cleaned.append(f"deleted {deleted} keys of {prefix}-{suffix}")
                else:
                    await drop_schema(args.dsn, f"{schema}_{suffix}")
                    cleaned.append(f"dropped schema {schema}_{suffix}")
    elapsed = time.monotonic() - started
    v = env["versions"]
    print(
        f"breaker_machines {v['breaker-machines']} on Python {env['python']} "
        f"({env['platform']}, {env['cpus']} CPUs); anyio {v['anyio']}, trio {v['trio']}, "
        f"redis-py {v['redis']}, asyncpg {v['asyncpg']}; "
        f"{', '.join(servers.values())} on loopback; {elapsed:.0f}s; {'; '.join(cleaned)}."
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
    print_tables(results, args)
    payload = {
        "environment": env,
        "servers": servers,
        "rounds": args.rounds,
        "trip": args.trip,
        "results": [
            {
                "storage": r.storage,
                "backend": r.backend,
                "rounds": r.rounds,
                "missed": r.missed,
                "failure": r.failure,
                "opens": [vars(x) for x in r.opens],
                "closes": [vars(x) for x in r.closes],
                "write_ms": r.write_ms,
                "unexpected": r.unexpected,
                "workers": r.worker_stats,
            }
            for r in results
        ],
    }
    bad = any(r.failure or r.missed or len(r.worker_stats) < PROCESSES for r in results)
    return (1 if bad else 0), payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=200, help="trips to time (default 200)")
    parser.add_argument(
        "--backend", choices=("asyncio", "trio", "both"), default="asyncio", help="the workers'"
    )
    parser.add_argument("--storage", choices=("redis", "postgres", "both"), default="both")
    parser.add_argument(
        "--trip",
        choices=("failure", "force"),
        default="failure",
        help="trip by a failing call (consecutive_failures=1) or by force_open()",
    )
    parser.add_argument(
        "--pause", type=float, default=0.02, help="seconds between rounds (default 0.02)"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis (default {DEFAULT_URL})")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL (default {DEFAULT_DSN})")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    status, payload = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nWrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
