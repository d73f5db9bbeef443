"""Groups: named sets of breakers with shared defaults, cascades and coordinated recovery."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
import anyio.abc

from ._base import check_template_options
from ._core.errors import ConfigError
from ._core.relations import Relations, cascade_targets, check_relations, is_held
from ._core.status import State
from .breaker import Breaker
from .callbacks import Transition, handlers
from .introspection import Report, report

__all__ = ["BreakerGroup", "Cascade"]

_NAMED = "is made of the group's and the member's names"
_RELATION_FIELDS = ("depends_on", "cascades_to")
_REJECTING = (State.OPEN, State.FORCED_OPEN)


@dataclass(frozen=True, slots=True)
class Cascade:
    """Passed to a group's ``on_cascade``: ``source`` opened and force-opened ``targets``.

    ``source`` and ``targets`` are member names (not breaker names); ``transition`` is the
    source's own transition. Fired once per fleet: only by the process that decided the
    source's transition (``transition.won``).
    """

    group: str
    source: str
    targets: tuple[str, ...]
    transition: Transition


class BreakerGroup:
    """A named set of breakers made from shared defaults, with relations between them.

    ``BreakerGroup("checkout", members, **defaults)``: each member is a :class:`Breaker`
    named ``f"{group}.{member}"``, made from ``defaults`` updated with its own options.
    ``members`` maps member names to their options, which may also hold two relations
    (member names, see :mod:`breaker_machines._core.relations`):

    * ``depends_on=[...]``: **coordinated recovery**. The member moves from OPEN to
      HALF_OPEN, and from HALF_OPEN to CLOSED, only while every member it depends on is
      CLOSED or DISABLED; until then it keeps rejecting (``retry_after`` None).
    * ``cascades_to=[...]``: **cascading**. When the member opens, the members it
      cascades to (transitively) are force-opened and ``on_cascade`` is called with a
      :class:`Cascade`; when it closes again, those it forced (and nobody changed since)
      are reset.

    Both hold across processes when the defaults give a shared storage: a forced member
    is stored as FORCED_OPEN like any ``force_open()``, and a dependency's state is the
    fleet's. :meth:`add` adds a member later (its relations may only name members that
    exist). Start the runners with :meth:`run` in a task group (``await tg.start(group.run)``).
    """

    def __init__(
        self,
        name: str,
        members: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        on_cascade: Any = None,
        **defaults: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", name, "must be a non-empty string")
        check_template_options(defaults, name_is=_NAMED)
        self.name = name
        self._defaults = dict(defaults)
        self._on_cascade = handlers("on_cascade", on_cascade)
        self._breakers: dict[str, Breaker] = {}
        self._relations = Relations()
        self._depends_on: dict[str, object] = {}
        self._cascades_to: dict[str, object] = {}
        #: Members forced open by a cascade: member -> (source, version it was forced at).
        self._forced: dict[str, tuple[str, int]] = {}
        self._cascading = False
        if members is None:
            members = {}
        if not isinstance(members, Mapping):
            raise ConfigError("members", members, "must map member names to their options")
        specs: dict[str, dict[str, Any]] = {}
        for member, options in members.items():
            self._check_member_name(member)
            if not isinstance(options, Mapping):
                raise ConfigError(member, options, "must be a mapping of Breaker options")
            specs[member] = dict(options)
        for member, options in specs.items():
            self._depends_on[member] = options.pop("depends_on", ())
            self._cascades_to[member] = options.pop("cascades_to", ())
        relations = check_relations(specs, self._depends_on, self._cascades_to)
        for member, options in specs.items():
            self._breakers[member] = self._make(member, options)
        self._install(relations)
        self._task_group: anyio.abc.TaskGroup | None = None

    # ------------------------------------------------------------------ members

    def _check_member_name(self, member: object) -> None:
        if not isinstance(member, str) or not member:
            raise ConfigError("members", member, "a member name must be a non-empty string")
        if member in self._breakers:
            raise ConfigError("name", member, f"is already a member of group {self.name!r}")

    def _make(self, member: str, options: Mapping[str, Any]) -> Breaker:
        check_template_options(dict(options), name_is=_NAMED)
        return Breaker(f"{self.name}.{member}", **{**self._defaults, **options})

    def add(
        self,
        member: str,
        *,
        depends_on: tuple[str, ...] | list[str] = (),
        cascades_to: tuple[str, ...] | list[str] = (),
        **options: Any,
    ) -> Breaker:
        """Add a member made from the defaults and ``options``; return its breaker.

        ``depends_on`` and ``cascades_to`` may only name members already in the group. A
        member added while :meth:`run` is running gets its runner at once.
        """
        self._check_member_name(member)
        names = [*self._breakers, member]
        depends = {**self._depends_on, member: depends_on}
        cascades = {**self._cascades_to, member: cascades_to}
        relations = check_relations(names, depends, cascades)
        breaker = self._make(member, options)
        self._breakers[member] = breaker
        self._depends_on, self._cascades_to = depends, cascades
        self._install(relations)
        if self._task_group is not None:
            self._task_group.start_soon(_run_member, breaker)
        return breaker

    def _install(self, relations: Relations) -> None:
        """Wire every member to the relations: gates, and the transition hook."""
        self._relations = relations
        for member, breaker in self._breakers.items():
            deps = tuple(self._breakers[d] for d in relations.depends_on.get(member, ()))
            breaker._gate = self._gate(member, deps) if deps else None
            breaker._transition_hooks = (self._hook(member),)

    def _gate(self, member: str, deps: tuple[Breaker, ...]) -> Any:
        relations = self._relations
        names = relations.depends_on[member]

        def gate() -> bool:
            states = {n: b.state for n, b in zip(names, deps, strict=True)}
            return is_held(relations, member, states)

        return gate

    def _hook(self, member: str) -> Any:
        def hook(transition: Transition) -> None:
            self._member_moved(member, transition)

        return hook

    def _member_moved(self, member: str, transition: Transition) -> None:
        relations = self._relations
        target = transition.target
        if (
            target in _REJECTING
            and transition.won
            and member in relations.cascades_to
            and not self._cascading  # the walk already reaches what this one cascades to
        ):
            self._cascade(member, transition)
        elif target is State.CLOSED and transition.won:
            self._release(member)
        # Whatever it did, the members depending on it may recover now (or not).
        for dependent in relations.dependents_of(member):
            self._breakers[dependent]._rearm()

    def _cascade(self, source: str, transition: Transition) -> None:
        targets: list[str] = []
        self._cascading = True
        try:
            for name in cascade_targets(self._relations, source):
                breaker = self._breakers[name]
                if breaker.state is State.FORCED_OPEN:
                    continue  # held open already (by an operator or an earlier cascade)
                breaker.force_open()
                self._forced[name] = (source, breaker.snapshot.version)
                targets.append(name)
        finally:
            self._cascading = False
        if self._on_cascade:
            event = Cascade(self.name, source, tuple(targets), transition)
            self._breakers[source]._fire(self._on_cascade, event)

    def _release(self, source: str) -> None:
        for name, (forced_by, version) in list(self._forced.items()):
            if forced_by != source:
                continue
            del self._forced[name]
            breaker = self._breakers[name]
            if breaker.state is State.FORCED_OPEN and breaker.snapshot.version == version:
                breaker.reset()

    # ------------------------------------------------------------------ access

    def __getitem__(self, member: str) -> Breaker:
        """The member's breaker (``KeyError`` if there is none)."""
        return self._breakers[member]

    def __iter__(self) -> Iterator[str]:
        """The member names, in the order they were added."""
        return iter(list(self._breakers))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, member: object) -> bool:
        return member in self._breakers

    def breakers(self) -> list[Breaker]:
        """The members' breakers, in the order they were added."""
        return list(self._breakers.values())

    @property
    def relations(self) -> Relations:
        """The validated relation graph (member names)."""
        return self._relations

    # ------------------------------------------------------------------ the group at once

    def status(self) -> dict[str, State]:
        """Each member's state, by member name."""
        return {member: breaker.state for member, breaker in self._breakers.items()}

    def all_healthy(self) -> bool:
        """True when every member is CLOSED or DISABLED (admitting calls normally)."""
        return all(
            breaker.state in (State.CLOSED, State.DISABLED) for breaker in self._breakers.values()
        )

    def any_open(self) -> bool:
        """True when some member is OPEN or FORCED_OPEN (rejecting calls)."""
        return any(breaker.state in _REJECTING for breaker in self._breakers.values())

    def reset_all(self) -> None:
        """Reset every member to a fresh CLOSED circuit (as ``breaker.reset()``)."""
        self._forced.clear()
        for breaker in self._breakers.values():
            breaker.reset()

    def trip_all(self) -> None:
        """Force every member open (as ``breaker.force_open()``) until reset or closed."""
        for breaker in self._breakers.values():
            breaker.force_open()

    def report(self, *, events: int = 10) -> Report:
        """A :class:`~breaker_machines.Report` over the members (see ``Report.summary()``)."""
        return report(self._breakers.values(), events=events)

    # ------------------------------------------------------------------ runners

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run every member's runner (and those of members added later) until cancelled.

        Start it in your task group: ``await tg.start(group.run)``.
        """
        if self._task_group is not None:
            raise RuntimeError(f"group {self.name!r} is already running")
        try:
            async with anyio.create_task_group() as tg:
                for breaker in self._breakers.values():
                    await tg.start(breaker.run)
                self._task_group = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._task_group = None
        raise AssertionError("unreachable: the group runs until cancelled")

    def __repr__(self) -> str:
        return f"<BreakerGroup {self.name!r} {len(self._breakers)} members>"


async def _run_member(breaker: Breaker) -> None:
    await breaker.run()
