"""Relations between circuits, as data: cascades and coordinated recovery.

Two relations join the circuits of a group (``BreakerGroup``), both pure data checked here
with no runtime, clock or storage involved:

* **depends_on**: ``a`` depends on ``b`` when ``a`` cannot work while ``b`` is down. ``a``
  may then recover (OPEN -> HALF_OPEN, and HALF_OPEN -> CLOSED) only while every circuit
  it depends on *allows recovery* (:func:`allows_recovery`). The runtime asks
  :func:`is_held` and passes the answer to the transition function as the ``held`` field
  of ``CallRequested``, ``CallFinished`` and ``Tick``; ``step()`` does the rest.
* **cascades_to**: when ``a`` opens, the circuits it cascades to are force-opened too
  (:func:`cascade_targets`, transitively), and released when ``a`` closes again.

The relation graph is validated once (:func:`check_relations`): names are known, nothing
relates to itself, and ``depends_on`` has no cycle (a cycle would hold its members open
for ever). Cascades may form cycles: a circuit already forced open stops the walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, cast

from .errors import ConfigError
from .status import State

__all__ = [
    "RECOVERY_ALLOWED",
    "Relations",
    "allows_recovery",
    "cascade_targets",
    "check_relations",
    "is_held",
]

#: The states in which a circuit lets the circuits depending on it recover: it admits
#: calls normally. (HALF_OPEN is still probing: its dependents wait for the verdict.)
RECOVERY_ALLOWED: Final = frozenset({State.CLOSED, State.DISABLED})


def allows_recovery(status: State) -> bool:
    """Whether a circuit in ``status`` lets the circuits depending on it recover."""
    return status in RECOVERY_ALLOWED


def _no_relations() -> dict[str, tuple[str, ...]]:
    return {}


@dataclass(frozen=True, slots=True)
class Relations:
    """The relation graph of a group: ``depends_on[a]`` and ``cascades_to[a]`` name
    other circuits of the group (each a tuple, in declaration order)."""

    depends_on: Mapping[str, tuple[str, ...]] = field(default_factory=_no_relations)
    cascades_to: Mapping[str, tuple[str, ...]] = field(default_factory=_no_relations)

    def dependents_of(self, name: str) -> tuple[str, ...]:
        """The circuits that depend on ``name`` (directly), in declaration order."""
        return tuple(a for a, deps in self.depends_on.items() if name in deps)


def _names(field_name: str, owner: str, value: object, known: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ConfigError(field_name, value, "must be a list or tuple of breaker names")
    names: tuple[object, ...] = tuple(cast(Iterable[object], value))
    known = set(known)
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(field_name, name, "must be a breaker name (a string)")
        if name == owner:
            raise ConfigError(field_name, name, f"{owner!r} cannot relate to itself")
        if name not in known:
            raise ConfigError(field_name, name, "is not a breaker of this group")
        if name in seen:
            raise ConfigError(field_name, name, "is named twice")
        seen.add(name)
    return tuple(name for name in names if isinstance(name, str))


def check_relations(
    names: Iterable[str],
    depends_on: Mapping[str, object],
    cascades_to: Mapping[str, object],
) -> Relations:
    """Validate a relation graph over ``names``; raise :class:`ConfigError` naming the
    field (``depends_on`` or ``cascades_to``) and the offending value."""
    known = tuple(names)
    deps = {a: _names("depends_on", a, v, known) for a, v in depends_on.items()}
    cascades = {a: _names("cascades_to", a, v, known) for a, v in cascades_to.items()}
    for owner in (*deps, *cascades):
        if owner not in known:
            raise ConfigError("name", owner, "is not a breaker of this group")
    # depends_on must be acyclic: depth-first search. A name is entered once; finished
    # names are checked first, so reaching an entered, unfinished one is a cycle.
    entered: set[str] = set()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in entered:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigError("depends_on", cycle, "is a cycle: its members could never recover")
        entered.add(name)
        for dep in deps.get(name, ()):
            visit(dep, (*path, name))
        done.add(name)

    for name in deps:
        visit(name, ())
    return Relations({a: d for a, d in deps.items() if d}, {a: c for a, c in cascades.items() if c})


def is_held(relations: Relations, name: str, states: Mapping[str, State]) -> bool:
    """Whether ``name`` must not recover now: some circuit it depends on does not allow
    it (:func:`allows_recovery`). A dependency missing from ``states`` holds it too."""
    for dep in relations.depends_on.get(name, ()):
        status = states.get(dep)
        if status is None or status not in RECOVERY_ALLOWED:
            return True
    return False


def cascade_targets(relations: Relations, name: str) -> tuple[str, ...]:
    """Every circuit an opening of ``name`` reaches through ``cascades_to``, transitively,
    breadth first, each once, never ``name`` itself."""
    order: list[str] = []
    seen = {name}
    frontier = [name]
    while frontier:
        following: list[str] = []
        for source in frontier:
            for target in relations.cascades_to.get(source, ()):
                if target not in seen:
                    seen.add(target)
                    order.append(target)
                    following.append(target)
        frontier = following
    return tuple(order)
