"""A breaker's local replica of a circuit kept in shared storage.

The breaker admits and rejects from its local state, with no round trip, and counts
outcomes into a batch. Its runner calls :meth:`Replica.service`, which

1. writes the transitions this process's core decided (compare-and-set on the version
   last known to be stored): the winner announces them with ``won=True``; a loser adopts
   what is stored and announces that with ``won=False``;
2. flushes the batch (and the probe permits that reported) and gives the fleet's counts
   back to the core (:class:`~breaker_machines._core.records.Synced`), which may decide a
   transition in turn;
3. refreshes an idle breaker now and then, as a backstop to published transitions, which
   :meth:`Replica.observe` adopts as they arrive.

Every decision is the core's; this module only moves records between the core and the
storage and converts them: storage sends durations relative to its own clock, the replica
turns them into times on the breaker's clock. Versions are converted too: the local state's
version only ever grows (permits carry it as their generation), while the stored version is
the fleet's; ``stored`` and ``synced_state`` remember which local state matched which stored
version at the last exchange.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import anyio

from ._core.errors import ConfigError, InvalidEvent
from ._core.records import EMPTY_WINDOW, BreakerState, RemoteObserved, Synced, Window
from ._core.status import Outcome, Reason, State
from ._core.transitions import step
from .callbacks import StorageEvent, Transition
from .storage.shared import (
    Batch,
    Bucket,
    CorruptRecordError,
    Proposal,
    SharedRecord,
    SharedStorage,
    StorageError,
)

if TYPE_CHECKING:
    from ._base import BreakerBase

__all__ = ["Replica"]

logger: logging.Logger = logging.getLogger("breaker_machines")

_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
_TIMEOUT: Final = Outcome.TIMEOUT
_MAX_BATCH: Final = 100_000
_FIRST_RETRY: Final = 0.05
_LAST_RETRY: Final = 5.0


def _window(buckets: tuple[Bucket, ...], head: int) -> Window:
    if not buckets:
        return Window(head, (), 0, 0, 0)
    calls = failures = slow = 0
    for bucket in buckets:
        calls += bucket[0]
        failures += bucket[1]
        slow += bucket[2]
    return Window(head, buckets, calls, failures, slow)


def _plus(buckets: tuple[Bucket, ...], extra: Bucket) -> tuple[Bucket, ...]:
    """``buckets`` with ``extra`` added to the newest one."""
    if not extra[0]:
        return buckets
    if not buckets:
        return (extra,)
    calls, failures, slow = buckets[0]
    return ((calls + extra[0], failures + extra[1], slow + extra[2]), *buckets[1:])


class Replica:
    """The shared-storage half of a breaker (one per breaker using a shared storage)."""

    __slots__ = (
        "batch",
        "batch_version",
        "breaker",
        "controls",
        "corrupt",
        "degraded",
        "degraded_since",
        "delivered",
        "dropped",
        "errors",
        "flush_due",
        "force",
        "gaps",
        "horizon",
        "lock",
        "marks",
        "origin",
        "pending",
        "proposed",
        "refresh_due",
        "released",
        "reserved",
        "retry_at",
        "retry_delay",
        "seq",
        "stale",
        "storage",
        "stored",
        "synced_state",
        "tokens",
        "uncertain",
        "want_permit",
    )

    def __init__(self, breaker: BreakerBase, storage: SharedStorage) -> None:
        try:
            breaker.name.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                "name", breaker.name, "must be valid Unicode (no lone surrogates) to be shared"
            ) from None
        storage.check_name(breaker.name)
        self.breaker = breaker
        self.storage = storage
        self.origin = uuid.uuid4().hex
        self.stored: int = 0  # the fleet's version at the last exchange with the storage
        self.synced_state = BreakerState()  # the local state that matched it
        self.batch: list[str] = []
        self.batch_version = 0
        self.released: list[tuple[str, bool]] = []
        self.tokens: dict[int, str] = {}  # local probe id -> fleet permit token
        self.proposed: list[Transition] = []  # decided here, not yet written
        self.force = False
        self.controls = 0  # operator controls made so far (each must be written)
        self.flush_due: float | None = None
        self.refresh_due = -math.inf
        self.retry_at = -math.inf
        self.retry_delay = _FIRST_RETRY
        self.degraded = False
        self.errors = 0
        self.stale = 0  # outcomes of a generation that ended before they were flushed
        self.dropped = 0  # outcomes beyond the batch bound, or past the window, while down
        self.corrupt = 0  # stored records that failed validation (and were replaced)
        self.delivered = 0  # outcomes the storage acknowledged (counted in the fleet's record)
        self.degraded_since: float | None = None
        # Flushes are numbered; one whose answer was lost is resent as it was (same seq),
        # so the storage applies it once: (local generation, outcomes, seq, cut at).
        self.seq = 0
        self.gaps = 0  # listener (re)subscriptions seen
        self.pending: tuple[int, str, int, float] | None = None
        # While storage is down: (n, t) says the first n outcomes of the batch were
        # counted at or before t; outcomes older than the policy's longest time window
        # (horizon) are dropped, not delivered late into a window they no longer belong to.
        self.marks: list[tuple[int, float]] = []
        policy = breaker.policy
        self.horizon = max(policy.within or 0.0, policy.window or 0.0) or math.inf
        self.lock: anyio.Lock | None = None
        breaker._tally = self.batch
        breaker._tally_gen = self.batch_version
        # The append that fills a flush (or reaches the bound) goes through note().
        breaker._tally_cap = min(storage.flush_size, _MAX_BATCH) - 1
        # (local version, token, local time its lease surely still runs) for a sync guard
        self.reserved: tuple[int, str, float] | None = None
        self.want_permit = False
        self.uncertain: int | None = None  # the version of a write whose answer was lost

    # ------------------------------------------------------------------ hot path (sync)

    def note(self, outcome: Outcome, duration: float, generation: int, probe: int | None) -> None:
        """Count one outcome into the batch (called for every outcome, before the core)."""
        breaker = self.breaker
        if probe is not None:
            token = self.tokens.pop(probe, None)
            if token is not None:
                limit = breaker.policy.slow_call_duration
                slow = limit is not None and duration >= limit
                self.released.append((token, outcome is _SUCCESS and not slow))
                self.flush_due = -math.inf
                breaker._wake_runner()
            return
        if outcome is _SUCCESS:
            letter = "s"
        elif outcome is _FAILURE or outcome is _TIMEOUT:
            letter = "f"
        else:
            return  # neutral
        if breaker._timed:
            limit = breaker.policy.slow_call_duration
            if limit is not None and duration >= limit:
                letter = letter.upper()
        batch = self.batch
        if generation != self.batch_version:
            if generation < self.batch_version:
                self.stale += 1  # admitted before a transition this batch already follows
                return
            self.stale += len(batch)
            batch.clear()
            self.marks.clear()
            self.batch_version = generation
            breaker._tally_gen = generation
        if len(batch) >= _MAX_BATCH:
            # Storage has been down a while: the oldest tenth goes (counted), the newest stay.
            self._discard(_MAX_BATCH // 10)
        batch.append(letter)
        if len(batch) == self.storage.flush_size:
            self.flush_due = -math.inf
            breaker._wake_runner()
        elif len(batch) == 1:
            self.flush_due = breaker._clock() + self.storage.flush_interval
            breaker._wake_runner()

    def decided(self, transition: Transition) -> None:
        """The core decided a transition here: write it before announcing it."""
        self.proposed.append(transition)
        self.breaker._wake_runner()

    # ------------------------------------------------------------------ the runner

    def next_due(self, now: float) -> float:
        """Seconds until :meth:`service` has something to do."""
        if now < self.retry_at:
            return self.retry_at - now
        if self.force or self.want_permit or self.unwritten():
            return 0.0
        due = self.refresh_due
        if self.flush_due is not None:
            due = min(due, self.flush_due)
        return max(0.0, due - now)

    async def service(self, *, raise_errors: bool = False) -> None:
        """Do what is due: write decided transitions, reserve, flush, refresh.

        A storage failure marks the replica degraded and schedules a retry; it is raised
        only with ``raise_errors``.
        """
        if not raise_errors and self.breaker._clock() < self.retry_at:
            return  # backing off (a caller's wake-up, e.g. a queued callback, is no retry)
        if self.lock is None:
            self.lock = anyio.Lock()
        async with self.lock:
            try:
                try:
                    await self._service()
                except CorruptRecordError as error:
                    self._corrupt(error)
                    await self._service()  # writes this breaker's state over it
            except StorageError as error:
                self._failed(error)
                if raise_errors:
                    raise
            else:
                if self.degraded:
                    self._recovered()
                self.retry_delay = _FIRST_RETRY

    def _corrupt(self, error: CorruptRecordError) -> None:
        """A stored record failed validation: report it, and replace it (forced write)."""
        self.corrupt += 1
        self.force = True
        logger.error(
            "breaker %r: %s; replacing it with this process's state",
            self.breaker.name,
            error,
            extra={"breaker": self.breaker.name},
        )

    def _recovered(self) -> None:
        breaker = self.breaker
        now = breaker._clock()
        since = self.degraded_since
        downtime = 0.0 if since is None else max(0.0, now - since)
        self.degraded = False
        self.degraded_since = None
        logger.info(
            "breaker %r: shared storage answers again after %.3fs; resynchronised",
            breaker.name,
            downtime,
            extra={"breaker": breaker.name, "downtime": downtime},
        )
        breaker._storage_changed(
            StorageEvent(breaker.name, False, None, now, downtime, self.dropped, self.stale)
        )

    async def _service(self) -> None:
        breaker = self.breaker
        for _ in range(8):  # each pass makes progress; a bound keeps the runner responsive
            now = breaker._clock()
            if self.force or self.unwritten():
                await self._propose()
                continue
            if self.want_permit:
                self.want_permit = False
                await self._reserve()
                continue
            if self.flush_due is not None and now >= self.flush_due:
                await self._flush()
                continue
            if now >= self.refresh_due:
                await self._flush()
                continue
            return

    def _failed(self, error: StorageError) -> None:
        breaker = self.breaker
        now = breaker._clock()
        self.errors += 1
        self._mark(now)
        if not self.degraded:
            self.degraded = True
            self.degraded_since = now
            logger.warning(
                "breaker %r: shared storage failed (%s); degraded mode %r",
                breaker.name,
                error,
                breaker._degraded_mode,
                extra={"breaker": breaker.name, "degraded_mode": breaker._degraded_mode},
            )
            breaker._storage_changed(
                StorageEvent(breaker.name, True, str(error), now, None, self.dropped, self.stale)
            )
        # The retry exchanges something (a refresh at least): only an answer ends the outage.
        self.refresh_due = -math.inf
        delay = self.retry_delay
        self.retry_at = breaker._clock() + delay * (0.5 + breaker._random())
        self.retry_delay = min(delay * 2.0, _LAST_RETRY)

    async def _flush(self) -> None:
        breaker = self.breaker
        now = breaker._clock()
        self._expire(now)
        generation = self.synced_state.version
        pending = self.pending
        if pending is not None:  # resent as it was: the storage applies a seq once
            generation, outcomes, seq, cut_at = pending
            if generation != self.synced_state.version:
                self.stale += len(outcomes)  # its generation ended while it waited
                outcomes = ""
        else:
            batch = self.batch
            size = self.storage.flush_size
            outcomes = ""
            if batch and self.batch_version == generation:
                outcomes = "".join(batch[:size])  # at most flush_size per round trip
            elif batch:
                self.stale += len(batch)
            self._discard(len(outcomes) if outcomes else len(batch), counted=False)
            self.seq += 1
            seq = self.seq
            cut_at = now
        # Until acknowledged the outcomes stay pending (and in stats().unflushed).
        self.pending = (generation, outcomes, seq, cut_at) if outcomes else None
        # What stays behind (the rest of a batch over flush_size, or a backlog behind a
        # resent one) goes right after; what arrives meanwhile waits for flush_interval.
        rest = bool(self.batch)
        released = tuple(self.released)
        self.released = []
        self.flush_due = None
        base = self.synced_state
        sent = self.stored
        gaps = self.gaps
        batch_record = Batch(sent, outcomes, released, self.origin, seq)
        try:
            record = await self.storage.flush(breaker.name, breaker.policy, batch_record)
        except BaseException:
            # Not acknowledged (maybe applied, its answer lost): resent as it is.
            self.released[:0] = released
            if self.pending or self.batch or self.released:
                self.flush_due = breaker._clock() + self.storage.flush_interval
            raise
        self.pending = None
        if self.gaps == gaps:  # (a listener that reconnected meanwhile wants a refresh now)
            self.refresh_due = breaker._clock() + self.storage.refresh_interval
        if rest and self.batch:
            self.flush_due = -math.inf
        if outcomes:
            if (record.missing or record.version < sent) and (
                self.stored > 0 or breaker._state.version > 0
            ):
                # The storage lost the record (restarted empty, expired): absorb() has it
                # written back, then these outcomes go to it.
                self.pending = (generation, outcomes, seq, cut_at)
                self.flush_due = -math.inf
            elif record.version == sent and not record.missing:
                self.delivered += len(outcomes)
            else:
                self.stale += len(outcomes)  # the stored generation moved on: not counted
        if self.synced_state is not base and record.version < self.stored:
            return  # a newer record was adopted while this one was on its way: old news
        self.absorb(record)

    def _discard(self, count: int, *, counted: bool = True) -> None:
        """Remove the oldest ``count`` outcomes of the batch (``counted``: as dropped)."""
        if count <= 0:
            return
        del self.batch[:count]  # in place: the breaker's guards append to this very list
        if counted:
            self.dropped += count
        marks = self.marks
        if marks:
            self.marks = [(n - count, t) for n, t in marks if n > count]

    def _mark(self, now: float) -> None:
        """Remember how many outcomes the batch holds now (storage is down)."""
        if self.horizon == math.inf:
            return
        size = len(self.batch)
        marks = self.marks
        if size and (not marks or marks[-1][0] != size):
            marks.append((size, now))
            if len(marks) > 64:
                del marks[1::2]  # coarser, never wrong: a mark only ever drops what it covers

    def _expire(self, now: float) -> None:
        """Drop what storage was down for longer than the longest time window."""
        oldest = now - self.horizon
        before = self.dropped
        pending = self.pending
        if pending is not None and pending[3] < oldest:
            self.pending = None
            self.dropped += len(pending[1])
        marks = self.marks
        if marks and marks[0][1] < oldest:
            covered = 0
            for n, t in marks:
                if t >= oldest:
                    break
                covered = n
            self._discard(covered)
        if self.dropped != before:
            logger.warning(
                "breaker %r: dropped %d outcomes counted longer ago than the window (%.0fs)",
                self.breaker.name,
                self.dropped - before,
                self.horizon,
                extra={"breaker": self.breaker.name, "dropped": self.dropped - before},
            )

    def unwritten(self) -> bool:
        """Has the core decided a transition here that is not stored yet?"""
        return self.breaker._state.version != self.synced_state.version

    def _stored_version(self, local: int) -> int:
        """The fleet version a local transition decided since the last exchange gets."""
        return self.stored + local - self.synced_state.version

    async def _propose(self) -> None:
        breaker = self.breaker
        state = breaker.snapshot
        base = self.synced_state
        expected = self.stored
        force = self.force
        now = breaker._clock()
        reason = self.proposed[-1].reason if self.proposed else Reason.RESET
        opened_ago = None if state.opened_at is None else max(0.0, now - state.opened_at)
        open_for = None
        if state.status is State.OPEN and state.retry_at is not None:
            open_for = state.retry_at - now
        version = self._stored_version(state.version)
        if version <= expected:  # only when forced with nothing decided: re-seed
            version = expected + 1
        proposal = Proposal(
            state.status, version, state.trips, reason, opened_ago, open_for, self.origin
        )
        # An earlier attempt at this very write may have landed with its answer lost (a
        # timeout, a cancelled runner): then the stored record is ours, not a rival's.
        retry = self.uncertain == version
        controls = self.controls
        try:
            won, record = await self.storage.propose(
                breaker.name, expected, proposal, force=force and not retry
            )
            if force and retry and not won and not self._ours(record, expected, state.status):
                won, record = await self.storage.propose(
                    breaker.name, expected, proposal, force=True
                )
        except CorruptRecordError:
            raise  # an answer came (a record not to trust): the forced retry replaces it
        except BaseException:
            self.uncertain = version
            raise
        self.uncertain = None
        if self.synced_state is not base:
            return  # a newer record was adopted while this one was on its way
        # An operator's control made meanwhile must still be written (forced): never
        # let this answer replace it.
        controlled = self.controls != controls
        if not controlled:
            self.force = False
        if not won and self._ours(record, expected, state.status):
            won = True
        if not won:
            if controlled:
                return
            if record.missing or record.version < expected:
                self.force = True  # the storage lost the record: write ours back
                return
            self.adopt(record, won=False)
            return
        if record.version != version and not controlled:  # forced past a newer version
            self.adopt(record, won=True)
            return
        written = [t for t in self.proposed if t.version <= state.version]
        self.proposed = [t for t in self.proposed if t.version > state.version]
        shift = record.version - version  # a forced write may land above its proposal
        announced = [replace(t, version=self._stored_version(t.version) + shift) for t in written]
        self.stored = record.version
        self.synced_state = state
        self.refresh_due = breaker._clock() + self.storage.refresh_interval
        breaker._announce(announced)

    def _ours(self, record: SharedRecord, expected: int, status: State) -> bool:
        """Is ``record`` a write of this breaker made after ``expected``?"""
        return (
            not record.missing
            and record.origin == self.origin
            and record.version > expected
            and record.status is status
        )

    # ------------------------------------------------------------------ records in

    def absorb(self, record: SharedRecord) -> None:
        """Take a record read back by a flush or a refresh."""
        breaker = self.breaker
        if record.missing or record.version < self.stored:
            if self.stored > 0 or breaker._state.version > 0:
                self.force = True  # the storage lost it (expired, restarted): write ours back
            return
        if record.version > self.stored:
            self.adopt(record, won=False)
            return
        if self.unwritten():
            return  # our own transition is on its way: these counts are of the old generation
        policy = breaker.policy
        now = breaker._clock()
        # The fleet's counts, plus what this process counted since the flush left (still
        # in the batch): the local view never goes back.
        consecutive = record.consecutive_failures
        calls = failures = slow = 0
        local = self.synced_state.version
        unflushed: list[str] = []
        if self.pending is not None and self.pending[0] == local:
            unflushed.extend(self.pending[1])
        if self.batch_version == local:
            unflushed.extend(self.batch)
        if unflushed:
            for letter in unflushed:
                calls += 1
                if letter in "fF":
                    failures += 1
                    consecutive += 1
                else:
                    consecutive = 0
                if letter in "SF":
                    slow += 1
        failure_window = EMPTY_WINDOW
        if policy.failures is not None:
            buckets = _plus(record.failure_buckets, (failures, failures, 0))
            failure_window = _window(buckets, int(now // policy.within_width))
        rate_window = EMPTY_WINDOW
        if policy.counts_rates:
            head = record.rate_head if policy.rate_bucket_calls else int(now // policy.rate_width)
            rate_window = _window(_plus(record.rate_buckets, (calls, failures, slow)), head)
        draw = breaker._random() if breaker._jitter else 0.5
        event = Synced(
            breaker._state.version,
            consecutive,
            record.half_open_successes,
            failure_window,
            rate_window,
            now,
            draw,
        )
        try:
            _, announced = breaker._step(event)
        except InvalidEvent as error:
            raise StorageError(f"shared counts rejected by the core: {error}") from None
        if announced:
            breaker._announce(announced)

    def observe(self, record: SharedRecord) -> None:
        """A transition published by some process (possibly this one)."""
        if record.origin == self.origin or record.version <= self.stored:
            return
        try:
            self.adopt(record, won=False)
        except StorageError as error:
            logger.warning("breaker %r: %s", self.breaker.name, error)

    def missed(self) -> None:
        """Published transitions may have been missed (the listener reconnected): refresh."""
        self.gaps += 1
        self.refresh_due = -math.inf
        self.breaker._wake_runner()

    def adopt(self, record: SharedRecord, *, won: bool) -> None:
        """Replace the local state by the stored one: a new local generation."""
        breaker = self.breaker
        now = breaker._clock()
        current = breaker._state
        base = self.synced_state._replace(next_probe=current.next_probe)
        opened_at = None if record.opened_ago is None else now - record.opened_ago
        retry_at = None if record.retry_in is None else now + record.retry_in
        # A local version above every permit issued here, whatever the fleet's number is.
        local = max(current.version, base.version) + 1
        event = RemoteObserved(record.status, local, opened_at, retry_at, record.trips, now)
        try:
            result = step(breaker.policy, base, event)
        except InvalidEvent as error:
            raise StorageError(f"stored record rejected by the core: {error}") from None
        new = result.state
        self.stale += len(self.batch)
        self.batch.clear()
        self.marks.clear()  # (a pending flush of the old generation counts itself stale)
        self.tokens.clear()
        self.reserved = None
        self.proposed.clear()
        self.force = False
        self.stored = record.version
        self.synced_state = new
        breaker._install(new)
        breaker._wake_runner()
        reason = record.reason or Reason.REMOTE
        breaker._announce(
            [Transition(breaker.name, base.status, new.status, reason, record.version, now, won)]
        )

    # ------------------------------------------------------------------ half-open permits

    def claim(self, generation: int, probe: int) -> bool:
        """A sync guard's half-open probe: use the permit the runner reserved, if any.

        Without one the guard is rejected and the runner is asked to reserve a permit
        for the next caller (a sync guard cannot wait for a round trip). With storage
        unreachable the local permit stands.
        """
        reserved = self.reserved
        if (
            reserved is not None
            and reserved[0] == generation == self.synced_state.version
            and self.breaker._clock() < reserved[2]
        ):
            self.reserved = None
            self.tokens[probe] = reserved[1]
            return True
        if self.degraded:
            return True
        self.want_permit = True
        self.breaker._wake_runner()
        return False

    async def _reserve(self) -> None:
        breaker = self.breaker
        state = breaker._state
        if self.reserved is not None or state.status is not State.HALF_OPEN or self.unwritten():
            return
        token = uuid.uuid4().hex
        policy = breaker.policy
        asked = breaker._clock()
        won, record = await self.storage.acquire_probe(
            breaker.name, self.stored, policy.half_open_probes, policy.probe_lease, token
        )
        if won:  # its lease started on the server between `asked` and now
            self.reserved = (state.version, token, asked + policy.probe_lease * 0.9)
        elif record.version > self.stored:
            self.adopt(record, won=False)

    async def take_probe(self, generation: int, probe: int) -> bool:
        """Take the fleet's permit for a local half-open probe; False: the fleet has none."""
        breaker = self.breaker
        if generation != self.synced_state.version:
            await self.service()  # our half-open transition is not stored yet: write it
            if generation != self.synced_state.version or breaker._state.version != generation:
                # Still not stored: with storage down the local permit stands; otherwise
                # the circuit has moved on and this permit is void.
                return (
                    self.degraded
                    and breaker._state.version == generation
                    and breaker._override != "reject"
                )
        token = uuid.uuid4().hex
        policy = breaker.policy
        try:
            won, record = await self.storage.acquire_probe(
                breaker.name, self.stored, policy.half_open_probes, policy.probe_lease, token
            )
        except StorageError as error:
            if isinstance(error, CorruptRecordError):
                self._corrupt(error)
            self._failed(error)
            # Storage unreachable: the local permit stands, unless the mode rejects.
            return breaker._override != "reject"
        if won:
            self.tokens[probe] = token
            return True
        if record.version > self.stored:
            try:
                self.adopt(record, won=False)
            except StorageError as error:
                self._failed(error)
        return False
