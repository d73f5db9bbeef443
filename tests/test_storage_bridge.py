"""The storage bridge: asyncio-only drivers run from trio on one asyncio loop thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import sniffio

from breaker_machines.storage._bridge import (
    DirectExecutor,
    LoopThread,
    executor_for_current_loop,
)

#: Every wait in these tests is bounded: a broken bridge fails, it does not hang.
LIMIT = 10

both = pytest.mark.anyio
trio_only = pytest.mark.parametrize("anyio_backend", ["trio"])


class Boom(Exception):
    pass


@asynccontextmanager
async def loop_thread(name: str = "bridge-test") -> AsyncIterator[LoopThread]:
    bridge = LoopThread(name)
    bridge.start()
    try:
        yield bridge
    finally:
        await bridge.aclose()


async def add(a: int, b: int = 0) -> int:
    await asyncio.sleep(0)
    return a + b


# -- results and exceptions ------------------------------------------------------------------


@both
async def test_results_come_back_with_positional_and_keyword_arguments() -> None:
    with anyio.fail_after(LIMIT):
        async with loop_thread() as bridge:
            assert await bridge.run(add, 2) == 2
            assert await bridge.run(add, 2, b=3) == 5


@both
async def test_an_exception_reaches_the_caller_as_the_same_object() -> None:
    boom = Boom("driver failed")
    # concurrent.futures copies a TimeoutError on its way out of run_coroutine_threadsafe:
    # the bridge must not let it.
    timeout = TimeoutError("driver timed out")

    async def fail(exc: BaseException) -> None:
        await asyncio.sleep(0)
        raise exc

    with anyio.fail_after(LIMIT):
        async with loop_thread() as bridge:
            with pytest.raises(Boom) as boom_info:
                await bridge.run(fail, boom)
            assert boom_info.value is boom
            with pytest.raises(TimeoutError) as timeout_info:
                await bridge.run(fail, timeout)
            assert timeout_info.value is timeout
            # A SystemExit raised by the driver reaches the caller and leaves the loop alive.
            stop = SystemExit(3)
            with pytest.raises(SystemExit) as stop_info:
                await bridge.run(fail, stop)
            assert stop_info.value is stop
            assert await bridge.run(add, 1, 1) == 2


# -- where the calls run ---------------------------------------------------------------------


@both
async def test_calls_run_on_the_bridge_thread_and_loop() -> None:
    called_on: list[int] = []

    def make_call() -> Awaitable[tuple[int, asyncio.AbstractEventLoop]]:
        # A plain function returning a coroutine: the function itself runs on the loop
        # thread, inside the running loop, as a driver's constructor would.
        called_on.append(threading.get_ident())
        asyncio.get_running_loop()
        return where()

    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    with anyio.fail_after(LIMIT):
        async with loop_thread("bridge-where") as bridge:
            ident, loop = await bridge.run(make_call)
            thread = bridge.thread
            assert thread is not None
            assert thread.name == "bridge-where"
            assert not thread.daemon
            assert ident == thread.ident == called_on[0]
            assert ident != threading.get_ident()
            assert loop is bridge.loop


# -- cancellation ----------------------------------------------------------------------------


@both
async def test_a_cancelled_caller_returns_promptly_and_the_asyncio_task_is_cancelled() -> None:
    cancelled = threading.Event()

    async def sleep_long() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with anyio.fail_after(LIMIT):
        async with loop_thread() as bridge:
            began = time.monotonic()
            with anyio.move_on_after(0.05) as scope:
                await bridge.run(sleep_long)
            assert scope.cancelled_caught
            assert time.monotonic() - began < LIMIT / 2
            assert cancelled.wait(LIMIT)
            # The bridge is still usable afterwards.
            assert await bridge.run(add, 20, b=22) == 42


# -- concurrency -----------------------------------------------------------------------------


@both
async def test_many_concurrent_calls_share_the_one_loop_thread() -> None:
    calls = 200
    threads_before = set(threading.enumerate())
    results: dict[int, int] = {}
    threads_during: list[set[threading.Thread]] = []

    with anyio.fail_after(LIMIT):
        async with loop_thread() as bridge:

            async def make_barrier() -> tuple[asyncio.Event, list[int]]:
                return asyncio.Event(), [0]

            everyone_in, count = await bridge.run(make_barrier)

            async def call(i: int) -> int:
                # Nobody gets past the barrier until all calls are in: they run concurrently.
                count[0] += 1
                if count[0] == calls:
                    threads_during.append(set(threading.enumerate()))
                    everyone_in.set()
                await everyone_in.wait()
                return i * 2

            async def one(i: int) -> None:
                results[i] = await bridge.run(call, i)

            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(one, i)
            # Threads that ended meanwhile (a thread pool's idle workers) do not matter;
            # the only new one is the bridge's.
            assert threads_during[0] - threads_before == {bridge.thread}
            assert set(threading.enumerate()) - threads_before == {bridge.thread}
    assert results == {i: i * 2 for i in range(calls)}


# -- lifecycle -------------------------------------------------------------------------------


@both
async def test_aclose_cancels_pending_calls_and_joins_the_thread() -> None:
    entered = threading.Event()
    cancelled = threading.Event()
    failures: list[BaseException] = []

    async def sleep_long() -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bridge = LoopThread()
    bridge.start()
    thread, loop = bridge.thread, bridge.loop
    assert thread is not None
    assert loop is not None
    assert thread.is_alive()

    async def pending_caller() -> None:
        try:
            await bridge.run(sleep_long)
        except RuntimeError as exc:
            failures.append(exc)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pending_caller)
            assert await anyio.to_thread.run_sync(entered.wait, LIMIT)
            await bridge.aclose()
    assert cancelled.is_set()
    assert not thread.is_alive()
    assert loop.is_closed()
    assert len(failures) == 1
    assert "cancelled" in str(failures[0])

    await bridge.aclose()  # a second close does nothing
    with pytest.raises(RuntimeError, match="is not running"):
        await bridge.run(add, 1)
    with pytest.raises(RuntimeError, match="already started or closed"):
        bridge.start()


@both
async def test_run_before_start_raises_and_start_twice_raises() -> None:
    bridge = LoopThread()
    with pytest.raises(RuntimeError, match="is not running"):
        await bridge.run(add, 1)
    assert bridge.thread is None
    bridge.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            bridge.start()
        with anyio.fail_after(LIMIT):
            assert await bridge.run(add, 1) == 1
    finally:
        await bridge.aclose()


@both
async def test_aclose_before_start_closes_for_good() -> None:
    bridge = LoopThread()
    await bridge.aclose()
    with pytest.raises(RuntimeError, match="already started or closed"):
        bridge.start()
    with pytest.raises(RuntimeError, match="is not running"):
        await bridge.run(add, 1)


# -- a real driver ---------------------------------------------------------------------------


@pytest.mark.anyio
@trio_only
async def test_a_redis_asyncio_client_works_through_the_bridge_under_trio(redis_url: str) -> None:
    import redis.asyncio as redis_asyncio

    assert sniffio.current_async_library() == "trio"

    async def make_client() -> Any:
        return redis_asyncio.Redis.from_url(redis_url)

    key = f"breaker-machines:test-bridge:{time.monotonic_ns()}"
    with anyio.fail_after(LIMIT):
        async with loop_thread() as bridge:
            r = await bridge.run(make_client)
            try:
                assert await bridge.run(r.ping) is True
                assert await bridge.run(r.set, key, b"open", ex=60) is True
                assert await bridge.run(r.get, key) == b"open"
                assert await bridge.run(r.delete, key) == 1
            finally:
                await bridge.run(r.aclose)


# -- choosing an executor --------------------------------------------------------------------


@both
async def test_executor_for_current_loop_matches_the_running_library(anyio_backend: str) -> None:
    executor = executor_for_current_loop("bridge-chosen")
    try:
        with anyio.fail_after(LIMIT):
            assert await executor.run(add, 1, b=2) == 3
        if anyio_backend == "asyncio":
            assert isinstance(executor, DirectExecutor)
        else:
            assert isinstance(executor, LoopThread)
            assert executor.thread is not None
            assert executor.thread.is_alive()
            assert executor.thread.name == "bridge-chosen"
    finally:
        await executor.aclose()
    if isinstance(executor, LoopThread):
        assert executor.thread is not None
        assert not executor.thread.is_alive()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_direct_executor_awaits_on_the_callers_loop() -> None:
    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    executor = DirectExecutor()
    assert await executor.run(where) == (threading.get_ident(), asyncio.get_running_loop())
    boom = Boom()

    async def fail() -> None:
        raise boom

    with pytest.raises(Boom) as info:
        await executor.run(fail)
    assert info.value is boom
    await executor.aclose()
    await executor.aclose()


def test_executor_for_current_loop_refuses_other_libraries() -> None:
    with pytest.raises(RuntimeError, match="no async library"):
        executor_for_current_loop()
    token = sniffio.current_async_library_cvar.set("curio")
    try:
        with pytest.raises(RuntimeError, match="'curio'"):
            executor_for_current_loop()
    finally:
        sniffio.current_async_library_cvar.reset(token)


def test_the_module_imports_without_trio() -> None:
    code = (
        "import sys\n"
        "sys.modules['trio'] = None\n"  # any `import trio` now fails
        "import asyncio\n"
        "from breaker_machines.storage import _bridge\n"
        "async def main():\n"
        "    executor = _bridge.executor_for_current_loop()\n"
        "    assert isinstance(executor, _bridge.DirectExecutor)\n"
        "    async def one():\n"
        "        return 1\n"
        "    assert await executor.run(one) == 1\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=60)
