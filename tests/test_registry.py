"""Keyed breakers from one template, with bounded memory."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from breaker_machines import BreakerRegistry, CircuitOpenError, ConfigError, State


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


@pytest.mark.anyio
async def test_one_breaker_per_key_from_the_template(clock: Any) -> None:
    registry = BreakerRegistry("host:", consecutive_failures=1, clock=clock)
    a = registry.get("a.example")
    assert registry.get("a.example") is a
    assert a.name == "host:a.example"
    with pytest.raises(Boom):
        await a.call(fail)
    assert a.state is State.OPEN
    assert registry.get("b.example").state is State.CLOSED
    with pytest.raises(CircuitOpenError):
        await registry.get("a.example").call(fail)


def test_lru_bound_prefers_dropping_closed_breakers(clock: Any) -> None:
    registry = BreakerRegistry(max_size=2, consecutive_failures=1, clock=clock)
    first = registry.get("first")
    first.force_open()
    registry.get("second")
    registry.get("third")  # over the bound: "second" (closed) goes, "first" (open) stays
    assert registry.keys() == ["first", "third"]
    assert registry.get("first") is first
    assert len(registry) == 2


def test_when_every_breaker_is_open_the_least_recently_used_goes(clock: Any) -> None:
    registry = BreakerRegistry(max_size=1, consecutive_failures=1, clock=clock)
    registry.get("a").force_open()
    registry.get("b")
    assert "a" not in registry
    assert "b" in registry


def test_idle_breakers_expire(clock: Any) -> None:
    registry = BreakerRegistry(idle_after=60, clock=clock)
    registry.get("quiet")
    registry.get("held").force_open()
    clock.advance(61)
    registry.get("new")
    assert registry.keys() == ["held", "new"]


def test_template_errors_surface_at_construction() -> None:
    with pytest.raises(ConfigError) as caught:
        BreakerRegistry(failure_rate=3)
    assert caught.value.field == "failure_rate"
    with pytest.raises(ConfigError):
        BreakerRegistry(max_size=0)
    with pytest.raises(ConfigError):
        BreakerRegistry(idle_after=-1)


@pytest.mark.anyio
async def test_run_gives_every_breaker_a_runner_and_stops_dropped_ones() -> None:
    opened = anyio.Event()

    async def on_open() -> None:
        opened.set()

    registry = BreakerRegistry(max_size=1, consecutive_failures=1, on_open=on_open)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        breaker = registry.get("a")
        with pytest.raises(Boom):
            await breaker.call(fail)
        with anyio.fail_after(5):
            await opened.wait()
        registry.get("b")  # "a" is open and "b" closed: but max_size=1 drops the LRU
        tg.cancel_scope.cancel()


def test_creation_observers_see_each_new_breaker_once(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = BreakerRegistry("host:", clock=clock)
    early = registry.get("a")
    seen: list[str] = []

    def broken(breaker: Any) -> None:
        raise RuntimeError("observer bug")

    registry.add_creation_observer(lambda breaker: seen.append(breaker.name))
    registry.add_creation_observer(broken)
    late = registry.get("b")
    assert registry.get("b") is late  # not made again: not observed again
    assert seen == ["host:b"]
    assert [r.callback for r in caplog.records] == ["creation_observer"]  # type: ignore[attr-defined]
    assert registry.breakers() == [early, late]

    registry.remove_creation_observer(broken)
    with pytest.raises(ConfigError, match=r"observer.*is not observing this registry"):
        registry.remove_creation_observer(broken)
    registry.add_creation_observer(broken)
    with pytest.raises(ConfigError, match=r"observer.*is already observing this registry"):
        registry.add_creation_observer(broken)
    with pytest.raises(ConfigError, match="observer"):
        registry.add_creation_observer("not a function")  # type: ignore[arg-type]
