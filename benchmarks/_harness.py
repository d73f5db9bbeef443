"""How the benchmarks time cases, and the servers they count commands on.

A case is a loop ``(n) -> elapsed ns`` with a state check: checked before timing (a case that
fails is INVALID and not timed), calibrated (N calls so a loop lasts about
``Settings.target_ns``, clamped), warmed up, timed in ``Settings.rounds`` rounds in a shuffled
order with ``gc.collect()`` before each loop, and checked again. Its figure is the minimum (or
the median) over rounds of ns/call, its overhead that minus its baseline's figure.

redis-py is imported inside the functions that need it, never here: while this folder is on
the import path (a script imports this module before it takes the folder off the path),
``import redis`` would import ``benchmarks/redis.py``.
"""

from __future__ import annotations

import gc
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

BORDERLINE = 0.1  # a figure this close to its goal (relatively) can flip from run to run

Loop = Callable[[int], Awaitable[int]]  # n calls, timed: elapsed ns
Check = Callable[[], Awaitable[None]]  # raises AssertionError if the state is not the case's
SyncLoop = Callable[[int], int]
SyncCheck = Callable[[], None]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------------------- cases


class Timed(Protocol):
    """What the harness reads and writes on a case (a script's own Case may have more)."""

    key: str
    baseline: str | None  # the key of the case whose figure is subtracted
    samples: list[float]  # ns/call, one a round
    calls: int  # per timed loop
    invalid: str | None  # why the case is not timed or not trusted


class AsyncCase(Timed, Protocol):
    loop: Loop
    check: Check | None


class SyncCase(Timed, Protocol):
    loop: SyncLoop
    check: SyncCheck | None


C = TypeVar("C", bound=Timed)


@dataclass
class Case:
    """A case with a title (redis.py, postgres.py): an awaited loop and check."""

    key: str
    title: str
    loop: Loop
    baseline: str | None = None
    check: Check | None = None
    samples: list[float] = field(default_factory=list)
    calls: int = 0
    invalid: str | None = None


@dataclass
class Settings:
    """How long and how often to time; a script adds its own fields (``kw_only``)."""

    rounds: int
    min_calls: int  # per timed loop, after calibration
    max_calls: int
    target_ns: int  # what a timed loop should last
    stat: str  # "min" or "median" of rounds
    seed: int = 20240601  # of the shuffled order


# ---------------------------------------------------------------------------- timing


def check_failed(when: str, error: Exception) -> str:
    """A failed state check, as a case's INVALID note."""
    if isinstance(error, AssertionError):
        return f"{when}: {error}"
    return f"{when}: the check raised {error!r}"


def raised(number: int | None, error: Exception) -> str:
    """A loop that raised while calibrating (``number`` None) or in round ``number``."""
    return f"raised while {'warming up' if number is None else 'timed'}: {error!r}"


async def run_check(case: AsyncCase, when: str) -> None:
    """Run the case's state check; mark the case INVALID if it fails or raises."""
    if case.check is None:
        return
    try:
        await case.check()
    except Exception as error:
        case.invalid = check_failed(when, error)


def run_check_sync(case: SyncCase, when: str) -> None:
    """``run_check`` for a check that is a plain function."""
    if case.check is None:
        return
    try:
        case.check()
    except Exception as error:
        case.invalid = check_failed(when, error)


def calls_for(elapsed_ns: int, probe: int, settings: Settings, step: int = 1) -> int:
    """Calls per timed loop, after ``probe`` calls took ``elapsed_ns``: a multiple of
    ``step`` lasting about ``settings.target_ns``, clamped to the settings' bounds."""
    per_call = max(elapsed_ns / probe, 1.0)
    calls = int(settings.target_ns / per_call) // step * step
    return max(settings.min_calls, min(settings.max_calls, calls))


def rounds(
    cases: Sequence[C], settings: Settings, label: str | None
) -> Iterator[tuple[int, list[C]]]:
    """Each round's number and its valid cases in a shuffled order; progress on stderr
    (``[label]`` first if given) after each round."""
    rng = random.Random(settings.seed)
    started = time.perf_counter()
    tag = "" if label is None else f"[{label}] "
    for number in range(1, settings.rounds + 1):
        order = [case for case in cases if case.invalid is None]
        rng.shuffle(order)
        yield number, order
        print(
            f"  {tag}round {number}/{settings.rounds} ({time.perf_counter() - started:.1f}s)",
            file=sys.stderr,
            flush=True,
        )


async def measure(
    cases: Sequence[AsyncCase],
    settings: Settings,
    *,
    label: str,
    probe: int,
    step: int = 1,
    warm_up: bool = False,
    catch: tuple[type[Exception], ...] = (Exception,),
    describe: Callable[[int | None, Exception], str] = raised,
    after: Callable[[Any], None] | None = None,
) -> None:
    """Check, calibrate, warm up, then time every valid case in shuffled rounds.

    The calibration's ``probe`` calls are the warm-up, or one more loop of the calibrated
    length is (``warm_up``). A loop that raises one of ``catch`` marks its case INVALID
    (worded by ``describe``); any other exception propagates. ``after(case)`` runs after each
    of its loops, outside the timing."""
    for case in cases:
        await run_check(case, "before timing")
    for case in cases:
        if case.invalid is not None:
            continue
        try:
            case.calls = calls_for(await case.loop(probe), probe, settings, step)
            if warm_up:
                await case.loop(case.calls)
        except catch as error:
            case.invalid = describe(None, error)
            continue
        if after is not None:
            after(case)
    for number, order in rounds(cases, settings, label):
        for case in order:
            gc.collect()
            try:
                elapsed = await case.loop(case.calls)
            except catch as error:
                case.invalid = describe(number, error)
                continue
            case.samples.append(elapsed / case.calls)
            if after is not None:
                after(case)
    for case in cases:
        if case.invalid is None:
            await run_check(case, "after timing")


def measure_sync(cases: Sequence[SyncCase], settings: Settings, *, probe: int) -> None:
    """``measure`` for loops and checks that are plain functions (a loop may run an event
    loop of its own): the probe is the warm-up, and any exception marks a case INVALID."""
    for case in cases:
        run_check_sync(case, "before timing")
    for case in cases:
        if case.invalid is not None:
            continue
        try:
            case.calls = calls_for(case.loop(probe), probe, settings)
        except Exception as error:
            case.invalid = raised(None, error)
    for number, order in rounds(cases, settings, None):
        for case in order:
            gc.collect()
            try:
                case.samples.append(case.loop(case.calls) / case.calls)
            except Exception as error:
                case.invalid = raised(number, error)
    for case in cases:
        if case.invalid is None:
            run_check_sync(case, "after timing")


# ---------------------------------------------------------------------------- figures


def figure(case: Timed, stat: str) -> float:
    return min(case.samples) if stat == "min" else statistics.median(case.samples)


def overhead(
    case: C | None, by_key: dict[str, C], stat: str, *, shown: bool = False
) -> float | None:
    """``case``'s figure minus its baseline's; None for an invalid case unless ``shown``
    (a number printed with its INVALID flag, never held against a goal)."""
    if case is None or (case.invalid is not None and not shown):
        return None
    if not case.samples or case.baseline is None:
        return None
    base = by_key[case.baseline]
    if base.invalid is not None or not base.samples:
        return None
    return figure(case, stat) - figure(base, stat)


def ratio(by_key: dict[str, C], top: str, bottom: str, stat: str) -> float | None:
    """The overhead of case ``top`` over that of case ``bottom`` (None unless both > 0)."""
    a, b = overhead(by_key[top], by_key, stat), overhead(by_key[bottom], by_key, stat)
    if a is None or b is None or b <= 0:
        return None
    return a / b


def ns(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def status(value: float | None, goal: float | None) -> str:
    """MET or MISSED (``value <= goal``), borderline within ``BORDERLINE`` of the goal."""
    if value is None or goal is None:
        return "n/a"
    verdict = "MET" if value <= goal else "MISSED"
    if abs(value / goal - 1.0) < BORDERLINE:
        verdict += " (borderline)"
    return verdict


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis(prefix: str) -> Iterator[str]:
    """A throw-away redis-server (no persistence) on a free loopback port, its working
    directory named ``prefix...``; yields its URL."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not on PATH: give --url redis://host:port/0")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        options += ["--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(
            [executable, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            with redis.Redis.from_url(url) as client:
                deadline = time.monotonic() + 10
                while True:  # bounded: the server answers within a few ms
                    try:
                        client.ping()
                        break
                    except redis.ConnectionError:
                        if time.monotonic() > deadline or process.poll() is not None:
                            raise SystemExit(f"redis-server did not start on port {port}") from None
                        time.sleep(0.02)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def commandstats(client: Any) -> dict[str, int]:
    """Calls per command the server has executed (``INFO commandstats``; a sync client)."""
    info: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in info.items()
        if isinstance(value, dict)
    }


def difference(
    before: dict[str, int], after: dict[str, int], ignore: tuple[str, ...]
) -> dict[str, int]:
    """The commands executed between two ``commandstats``, by name, but those in ``ignore``."""
    counts = {name: after[name] - before.get(name, 0) for name in after}
    return {name: count for name, count in sorted(counts.items()) if count and name not in ignore}


def delete_keys(client: Any, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (a sync client); how many there were."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


async def clean_redis(url: str, pattern: str) -> int:
    """``delete_keys`` on a client of its own, asynchronously."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop a PostgreSQL schema and everything in it, on a connection of its own."""
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
