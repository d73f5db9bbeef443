"""The embedded default storage: breaker states in this process's memory."""

from __future__ import annotations

from .._core.records import BreakerState

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Keeps the last persisted state of each breaker, by name, in this process.

    A breaker with memory storage decides everything from its own in-memory state, so it
    needs no runner and does no I/O. The storage only remembers what each breaker last
    persisted: a breaker built later with the same name and the same storage starts from
    that state (a restart within the process, or a snapshot handed over), and
    :meth:`names` lists the breakers it has seen.
    """

    __slots__ = ("_states",)

    #: A memory storage is never shared between processes.
    shared = False

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}

    def get(self, name: str) -> BreakerState | None:
        """The state ``name`` last persisted, or None."""
        return self._states.get(name)

    def put(self, name: str, state: BreakerState) -> None:
        """Record ``state`` as the current state of ``name``."""
        self._states[name] = state

    def delete(self, name: str) -> None:
        """Forget ``name`` (nothing happens if it is unknown)."""
        self._states.pop(name, None)

    def names(self) -> list[str]:
        """The names of every breaker this storage holds, sorted."""
        return sorted(self._states)
