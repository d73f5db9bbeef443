"""What breakers log to the ``breaker_machines`` logger, with which ``extra`` fields.

Transitions at INFO; every rejection at DEBUG with ``breaker``, ``state``, ``retry_after``
and ``reason``: an open circuit (the quick path and the core's), a half-open one out of
probes, a forced-open one, a full bulkhead, in both runtimes; with shared storage also the
degraded ``reject`` mode and the fleet refusing a probe (against Redis). With DEBUG off,
rejections log nothing and a level change is seen at once.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import pytest
from tests.conftest import FakeClock

from breaker_machines import (
    Breaker,
    BreakerGroup,
    BulkheadFullError,
    CircuitOpenError,
    State,
    StorageError,
    ThreadedBreaker,
)
from breaker_machines._base import _LOG

LOGGER = "breaker_machines"
LIMIT = 30.0


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


def rejections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.getMessage().find("rejected") >= 0]


def fields(record: logging.LogRecord) -> tuple[Any, ...]:
    return (
        record.levelno,
        getattr(record, "breaker", None),
        getattr(record, "state", None),
        getattr(record, "reason", None),
        getattr(record, "retry_after", "missing"),
    )


@pytest.fixture
def debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


# ---------------------------------------------------------------------------- transitions


@pytest.mark.anyio
async def test_transitions_are_logged_at_info(caplog: pytest.LogCaptureFixture, clock: Any) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    breaker = Breaker("svc", consecutive_failures=1, reset_after=10, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail)
    clock.advance(10)
    async with breaker.guard():
        pass
    breaker.force_open()
    records = [r for r in caplog.records if hasattr(r, "target")]
    assert [r.getMessage() for r in records] == [
        "breaker 'svc': closed -> open (consecutive_failures)",
        "breaker 'svc': open -> half_open (reset_after_elapsed)",
        "breaker 'svc': half_open -> closed (probes_succeeded)",
        "breaker 'svc': closed -> forced_open (forced_open)",
    ]
    assert all(r.levelno == logging.INFO for r in records)
    first = records[0]
    assert (
        first.breaker,  # type: ignore[attr-defined]
        first.source,  # type: ignore[attr-defined]
        first.target,  # type: ignore[attr-defined]
        first.reason,  # type: ignore[attr-defined]
        first.version,  # type: ignore[attr-defined]
        first.won,  # type: ignore[attr-defined]
    ) == ("svc", "closed", "open", "consecutive_failures", 1, True)
    assert [getattr(r, "version", None) for r in records] == [1, 2, 3, 4]


def test_threaded_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    breaker = ThreadedBreaker("svc", consecutive_failures=1)
    with pytest.raises(Boom), breaker.guard():
        raise Boom
    (record,) = [r for r in caplog.records if hasattr(r, "target")]
    assert (record.source, record.target, record.reason) == (  # type: ignore[attr-defined]
        "closed",
        "open",
        "consecutive_failures",
    )


# ---------------------------------------------------------------------------- rejections


@pytest.mark.anyio
@pytest.mark.parametrize("slow_path", [False, True], ids=["quick", "core"])
async def test_open_rejections(
    debug: pytest.LogCaptureFixture, clock: Any, slow_path: bool
) -> None:
    # An on_reject callback takes a breaker off the quick-reject path: the core decides.
    on_reject: Any = (lambda: None) if slow_path else None
    breaker = Breaker(
        "svc", consecutive_failures=1, reset_after=10, clock=clock, on_reject=on_reject
    )
    assert breaker._quick_reject is not slow_path
    with pytest.raises(Boom):
        await breaker.call(fail)
    clock.advance(4)
    with pytest.raises(CircuitOpenError):
        async with breaker.guard():
            pytest.fail("admitted")
    with pytest.raises(CircuitOpenError):
        await breaker.call(fail)
    records = rejections(debug)
    assert [fields(r) for r in records] == [(logging.DEBUG, "svc", "open", "open", 6.0)] * 2
    assert records[0].getMessage() == (
        "breaker 'svc': call rejected (open) while open; retry after 6.000s"
    )


@pytest.mark.anyio
@pytest.mark.parametrize("slow_path", [False, True], ids=["quick", "core"])
async def test_forced_open_rejections(debug: pytest.LogCaptureFixture, slow_path: bool) -> None:
    on_reject: Any = (lambda: None) if slow_path else None
    breaker = Breaker("svc", on_reject=on_reject)
    breaker.force_open()
    with pytest.raises(CircuitOpenError), breaker.guard():
        pytest.fail("admitted")
    (record,) = rejections(debug)
    assert fields(record) == (logging.DEBUG, "svc", "forced_open", "forced_open", None)
    assert record.getMessage() == (
        "breaker 'svc': call rejected (forced_open) while forced_open; retry after n/a"
    )


@pytest.mark.anyio
async def test_half_open_out_of_probes(debug: pytest.LogCaptureFixture, clock: Any) -> None:
    breaker = Breaker("svc", consecutive_failures=1, reset_after=10, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail)
    clock.advance(10)
    async with breaker.guard():  # the one probe
        with pytest.raises(CircuitOpenError):
            async with breaker.guard():
                pytest.fail("admitted")
    (record,) = rejections(debug)
    assert fields(record)[:4] == (logging.DEBUG, "svc", "half_open", "open")
    assert isinstance(record.retry_after, float)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_bulkhead_rejections(debug: pytest.LogCaptureFixture) -> None:
    breaker = Breaker("svc", max_concurrent=1)
    waiting = Breaker("waiting", max_concurrent=1, bulkhead_wait=0.01)
    async with breaker.guard(), waiting.guard():
        with pytest.raises(BulkheadFullError):
            async with breaker.guard():
                pytest.fail("admitted")
        with pytest.raises(BulkheadFullError), breaker.guard():
            pytest.fail("admitted")
        with pytest.raises(BulkheadFullError):
            async with waiting.guard():
                pytest.fail("admitted")
    assert [fields(r) for r in rejections(debug)] == [
        (logging.DEBUG, "svc", "closed", "bulkhead", None),
        (logging.DEBUG, "svc", "closed", "bulkhead", None),
        (logging.DEBUG, "waiting", "closed", "bulkhead", None),
    ]


def test_threaded_rejections(debug: pytest.LogCaptureFixture, clock: Any) -> None:
    breaker = ThreadedBreaker(
        "svc", consecutive_failures=1, reset_after=10, max_concurrent=1, clock=clock
    )
    with breaker.guard(), pytest.raises(BulkheadFullError), breaker.guard():
        pytest.fail("admitted")
    with pytest.raises(Boom), breaker.guard():
        raise Boom
    clock.advance(2.5)
    with pytest.raises(CircuitOpenError), breaker.guard():
        pytest.fail("admitted")
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert [fields(r) for r in rejections(debug)] == [
        (logging.DEBUG, "svc", "closed", "bulkhead", None),
        (logging.DEBUG, "svc", "open", "open", 7.5),
        (logging.DEBUG, "svc", "forced_open", "forced_open", None),
    ]


@pytest.mark.anyio
async def test_rejections_are_silent_without_debug(
    caplog: pytest.LogCaptureFixture, clock: Any
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    breaker = Breaker("svc", consecutive_failures=1, reset_after=10, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail)

    def reject() -> None:
        with pytest.raises(CircuitOpenError), breaker.guard():
            pytest.fail("admitted")

    for _ in range(3):
        reject()
    assert rejections(caplog) == []
    assert _LOG.debug is False  # later rejections skip the logger entirely
    caplog.set_level(logging.DEBUG, logger=LOGGER)  # a level change is seen at once
    assert _LOG.debug is True
    reject()
    reject()
    assert len(rejections(caplog)) == 2
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    reject()
    assert len(rejections(caplog)) == 2
    assert _LOG.debug is False
    logging.getLogger("some.other.logger").setLevel(logging.INFO)  # any level change
    assert _LOG.debug is True
    reject()
    assert _LOG.debug is False


@pytest.mark.anyio
async def test_logging_disable_and_a_disabled_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    breaker = Breaker("svc")
    breaker.force_open()

    def reject() -> None:
        with pytest.raises(CircuitOpenError), breaker.guard():
            pytest.fail("admitted")

    logging.disable(logging.DEBUG)
    try:
        reject()
        assert rejections(caplog) == []
        assert _LOG.debug is False
    finally:
        logging.disable(logging.NOTSET)
    reject()
    assert len(rejections(caplog)) == 1
    logger = logging.getLogger(LOGGER)
    logger.disabled = True  # as logging.config does to loggers it does not configure
    try:
        reject()
        assert _LOG.debug is True  # it asks the logger every time: nothing is cached
    finally:
        logger.disabled = False
    reject()
    assert len(rejections(caplog)) == 2


# ---------------------------------------------------------------------------- shared storage


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_degraded_reject_mode(debug: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from breaker_machines.storage import RedisStorage

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the storage is down
    with anyio.fail_after(LIMIT):
        async with RedisStorage(url, timeout=0.2, flush_interval=3600.0) as storage:
            breaker = Breaker("svc", storage=storage, degraded_mode="reject")
            with pytest.raises(StorageError):
                await breaker.sync()
            assert breaker.stats().degraded
            with pytest.raises(CircuitOpenError), breaker.guard():
                pytest.fail("admitted")
    (record,) = rejections(debug)
    assert fields(record)[:4] == (logging.DEBUG, "svc", "closed", "degraded")
    assert record.retry_after is not None  # type: ignore[attr-defined]
    assert record.retry_after >= 0.0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_fleet_refusing_a_probe(
    debug: pytest.LogCaptureFixture, redis_url: str, redis_prefix: str, clock: Any
) -> None:
    from breaker_machines import running
    from breaker_machines.storage import RedisStorage

    options: dict[str, Any] = {
        "consecutive_failures": 1,
        "reset_after": 10.0,
        "half_open_probes": 1,
        "clock": clock,
    }
    settings: dict[str, Any] = {"flush_interval": 3600.0, "refresh_interval": 3600.0}
    with anyio.fail_after(LIMIT):
        async with (
            RedisStorage(redis_url, prefix=redis_prefix, **settings) as store_a,
            RedisStorage(redis_url, prefix=redis_prefix, **settings) as store_b,
        ):
            a = Breaker("svc", storage=store_a, **options)
            b = Breaker("svc", storage=store_b, **options)
            async with running(a, b):
                with pytest.raises(Boom):
                    await a.call(fail)
                await a.sync()
                await b.sync()
                assert b.state is State.OPEN
                clock.advance(10.5)
                store_a.advance_clock(10.5)
                store_b.advance_clock(10.5)
                # a takes the fleet's only probe permit (even when b's runner wrote the
                # half-open transition first) and b is refused it.
                async with a.guard():
                    with pytest.raises(CircuitOpenError):
                        async with b.guard():
                            pytest.fail("the fleet admitted a second probe")
    refused = [r for r in rejections(debug) if getattr(r, "reason", None) == "fleet_probe"]
    assert [fields(record) for record in refused] == [
        (logging.DEBUG, "svc", "half_open", "fleet_probe", 60.0)
    ]


@pytest.mark.anyio
async def test_rejections_held_by_a_dependency(
    debug: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    group = BreakerGroup(
        "g", {"db": {}, "api": {"depends_on": ["db"]}}, consecutive_failures=1, clock=clock
    )
    for member in ("db", "api"):
        with pytest.raises(Boom):
            await group[member].call(fail)
    clock.advance(30)
    with pytest.raises(CircuitOpenError), group["api"].guard():
        pytest.fail("admitted")
    (record,) = rejections(debug)
    assert fields(record) == (logging.DEBUG, "g.api", "open", "dependency", None)
