"""Keyed breakers (one per host, per tenant) made from one template, with bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NoReturn

import anyio
import anyio.abc

from ._base import _finite, check_template_options
from ._core.errors import ConfigError
from ._core.status import State
from .breaker import Breaker
from .callbacks import check_function, logger, with_observer, without_observer
from .introspection import Report, report

__all__ = ["BreakerRegistry"]


class BreakerRegistry:
    """Makes and keeps one :class:`Breaker` per key, from the same options.

    ``registry.get("api.example.com")`` returns that key's breaker, creating it on first use
    (named ``f"{prefix}{key}"``). At most ``max_size`` breakers are kept: making one more
    drops the least recently used CLOSED breaker, or, when none of the others is CLOSED, the
    least recently used one of any state. With ``idle_after``, making a new breaker first
    drops those unused for that many seconds that are CLOSED with no failures pending.
    A storage given in the template keeps the states of dropped breakers.

    When :meth:`run` is running in a task group, every breaker the registry makes gets its
    runner there, and a dropped breaker's runner is stopped.
    """

    def __init__(
        self,
        prefix: str = "",
        *,
        max_size: int = 1024,
        idle_after: float | None = None,
        clock: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigError("prefix", prefix, "must be a string")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ConfigError("max_size", max_size, "must be an integer >= 1")
        if idle_after is not None and (
            isinstance(idle_after, bool)
            or not isinstance(idle_after, (int, float))
            or not (_finite(idle_after) and idle_after > 0.0)
        ):
            raise ConfigError("idle_after", idle_after, "must be a finite number of seconds > 0")
        check_template_options(options, name_is="is made of prefix + key")
        self.prefix = prefix
        self.max_size = max_size
        self.idle_after = idle_after
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._options = dict(options, clock=self._clock)
        Breaker(prefix + "<template>", **self._options)  # validate the template once, now
        self._breakers: OrderedDict[str, tuple[Breaker, float]] = OrderedDict()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._creation_observers: tuple[Callable[[Breaker], object], ...] = ()

    def get(self, key: str) -> Breaker:
        """The breaker for ``key``, created from the template on first use."""
        if not isinstance(key, str):
            raise ConfigError("key", key, "must be a string")
        now = self._clock()
        entry = self._breakers.get(key)
        if entry is not None:
            self._breakers[key] = (entry[0], now)
            self._breakers.move_to_end(key)
            return entry[0]
        self._drop_idle(now)
        breaker = Breaker(self.prefix + key, **self._options)
        self._breakers[key] = (breaker, now)
        if len(self._breakers) > self.max_size:
            self._drop_one(keep=key)
        if self._task_group is not None:
            self._task_group.start_soon(self._run_one, key, breaker)
        for observer in self._creation_observers:
            try:
                observer(breaker)
            except Exception:
                logger.exception(
                    "registry %r: creation observer %r raised; the breaker was made anyway",
                    self.prefix,
                    observer,
                    extra={"breaker": breaker.name, "callback": "creation_observer"},
                )
        return breaker

    def breakers(self) -> list[Breaker]:
        """The breakers held now, least recently used first (their use is not recorded)."""
        return [breaker for breaker, _ in list(self._breakers.values())]

    def report(self, *, events: int = 10) -> Report:
        """A :class:`~breaker_machines.Report` over the breakers held now: counts by state,
        each one's stats and last ``events`` logged events (``report().summary()`` reads
        well)."""
        return report(self.breakers(), events=events)

    def add_creation_observer(self, observer: Callable[[Breaker], object]) -> None:
        """Call ``observer(breaker)`` with every breaker this registry makes from now on.

        It is called synchronously by :meth:`get`, after the breaker is made and before it
        is returned (for example to attach a call observer, as
        :func:`breaker_machines.otel.instrument` does). An exception from it is logged,
        never raised. Breakers made earlier are in :meth:`breakers`.
        """
        check_function("observer", observer, arguments=1, what="a function of the new breaker")
        self._creation_observers = with_observer(self._creation_observers, observer, "registry")

    def remove_creation_observer(self, observer: Callable[[Breaker], object]) -> None:
        """Stop calling ``observer`` (added by :meth:`add_creation_observer`)."""
        self._creation_observers = without_observer(self._creation_observers, observer, "registry")

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def keys(self) -> list[str]:
        """The keys held now, least recently used first."""
        return list(self._breakers)

    def _drop_idle(self, now: float) -> None:
        if self.idle_after is None:
            return
        for key, (breaker, used) in list(self._breakers.items()):
            if now - used < self.idle_after:
                break  # ordered by last use: the rest are fresher
            if breaker.state is State.CLOSED and not breaker.snapshot.consecutive_failures:
                self._forget(key)

    def _drop_one(self, keep: str) -> None:
        """Drop the least recently used CLOSED breaker, else the least recently used one."""
        candidates = [key for key in self._breakers if key != keep]
        for key in candidates:
            if self._breakers[key][0].state is State.CLOSED:
                self._forget(key)
                return
        self._forget(candidates[0])

    def _forget(self, key: str) -> None:
        del self._breakers[key]
        scope = self._scopes.pop(key, None)
        if scope is not None:
            scope.cancel()

    async def _run_one(self, key: str, breaker: Breaker) -> None:
        with anyio.CancelScope() as scope:
            self._scopes[key] = scope
            try:
                await breaker.run()
            finally:
                if self._scopes.get(key) is scope:
                    del self._scopes[key]

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run the runners of every breaker this registry holds or makes, until cancelled."""
        if self._task_group is not None:
            raise RuntimeError("this registry is already running")
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                for key, (breaker, _) in self._breakers.items():
                    tg.start_soon(self._run_one, key, breaker)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._task_group = None
        raise AssertionError("unreachable")  # pragma: no cover
