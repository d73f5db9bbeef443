"""BreakerGroup: shared defaults, coordinated recovery (depends_on), cascades (cascades_to)."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest
from tests.conftest import FakeClock
from tests.helpers import succeed, trip

from breaker_machines import (
    BreakerGroup,
    Cascade,
    CircuitOpenError,
    ConfigError,
    Reason,
    State,
)

pytestmark = pytest.mark.anyio


def make(clock: FakeClock, **options: object) -> BreakerGroup:
    members = {
        "db": {},
        "api": {"depends_on": ["db"]},
        "search": {},
        "edge": {"cascades_to": ["search"]},
    }
    defaults = {"consecutive_failures": 2, "reset_after": 10.0, "clock": clock, **options}
    return BreakerGroup("shop", members, **defaults)


# --------------------------------------------------------------------------- the group


async def test_members_share_the_defaults_and_are_named_after_the_group(clock: FakeClock) -> None:
    group = BreakerGroup(
        "shop", {"db": {"reset_after": 3.0}, "api": {}}, consecutive_failures=2, clock=clock
    )
    assert list(group) == ["db", "api"]
    assert len(group) == 2
    assert "db" in group
    assert "nope" not in group
    assert group["db"].name == "shop.db"
    assert group["db"].policy.reset_after == 3.0  # the member's own option wins
    assert group["api"].policy.reset_after == 30.0
    assert group["api"].policy.consecutive_failures == 2  # the group's default
    assert group.breakers() == [group["db"], group["api"]]
    with pytest.raises(KeyError):
        group["nope"]


async def test_status_all_healthy_any_open_reset_all_trip_all(clock: FakeClock) -> None:
    group = make(clock)
    assert group.all_healthy()
    assert not group.any_open()
    await trip(group["db"])
    assert group.status() == {
        "db": State.OPEN,
        "api": State.CLOSED,
        "search": State.CLOSED,
        "edge": State.CLOSED,
    }
    assert not group.all_healthy()
    assert group.any_open()
    group.reset_all()
    assert group.all_healthy()
    group.trip_all()
    assert set(group.status().values()) == {State.FORCED_OPEN}
    with pytest.raises(CircuitOpenError):
        await group["api"].call(succeed)
    group.reset_all()
    assert set(group.status().values()) == {State.CLOSED}


async def test_a_half_open_member_is_neither_healthy_nor_open(clock: FakeClock) -> None:
    group = BreakerGroup("g", {"a": {}}, consecutive_failures=1, reset_after=1.0, clock=clock)
    await trip(group["a"])
    clock.advance(1.0)
    group["a"]._tick()
    assert group["a"].state is State.HALF_OPEN
    assert not group.all_healthy()
    assert not group.any_open()


async def test_add_wires_relations_to_existing_members(clock: FakeClock) -> None:
    group = BreakerGroup("g", consecutive_failures=1, reset_after=5.0, clock=clock)
    db = group.add("db")
    api = group.add("api", depends_on=["db"])
    edge = group.add("edge", cascades_to=["api", "db"])
    assert group.relations.depends_on == {"api": ("db",)}
    assert group.relations.cascades_to == {"edge": ("api", "db")}
    await trip(edge)
    assert (db.state, api.state) == (State.FORCED_OPEN, State.FORCED_OPEN)


@pytest.mark.parametrize(
    ("members", "field", "value"),
    [
        ({"a": {"depends_on": ["b"]}}, "depends_on", "b"),
        ({"a": {"depends_on": ["a"]}}, "depends_on", "a"),
        ({"a": {"cascades_to": "b"}, "b": {}}, "cascades_to", "b"),
        ({"a": {"cascades_to": ["b", "b"]}, "b": {}}, "cascades_to", "b"),
        ({"a": {"cascades_to": [1]}}, "cascades_to", 1),
        (
            {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["c"]}, "c": {"depends_on": ["a"]}},
            "depends_on",
            "a -> b -> c -> a",
        ),
        ({"a": {"failurs": 3}}, "failurs", 3),
        ({"a": ["not", "options"]}, "a", ["not", "options"]),
        ({"": {}}, "members", ""),
    ],
)
async def test_bad_members_are_refused_naming_the_field(
    members: dict[str, object], field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as caught:
        BreakerGroup("g", members)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.value == value


async def test_bad_groups_are_refused() -> None:
    with pytest.raises(ConfigError, match="name"):
        BreakerGroup("")
    with pytest.raises(ConfigError) as caught:
        BreakerGroup("g", reset_afte=1.0)
    assert caught.value.field == "reset_afte"
    with pytest.raises(ConfigError) as caught:
        BreakerGroup("g", ["a"])  # type: ignore[arg-type]
    assert caught.value.field == "members"
    group = BreakerGroup("g", {"a": {}})
    with pytest.raises(ConfigError, match="already a member"):
        group.add("a")
    with pytest.raises(ConfigError) as caught:
        group.add("b", depends_on=["c"])
    assert (caught.value.field, caught.value.value) == ("depends_on", "c")
    assert "b" not in group  # a refused member is not added
    with pytest.raises(ConfigError) as caught:
        BreakerGroup("g", on_cascade="alert")
    assert caught.value.field == "on_cascade"


# --------------------------------------------------------------------------- coordinated recovery


async def test_a_member_does_not_half_open_while_its_dependency_is_open(clock: FakeClock) -> None:
    group = make(clock)
    db, api = group["db"], group["api"]
    await trip(db)
    await trip(api)
    clock.advance(10.0)  # both are due to half-open
    with pytest.raises(CircuitOpenError) as caught:
        await api.call(succeed)
    assert caught.value.retry_after is None  # held: it depends on db, not on time
    assert str(caught.value) == (
        "circuit 'shop.api' is open: rejected until the breakers it depends on recover"
    )
    assert api.state is State.OPEN
    assert await db.call(succeed) == "ok"  # db's probe closes it
    assert db.state is State.CLOSED
    assert await api.call(succeed) == "ok"  # now api may probe, and closes
    assert api.state is State.CLOSED


async def test_a_half_open_member_admits_no_probe_while_held(clock: FakeClock) -> None:
    group = make(clock, success_threshold=2, half_open_probes=2)
    db, api = group["db"], group["api"]
    await trip(api)
    clock.advance(10.0)
    assert await api.call(succeed) == "ok"  # db CLOSED: api half-opens, 1 of 2 successes
    assert api.state is State.HALF_OPEN
    await trip(db)
    with pytest.raises(CircuitOpenError) as caught:
        await api.call(succeed)
    assert caught.value.retry_after is None
    assert api.state is State.HALF_OPEN
    db.reset()
    assert await api.call(succeed) == "ok"
    assert api.state is State.CLOSED


async def test_a_held_probe_success_frees_its_permit_but_does_not_close(clock: FakeClock) -> None:
    group = make(clock)
    db, api = group["db"], group["api"]
    await trip(api)
    clock.advance(10.0)
    async with api.guard():  # admitted as the probe while db is CLOSED
        assert api.state is State.HALF_OPEN
        await trip(db)  # db opens while the probe runs
    assert api.state is State.HALF_OPEN  # the success did not close it
    assert api.stats().probes_in_flight == 0
    db.force_close()
    async with api.guard():
        pass
    assert api.state is State.CLOSED


async def test_disabled_dependencies_allow_recovery(clock: FakeClock) -> None:
    group = make(clock)
    db, api = group["db"], group["api"]
    await trip(api)
    db.disable()
    clock.advance(10.0)
    assert await api.call(succeed) == "ok"
    assert api.state is State.CLOSED


async def test_the_runner_waits_for_the_dependency_then_half_opens_on_time(
    clock: FakeClock,
) -> None:
    group = make(clock)
    db, api = group["db"], group["api"]
    half_opened = anyio.Event()
    api._transition_hooks = (
        *api._transition_hooks,
        lambda t: half_opened.set() if t.target is State.HALF_OPEN else None,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(group.run)
        await trip(db)
        await trip(api)
        clock.advance(10.0)
        api._wake_runner()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert api.state is State.OPEN  # held: the tick did not half-open it
        assert api._wake_at is None  # and the runner is not spinning on a past deadline
        await db.call(succeed)  # db recovers: api's runner is re-armed
        with anyio.fail_after(5):
            await half_opened.wait()
        assert api.state is State.HALF_OPEN
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- cascades


async def test_opening_force_opens_the_cascade_and_closing_releases_it(clock: FakeClock) -> None:
    seen: list[Cascade] = []
    group = make(clock, on_cascade=seen.append)
    edge, search = group["edge"], group["search"]
    await trip(edge)
    assert search.state is State.FORCED_OPEN
    with pytest.raises(CircuitOpenError):
        await search.call(succeed)
    (cascade,) = seen
    assert (cascade.group, cascade.source, cascade.targets) == ("shop", "edge", ("search",))
    assert cascade.transition.reason is Reason.CONSECUTIVE_FAILURES
    clock.advance(10.0)
    assert await edge.call(succeed) == "ok"  # edge recovers...
    assert search.state is State.CLOSED  # ...and releases what it forced
    assert [e.detail for e in search.event_log()] == [
        "closed -> forced_open (forced_open)",
        "forced_open -> closed (reset)",
    ]


async def test_cascades_are_transitive_and_stop_at_cycles(clock: FakeClock) -> None:
    group = BreakerGroup(
        "g",
        {
            "a": {"cascades_to": ["b"]},
            "b": {"cascades_to": ["c"]},
            "c": {"cascades_to": ["a"]},
        },
        consecutive_failures=1,
        clock=clock,
    )
    await trip(group["a"])
    assert group.status() == {"a": State.OPEN, "b": State.FORCED_OPEN, "c": State.FORCED_OPEN}


async def test_a_member_an_operator_changed_is_not_released(clock: FakeClock) -> None:
    group = make(clock)
    edge, search = group["edge"], group["search"]
    await trip(edge)
    search.reset()
    search.force_open()  # the operator's own hold, after the cascade's
    clock.advance(10.0)
    await edge.call(succeed)
    assert search.state is State.FORCED_OPEN


async def test_a_member_already_forced_open_is_left_alone(clock: FakeClock) -> None:
    seen: list[Cascade] = []
    group = make(clock, on_cascade=seen.append)
    group["search"].force_open()
    await trip(group["edge"])
    assert seen[0].targets == ()
    clock.advance(10.0)
    await group["edge"].call(succeed)
    assert group["search"].state is State.FORCED_OPEN  # not the cascade's to release


async def test_an_async_on_cascade_runs_in_the_sources_runner(clock: FakeClock) -> None:
    done = anyio.Event()
    seen: list[Cascade] = []

    async def alert(cascade: Cascade) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(cascade)
        done.set()

    group = make(clock, on_cascade=alert)
    async with anyio.create_task_group() as tg:
        await tg.start(group.run)
        await trip(group["edge"])
        with anyio.fail_after(5):
            await done.wait()
        tg.cancel_scope.cancel()
    assert seen[0].targets == ("search",)


async def test_a_raising_on_cascade_is_counted_and_the_cascade_happens(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def alert(cascade: Cascade) -> None:
        raise RuntimeError("pager down")

    group = make(clock, on_cascade=alert)
    await trip(group["edge"])
    assert group["search"].state is State.FORCED_OPEN
    assert group["edge"].stats().callback_errors == 1
    assert "on_cascade" in caplog.text


async def test_members_added_while_running_get_a_runner(clock: FakeClock) -> None:
    group = BreakerGroup("g", {"a": {}}, consecutive_failures=1, reset_after=1.0, clock=clock)
    half_opened = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(group.run)
        with pytest.raises(RuntimeError, match="already running"):
            await group.run()
        late = group.add("late", on_half_open=half_opened.set)
        await trip(late)
        clock.advance(1.0)
        late._wake_runner()
        with anyio.fail_after(5):
            await half_opened.wait()
        tg.cancel_scope.cancel()


async def test_report_over_the_members(clock: FakeClock) -> None:
    group = make(clock)
    await trip(group["edge"])
    summary = group.report().summary()
    assert summary.splitlines()[0] == "4 breakers: 1 open, 1 forced_open, 2 closed"
    assert "shop.edge: open, retry in 10.0s, trip 1; last failure: Boom: upstream down" in summary
    assert group.report()["shop.search"].stats.state is State.FORCED_OPEN
    assert not math.isnan(group.report()["shop.edge"].stats.retry_after or 0.0)
