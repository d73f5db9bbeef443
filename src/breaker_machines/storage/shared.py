"""The protocol between a breaker and a storage shared by many processes.

A shared storage stores and aggregates; it never decides. Every decision is the core's
``step()``, made in some process on the numbers the storage reads back. The protocol has
four operations, each one round trip:

* :meth:`SharedStorage.flush`: add a batch of outcomes (for one generation) to the
  shared windows and counters, release the probe permits that reported, and read the
  record back. With an empty batch it is a refresh.
* :meth:`SharedStorage.propose`: write a transition the core decided, by compare-and-set
  on the version (``force``: an operator's control, or re-seeding a storage that lost
  its data, written whatever the version), and publish it.
* :meth:`SharedStorage.acquire_probe`: take one of the fleet's half-open probe permits,
  with a lease that expires on the storage's clock.
* :meth:`SharedStorage.watch`: register for the transitions other processes publish.

Operator tools (``python -m breaker_machines status``/``watch``) also use a read side that
needs no policy: :meth:`SharedStorage.breaker_names`, :meth:`SharedStorage.inspect`,
:meth:`SharedStorage.watch_all` and :meth:`SharedStorage.name_of`. A storage may leave
them unimplemented (they raise ``NotImplementedError``); breakers never call them.

Times cross the protocol as *durations relative to the storage server's clock*
(``retry_in``, ``opened_ago``, ``open_for``): the storage stamps absolute times with its
own clock, and each process converts them to its local clock on arrival. Skew between
hosts therefore never changes when a circuit reopens or recovers.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from .._core.errors import ConfigError
from .._core.policy import Policy
from .._core.status import Reason, State

__all__ = [
    "Batch",
    "CorruptRecordError",
    "Proposal",
    "SharedRecord",
    "SharedStorage",
    "StorageError",
    "StoredBreaker",
    "Watcher",
]

logger: logging.Logger = logging.getLogger("breaker_machines")

Bucket = tuple[int, int, int]
"""``(calls, failures, slow)`` of one window bucket."""


def jittered(delay: float) -> float:
    """``delay`` times a random factor in [0.5, 1.5): listeners of many processes that lost
    their server together do not all reconnect in the same instant."""
    return delay * (0.5 + random.random())


class StorageError(Exception):
    """A shared storage could not do what was asked (unreachable, too slow, bad data).

    Raised to the breaker's runner only: a breaker never lets it reach a caller of
    ``guard()``; it keeps deciding from its local replica and retries.
    """


class CorruptRecordError(StorageError):
    """The storage holds a record that does not validate (hand-edited, another program's,
    a bug). A breaker never trusts it: it reports it and writes its own state over it."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Outcomes counted in one generation since the last flush, in order.

    ``outcomes`` holds one letter per call: ``s`` success, ``f`` failure, ``S`` slow
    success, ``F`` slow failure. ``probes`` are the half-open permits that reported, as
    ``(token, succeeded)``.

    ``origin`` and ``seq`` make a flush idempotent: a breaker numbers its batches, and
    resends a batch whose answer was lost with the same number. A storage remembers the
    last ``seq`` it applied per origin (for the current generation) and applies a batch
    at most once. ``seq == 0`` is never deduplicated. Releasing a permit is idempotent by
    itself (a token is released once).
    """

    version: int
    outcomes: str = ""
    probes: tuple[tuple[str, bool], ...] = ()
    origin: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Proposal:
    """A transition the core decided, to be written as the circuit's new record."""

    status: State
    version: int
    trips: int
    reason: Reason
    opened_ago: float | None
    open_for: float | None
    origin: str


@dataclass(frozen=True, slots=True)
class SharedRecord:
    """A circuit as shared storage holds it, read back after an operation.

    Times are relative to the storage's clock at the moment it answered. Windows are
    newest bucket first: ``failure_buckets`` is time bucketed (its first bucket is the
    current one); ``rate_buckets`` is time bucketed too, unless the policy counts calls, in
    which case ``rate_head`` is the running number of its first bucket. ``missing`` means
    the storage had no record (never written, expired or lost): it reads as a fresh CLOSED
    circuit at version 0. ``origin`` names the breaker object that wrote the last
    transition.
    """

    status: State
    version: int
    trips: int
    reason: Reason | None
    opened_ago: float | None
    retry_in: float | None
    consecutive_failures: int = 0
    half_open_successes: int = 0
    failure_buckets: tuple[Bucket, ...] = ()
    rate_buckets: tuple[Bucket, ...] = ()
    rate_head: int = 0
    probes: int = 0
    missing: bool = False
    origin: str = ""


Watcher = Callable[[SharedRecord], None]
"""Called (in the event loop that opened the storage) with each published transition."""

KeyWatcher = Callable[[str, SharedRecord], None]
"""Called with the *key* of the breaker (see :meth:`SharedStorage.name_of`) and the record
of each transition published for any breaker of the storage."""


@dataclass(frozen=True, slots=True)
class StoredBreaker:
    """A breaker as a storage holds it, read for inspection, without a policy.

    ``record`` is the stored circuit (its windows left empty, times relative to the
    storage server's clock; ``record.missing`` when nothing is stored under ``name``).
    Without the policy the storage cannot tell which window buckets are still inside the
    window, so the counts are totals over the buckets it holds: ``window_failures`` of
    the failure window (``failures=`` within ``within=``), ``rate_calls``,
    ``rate_failures`` and ``rate_slow`` of the rate window. Buckets that left the window
    are pruned at the breaker's next write, so these may include calls that already aged
    out. ``expires_in`` is how long until the storage drops the record unless some
    process writes to it (``None``: unknown or never).
    """

    name: str
    record: SharedRecord
    window_failures: int = 0
    rate_calls: int = 0
    rate_failures: int = 0
    rate_slow: int = 0
    expires_in: float | None = None


class SharedStorage(ABC):
    """Base class of storages shared between processes (Redis, PostgreSQL, your own).

    Open it with ``async with`` before the breakers that use it run, in the same task
    that closes it. A breaker using a shared storage needs its runner (``Breaker.run`` or
    ``running()``): the runner flushes, proposes and refreshes; callers never wait on the
    storage except to take a half-open probe permit.
    """

    #: Shared by many processes: breakers batch, propose and adopt.
    shared = True

    flush_interval: float
    """Seconds a batch of outcomes may wait before it is flushed (0: write-through)."""
    flush_size: int
    """Outcomes that trigger a flush at once, whatever the interval."""
    refresh_interval: float
    """Seconds between refreshes of an idle breaker (the backstop to published changes)."""
    timeout: float
    """Seconds every storage operation may take before it fails with StorageError."""
    _gap_hooks: list[Callable[[], None]]

    def _configure(
        self,
        *,
        flush_interval: float,
        flush_size: int,
        refresh_interval: float,
        timeout: float,
    ) -> None:
        for field, value, zero_ok in (
            ("flush_interval", flush_interval, True),
            ("refresh_interval", refresh_interval, False),
            ("timeout", timeout, False),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(field, value, "must be a number of seconds")
            if not (0.0 <= value <= 1e12) or (value == 0 and not zero_ok):
                raise ConfigError(
                    field,
                    value,
                    "must be a number of seconds "
                    + (">= 0" if zero_ok else "> 0")
                    + " and at most 1e12",
                )
        if isinstance(flush_size, bool) or not isinstance(flush_size, int) or flush_size < 1:
            raise ConfigError("flush_size", flush_size, "must be an integer >= 1")
        self.flush_interval = float(flush_interval)
        self.flush_size = flush_size
        self.refresh_interval = float(refresh_interval)
        self.timeout = float(timeout)

    @abstractmethod
    async def __aenter__(self) -> SharedStorage:
        """Open the storage (connections, listeners) in the current event loop."""

    @abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it (in the task that opened it)."""

    def check_name(self, name: str) -> None:  # noqa: B027 - a hook with a default
        """Raise :class:`~breaker_machines.ConfigError` for a name this storage cannot hold.

        Called when a breaker is built on the storage. The default accepts any string.
        """

    @abstractmethod
    async def flush(self, name: str, policy: Policy, batch: Batch) -> SharedRecord:
        """Add ``batch`` (if it is of the stored generation and was not applied before:
        see :class:`Batch`) and read the record back."""

    @abstractmethod
    async def propose(
        self, name: str, expected: int, proposal: Proposal, *, force: bool = False
    ) -> tuple[bool, SharedRecord]:
        """Write ``proposal`` if the stored version is ``expected`` (or ``force``).

        Returns whether it was written, and the record as stored afterwards. A forced
        write gets version ``max(stored + 1, proposal.version)``. A written transition
        starts a new generation (empty windows, counters and permits) and is published.
        """

    @abstractmethod
    async def acquire_probe(
        self, name: str, version: int, limit: int, lease: float, token: str
    ) -> tuple[bool, SharedRecord]:
        """Take a half-open permit as ``token`` if the record is HALF_OPEN at ``version``
        and fewer than ``limit`` unexpired permits are out; its lease lasts ``lease``
        seconds of the storage's clock."""

    @abstractmethod
    def watch(self, name: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` with every transition published for ``name``; returns the
        function that stops it."""

    # ------------------------------------------------------------------ read side (tools)

    async def breaker_names(self) -> list[str]:
        """The names of the breakers the storage holds a record for, sorted.

        For operator tools; breakers never call it. The default raises
        ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its breakers")

    async def inspect(self, name: str) -> StoredBreaker:
        """Read breaker ``name`` as stored, without a policy and without writing anything
        (no TTL is extended). Raises :class:`CorruptRecordError` for a record that does not
        validate. The default raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} cannot inspect its breakers")

    async def inspect_many(self, names: Sequence[str]) -> list[StoredBreaker | CorruptRecordError]:
        """:meth:`inspect` each of ``names``; a corrupt record is returned as its error
        (one bad record does not hide the others)."""
        found: list[StoredBreaker | CorruptRecordError] = []
        for name in names:
            try:
                found.append(await self.inspect(name))
            except CorruptRecordError as error:
                found.append(error)
        return found

    def watch_all(self, watcher: KeyWatcher) -> Callable[[], None]:
        """Call ``watcher`` with every transition published for any breaker of the storage,
        with the breaker's key (turn it into its name with :meth:`name_of`). Returns the
        function that stops it. The default raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} cannot watch every breaker")

    async def name_of(self, key: str) -> str | None:
        """The name of the breaker whose transitions are published under ``key`` (``None``:
        no such breaker is stored). The default: the key is the name."""
        return key

    def on_gap(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` whenever published transitions may have been missed: each time
        the storage's listener (pub/sub, LISTEN) subscribes, the first time included.
        Breakers refresh at once, so a reconnection never leaves one on stale state until
        its next periodic refresh. Returns the function that removes ``hook``."""
        hooks: list[Callable[[], None]] | None = getattr(self, "_gap_hooks", None)
        if hooks is None:
            hooks = self._gap_hooks = []
        hooks.append(hook)

        def remove() -> None:
            if hook in hooks:
                hooks.remove(hook)

        return remove

    def _missed(self) -> None:
        """Storages call this when their listener (re)subscribed."""
        for hook in list(getattr(self, "_gap_hooks", ())):
            try:
                hook()
            except Exception:
                logger.exception("a gap hook of %r raised", self)

    def advance_clock(self, seconds: float) -> None:
        """Testing only: add ``seconds`` to the clock the storage stamps times with.

        Conformance tests drive breakers with a fake clock; this moves the storage's
        clock by the same amount so windows, leases and retry times age together.
        """
        raise NotImplementedError(f"{type(self).__name__} has no adjustable clock")
