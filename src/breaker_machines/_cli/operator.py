"""The operator commands: ``status``, ``open``/``close``/``reset``/``disable``/``enable``
and ``watch``, on a Redis or PostgreSQL storage shared by running applications.

Nothing here decides a state: a control reads the stored record, adopts it into a
:class:`~breaker_machines._core.records.BreakerState` and steps the control event with
the core's ``step()`` (as ``Breaker.force_open()`` does in an application), then writes
the result with the storage's ``propose(force=True)``, which publishes it; running
processes adopt it from their pub/sub or LISTEN listener at once.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
import anyio.abc

from .._core.errors import ConfigError, InvalidEvent
from .._core.policy import Policy
from .._core.records import (
    BreakerState,
    Disable,
    Enable,
    ForceClose,
    ForceOpen,
    RemoteObserved,
    Reset,
    Transitioned,
)
from .._core.status import State
from .._core.transitions import step
from ..storage._urls import redacted
from ..storage.postgres import PostgresStorage
from ..storage.redis import RedisStorage
from ..storage.shared import (
    CorruptRecordError,
    Proposal,
    SharedRecord,
    SharedStorage,
    StorageError,
    StoredBreaker,
)
from . import render

__all__ = ["COMMANDS", "add_commands", "run"]

REDIS_ENV = "BREAKER_MACHINES_REDIS_URL"
POSTGRES_ENV = "BREAKER_MACHINES_POSTGRES_DSN"

#: The control commands: the core event each steps, and what the help says.
CONTROLS: dict[str, tuple[type[ForceOpen | ForceClose | Reset | Disable | Enable], str]] = {
    "open": (ForceOpen, "hold a breaker open (FORCED_OPEN) everywhere: breaker.force_open()"),
    "close": (ForceClose, "close a breaker everywhere: breaker.force_close()"),
    "reset": (Reset, "reset a breaker to a fresh CLOSED circuit everywhere: breaker.reset()"),
    "disable": (Disable, "let every call through, counting nothing: breaker.disable()"),
    "enable": (Enable, "leave DISABLED for a fresh CLOSED circuit: breaker.enable()"),
}

COMMANDS = ("status", "watch", *CONTROLS)
"""The subcommands this module adds."""

#: Controls read nothing from the policy (see MANUAL in the core's transitions): any
#: policy steps them alike, so the command does not need the application's.
_ANY_POLICY = Policy()


class Failure(Exception):
    """The command cannot go on: ``message`` for stderr, ``code`` for the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Where:
    """The storage the command works on, as the arguments name it."""

    kind: str  # "redis" or "postgres"
    url: str
    prefix: str
    schema: str
    table: str
    timeout: float

    def build(self) -> RedisStorage | PostgresStorage:
        """The storage object (ConfigError for a bad URL or name)."""
        if self.kind == "redis":
            return RedisStorage(self.url, prefix=self.prefix, timeout=self.timeout)
        # create=False: an operator's tool never runs DDL on the application's database.
        return PostgresStorage(
            self.url, schema=self.schema, table=self.table, create=False, timeout=self.timeout
        )

    def describe(self) -> dict[str, Any]:
        """The storage for JSON output (the URL without its password)."""
        about: dict[str, Any] = {"kind": self.kind, "url": redacted(self.url)}
        if self.kind == "redis":
            about["prefix"] = self.prefix
        else:
            about["schema"] = self.schema
            about["table"] = self.table
        return about


# --------------------------------------------------------------------------- arguments


def add_commands(commands: Any) -> None:
    """Add the operator subcommands to ``commands`` (an argparse subparsers action)."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group(
        "storage",
        f"where the breakers live: --redis or --postgres (or ${REDIS_ENV} / ${POSTGRES_ENV})",
    )
    # (one or the other: checked in _where; argparse shows a mutually exclusive group
    # inherited from a parent parser outside its argument group)
    where.add_argument("--redis", metavar="URL", help="a Redis URL: redis://host:6379/0")
    where.add_argument("--postgres", metavar="DSN", help="a DSN: postgresql://user@host/db")
    where.add_argument("--prefix", help="Redis key prefix (default: breaker-machines)")
    where.add_argument("--schema", help="PostgreSQL schema (default: breaker_machines)")
    where.add_argument("--table", help="PostgreSQL table (default: breakers)")
    where.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per storage operation (default 5)"
    )
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON (see docs/cli.md)")
    output.add_argument(
        "-v", "--verbose", action="store_true", help="log the storage's warnings on stderr"
    )
    common.add_argument(
        "--backend",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the event loop to run on (default asyncio)",
    )

    status = commands.add_parser(
        "status",
        parents=[common],
        help="show the breakers stored in Redis or PostgreSQL",
        description="Show the breakers a shared storage holds: state, version, counts, "
        "retry time (relative to the storage server's clock) and the last reason. Exit "
        "status 2 when a NAME given is not stored.",
    )
    status.add_argument("names", nargs="*", metavar="NAME", help="only these breakers")
    status.set_defaults(subparser=status)

    for command, (_, summary) in CONTROLS.items():
        control = commands.add_parser(
            command,
            parents=[common],
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. Written whatever the stored "
            "version is, and published: running processes adopt it at once. Refused "
            "(exit status 2) for a breaker the storage does not hold, unless --create.",
        )
        control.add_argument("name", metavar="NAME", help="the breaker")
        control.add_argument(
            "--create",
            action="store_true",
            help="write the control even if the storage holds no such breaker (yet)",
        )
        control.set_defaults(subparser=control)

    watch = commands.add_parser(
        "watch",
        parents=[common],
        help="print transitions as running processes publish them",
        description="Subscribe to the transitions published on the storage (Redis pub/sub, "
        "PostgreSQL LISTEN) and print one line per transition until interrupted.",
    )
    watch.add_argument(
        "--count", type=int, metavar="N", help="exit after N transitions (default: never)"
    )
    watch.set_defaults(subparser=watch)


def _where(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Where:
    kind, url = "", ""
    if args.redis is not None and args.postgres is not None:
        parser.error("--redis and --postgres: name one storage")
    if args.redis is not None:
        kind, url = "redis", args.redis
    elif args.postgres is not None:
        kind, url = "postgres", args.postgres
    else:
        from_env = [
            (k, os.environ.get(v, ""))
            for k, v in (("redis", REDIS_ENV), ("postgres", POSTGRES_ENV))
        ]
        given = [(k, v) for k, v in from_env if v]
        if len(given) > 1:
            parser.error(
                f"both ${REDIS_ENV} and ${POSTGRES_ENV} are set: pass --redis or --postgres"
            )
        if not given:
            parser.error(
                f"name a storage: --redis URL or --postgres DSN (or ${REDIS_ENV} / ${POSTGRES_ENV})"
            )
        kind, url = given[0]
    if kind == "redis" and (args.schema is not None or args.table is not None):
        parser.error("--schema and --table are for PostgreSQL; Redis takes --prefix")
    if kind == "postgres" and args.prefix is not None:
        parser.error("--prefix is for Redis; PostgreSQL takes --schema and --table")
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 600):
        parser.error(f"--timeout={args.timeout}: must be more than 0 and at most 600 seconds")
    return Where(
        kind=kind,
        url=url,
        prefix="breaker-machines" if args.prefix is None else args.prefix,
        schema="breaker_machines" if args.schema is None else args.schema,
        table="breakers" if args.table is None else args.table,
        timeout=float(args.timeout),
    )


def run(args: argparse.Namespace) -> int:
    """Run operator command ``args.command``; returns the exit status.

    Bad arguments exit through the subcommand's ``parser.error`` (status 2); a storage
    that cannot be reached or fails is one line on stderr and status 1.
    """
    parser: argparse.ArgumentParser = args.subparser
    where = _where(parser, args)
    if args.command == "watch" and args.count is not None and args.count < 1:
        parser.error(f"--count={args.count}: must be at least 1")
    try:
        storage = where.build()
    except ConfigError as error:
        parser.error(
            f"{'--' + where.kind}: {error}" if error.field in ("url", "dsn") else str(error)
        )
    if args.command in CONTROLS:
        try:
            storage.check_name(args.name)
        except ConfigError as error:
            parser.error(str(error))
    if args.backend == "trio":
        import importlib.util

        if importlib.util.find_spec("trio") is None:
            parser.error("--backend trio needs trio: pip install 'breaker-machines[trio]'")
    _quiet_logs(verbose=args.verbose)
    out = sys.stdout
    if args.command == "status":
        body: Callable[[], Awaitable[int]] = functools.partial(
            _status, storage, where, args.names, args.json, out
        )
    elif args.command == "watch":
        body = functools.partial(_watch, storage, where, args.count, args.json, out)
    else:
        body = functools.partial(
            _control,
            storage,
            where,
            command=args.command,
            name=args.name,
            create=args.create,
            as_json=args.json,
            out=out,
        )
    main = functools.partial(_opened, storage, where, body)
    if args.command != "watch":  # (watch handles SIGINT and SIGTERM itself)
        main = functools.partial(_interruptible, main)
    try:
        return anyio.run(main, backend=args.backend)
    except Failure as failure:
        sys.stderr.write(f"{parser.prog}: {failure}\n")
        return failure.code
    except KeyboardInterrupt:  # (watch handles SIGINT itself once it runs)
        return 0 if args.command == "watch" else 130
    except BrokenPipeError:  # the reader went away (`watch | head -3`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (what is still buffered goes nowhere)
        return 0 if args.command == "watch" else 1


async def _interruptible(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main``; Ctrl-C (SIGINT) or SIGTERM cancels it and the command exits with 130.

    Handled here rather than left to ``KeyboardInterrupt``: how an interrupt surfaces from
    the event loop differs between Pythons and backends (under asyncio on Python 3.10 it
    comes out as a ``CancelledError``), and a cancellation closes the storage properly.
    """
    problem: Exception | None = None
    code = 0
    finished = False  # stays False when a signal cancelled main
    with _signals() as signals:
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on, signals, group.cancel_scope)
            # (what fails is raised below: not wrapped in an exception group)
            try:
                code = await main()
            except Exception as error:  # a Failure, a BrokenPipeError...
                problem = error
            finished = True
            group.cancel_scope.cancel()
    if not finished:
        return 130
    if problem is not None:
        raise problem
    return code


def _quiet_logs(*, verbose: bool) -> None:
    """The storages log their retries as warnings with tracebacks: a command reports its
    own errors in one line, so those are shown only with ``--verbose``."""
    logger = logging.getLogger("breaker_machines")
    if verbose:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()
    logger.addHandler(handler)


async def _opened(
    storage: RedisStorage | PostgresStorage, where: Where, body: Callable[[], Awaitable[int]]
) -> int:
    """Open the storage, run ``body``, close it; storage errors become a Failure."""
    try:
        async with storage:
            code = await body()
            # Let the storage's listener finish starting before it is closed: cancelled
            # half-way (in its first transaction), asyncpg complains on stderr.
            with anyio.move_on_after(where.timeout):
                await storage.wait_subscribed()
            return code
    except StorageError as error:
        raise Failure(f"{where.kind} at {redacted(where.url)}: {error}", 1) from None
    except ConfigError as error:  # e.g. the storage's driver is not installed
        raise Failure(str(error), 1) from None


def _emit(out: TextIO, document: Any) -> None:
    out.write(json.dumps(document, ensure_ascii=False) + "\n")
    out.flush()


# --------------------------------------------------------------------------- status


async def _status(
    storage: SharedStorage, where: Where, names: Sequence[str], as_json: bool, out: TextIO
) -> int:
    asked = list(dict.fromkeys(names))  # in the order given, once each
    listed = asked or await storage.breaker_names()
    found: list[StoredBreaker] = []
    corrupt: list[tuple[str, CorruptRecordError]] = []
    missing: list[str] = []
    for name, result in zip(listed, await storage.inspect_many(listed), strict=True):
        if isinstance(result, CorruptRecordError):
            corrupt.append((name, result))
        elif result.record.missing:
            if asked:  # (a listed breaker that expired meanwhile is simply gone)
                missing.append(name)
        else:
            found.append(result)
    if as_json:
        _emit(
            out,
            {
                "storage": where.describe(),
                "breakers": [render.breaker_json(stored) for stored in found],
                "missing": missing,
                "corrupt": [{"name": name, "error": str(error)} for name, error in corrupt],
            },
        )
    else:
        if found or corrupt:
            out.write(render.status_table(found, corrupt))
        elif not missing:
            out.write("no breakers stored\n")
        for name in missing:
            out.write(f"{name}: not stored\n")
        out.flush()
    return 2 if missing else 0


# --------------------------------------------------------------------------- controls


def _adopted(record: SharedRecord | None, now: float) -> BreakerState:
    """The stored circuit as the core's state, adopted with the core's own RemoteObserved
    (as a breaker adopts what another process wrote); a fresh circuit if there is none."""
    fresh = BreakerState()
    if record is None or record.missing:
        return fresh
    opened_at = None if record.opened_ago is None else now - record.opened_ago
    retry_at = None if record.retry_in is None else now + record.retry_in
    event = RemoteObserved(record.status, record.version, opened_at, retry_at, record.trips, now)
    return step(_ANY_POLICY, fresh, event).state


async def _control(
    storage: SharedStorage,
    where: Where,
    *,
    command: str,
    name: str,
    create: bool,
    as_json: bool,
    out: TextIO,
) -> int:
    try:
        stored: StoredBreaker | None = await storage.inspect(name)
        problem = ""
    except CorruptRecordError as error:  # replaced, as a breaker replaces it
        stored = None
        problem = str(error)
    if stored is not None and stored.record.missing and not create:
        raise Failure(
            f"no breaker named {name!r} in {where.kind} at {redacted(where.url)} "
            "(check the name, --prefix/--schema/--table; --create writes it anyway)",
            2,
        )
    now = time.monotonic()
    record = None if stored is None else stored.record
    try:
        state = _adopted(record, now)
    except InvalidEvent as error:  # a record the core refuses: replaced like a corrupt one
        state = BreakerState()
        problem = f"stored record refused by the core ({error})"
    expected = 0 if record is None else record.version
    event_type, _ = CONTROLS[command]
    result = step(_ANY_POLICY, state, event_type(now))
    moved = [effect for effect in result.effects if isinstance(effect, Transitioned)]
    if problem and not moved:  # (close/enable of a fresh circuit) the bad record must go
        result = step(_ANY_POLICY, state, Reset(now))
        moved = [effect for effect in result.effects if isinstance(effect, Transitioned)]
    transition: dict[str, Any] | None = None
    if moved:
        new = result.state
        reason = moved[-1].reason
        proposal = Proposal(
            status=new.status,
            version=new.version,
            trips=new.trips,
            reason=reason,
            opened_ago=None if new.opened_at is None else max(0.0, now - new.opened_at),
            open_for=None if new.retry_at is None else new.retry_at - now,
            origin=f"breaker-machines-cli-{uuid.uuid4().hex}",
        )
        _, written = await storage.propose(name, expected, proposal, force=True)
        transition = {
            "source": None if record is None else record.status.value,
            "target": written.status.value,
            "reason": reason.value,
            "version": written.version,
        }
    after = await storage.inspect(name)
    if as_json:
        _emit(
            out,
            {
                "storage": where.describe(),
                "command": command,
                "changed": transition is not None,
                "transition": transition,
                "replaced": problem or None,
                "breaker": render.breaker_json(after),
            },
        )
    elif transition is None:
        out.write(f"{name}: already {after.record.status.value}; nothing written\n")
    else:
        if problem:
            out.write(f"{name}: replaced a record that did not validate: {problem}\n")
        out.write(
            f"{name}: {transition['source'] or '?'} -> {transition['target']} "
            f"({transition['reason']}), version {transition['version']}; published\n"
        )
    out.flush()
    return 0


# --------------------------------------------------------------------------- watch


@dataclass(frozen=True)
class _Heard:
    """What the listener handed over: a transition, or a (re)subscription."""

    at: float
    key: str | None = None
    record: SharedRecord | None = None


async def _watch(
    storage: SharedStorage, where: Where, count: int | None, as_json: bool, out: TextIO
) -> int:
    send, receive = anyio.create_memory_object_stream[_Heard](math.inf)

    def heard(key: str, record: SharedRecord) -> None:
        send.send_nowait(_Heard(time.time(), key, record))

    def subscribed() -> None:
        send.send_nowait(_Heard(time.time()))

    stop_watching = storage.watch_all(heard)
    stop_gaps = storage.on_gap(subscribed)
    try:
        with receive, send, _signals() as signals:
            problem: StorageError | Failure | BrokenPipeError | None = None
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_on, signals, group.cancel_scope)
                # (what fails is raised below: not wrapped in an exception group)
                try:
                    await _print_transitions(
                        storage, where, receive=receive, count=count, as_json=as_json, out=out
                    )
                except (StorageError, Failure, BrokenPipeError) as error:
                    problem = error
                group.cancel_scope.cancel()  # --count reached, or failed
            if problem is not None:
                raise problem
    finally:
        stop_watching()
        stop_gaps()
    return 0


async def _print_transitions(
    storage: SharedStorage,
    where: Where,
    *,
    receive: anyio.abc.ObjectReceiveStream[_Heard],
    count: int | None,
    as_json: bool,
    out: TextIO,
) -> None:
    # One round trip first: an unreachable storage fails the command (status 1) instead
    # of the listener retrying forever in the background.
    names = await storage.breaker_names()
    limit = max(10.0, 4 * storage.timeout)
    first: _Heard | None = None
    with anyio.move_on_after(limit):
        first = await receive.receive()
    if first is None:
        raise Failure(f"{where.kind} at {redacted(where.url)}: not subscribed after {limit:g}s", 1)
    # Where each breaker is now (read after subscribing: nothing published since is
    # missed): the source of the next transition each publishes.
    known: dict[str, tuple[State, int]] = {}
    for result in await storage.inspect_many(names):
        if isinstance(result, StoredBreaker) and not result.record.missing:
            known[result.name] = (result.record.status, result.record.version)
    resolved: dict[str, str] = {}
    seen = 0
    heard: _Heard | None = first
    while count is None or seen < count:
        if heard is None:
            heard = await receive.receive()
        if heard.record is None or heard.key is None:
            gap = heard is not first
            if as_json:
                _emit(
                    out,
                    {
                        "event": "subscribed",
                        "time": render.timestamp(heard.at),
                        "storage": where.describe(),
                        "gap": gap,
                    },
                )
            else:
                what = (
                    "subscribed again (transitions may have been missed)" if gap else "subscribed"
                )
                out.write(
                    f"{render.timestamp(heard.at)}  {what} to {where.kind} at "
                    f"{redacted(where.url)}; Ctrl-C to stop\n"
                )
                out.flush()
            heard = None
            continue
        key, record = heard.key, heard.record
        name = resolved.get(key)
        if name is None:  # (a name found is kept: a breaker's key never changes)
            name = await storage.name_of(key)
            if name is not None:
                resolved[key] = name
        source: State | None = None
        if name is not None:
            before = known.get(name)
            if before is not None and before[1] < record.version:
                source = before[0]
            if before is None or before[1] < record.version:
                known[name] = (record.status, record.version)
        if as_json:
            _emit(out, render.transition_json(heard.at, name, key, source, record))
        else:
            out.write(render.transition_line(heard.at, name, key, source, record) + "\n")
            out.flush()
        heard = None
        seen += 1


def _signals() -> AbstractContextManager[AsyncIterator[int] | None]:
    """Receive SIGINT (Ctrl-C) and SIGTERM, where the platform lets anyio do that."""
    try:
        return anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    except NotImplementedError:  # pragma: no cover - Windows: Ctrl-C is KeyboardInterrupt
        return nullcontext(None)


async def _stop_on(signals: AsyncIterator[int] | None, scope: anyio.CancelScope) -> None:
    """The first signal cancels ``scope``: it stops watching (the command exits with 0)
    or interrupts another command (it exits with 130)."""
    if signals is None:  # pragma: no cover - Windows
        return
    async for _ in signals:
        scope.cancel()
        return
