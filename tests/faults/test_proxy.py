"""The fault-injecting proxy itself, in front of a loopback echo server (asyncio and trio)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

from .proxy import Proxy, free_port

pytestmark = pytest.mark.anyio

LIMIT = 5.0


async def echo(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


@asynccontextmanager
async def echo_proxy() -> AsyncIterator[Proxy]:
    """A proxy in front of an echo server, both in this event loop."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, echo)
        async with Proxy(port) as proxy:
            yield proxy
        group.cancel_scope.cancel()


async def receive_exactly(stream: anyio.abc.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive()
    return data


async def expect_reset(stream: anyio.abc.SocketStream) -> None:
    """The connection was reset: receiving fails (RST), it does not end cleanly (FIN)."""
    with pytest.raises(anyio.BrokenResourceError):
        await stream.receive()


async def test_pass_relays_both_ways() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_proxy() as proxy, await anyio.connect_tcp("127.0.0.1", proxy.port) as c:
            for payload in (b"ping", b"x" * 100_000):
                await c.send(payload)
                assert await receive_exactly(c, len(payload)) == payload
            assert proxy.accepted == 1
            assert proxy.open_connections == 1


async def test_latency_delays_each_direction_and_keeps_the_order() -> None:
    latency = 0.1
    with anyio.fail_after(LIMIT):
        async with echo_proxy() as proxy, await anyio.connect_tcp("127.0.0.1", proxy.port) as c:
            proxy.latency = latency
            started = anyio.current_time()
            for number in range(20):
                await c.send(b"%03d" % number)
            received = await receive_exactly(c, 60)
            elapsed = anyio.current_time() - started
            assert received == b"".join(b"%03d" % number for number in range(20))
            assert elapsed >= 2 * latency  # there and back
            proxy.latency = 0.0
            started = anyio.current_time()
            await c.send(b"now")
            assert await receive_exactly(c, 3) == b"now"
            assert anyio.current_time() - started < latency


async def test_a_blackhole_swallows_and_resets_what_lost_bytes_once_lifted() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_proxy() as proxy:
            idle = await anyio.connect_tcp("127.0.0.1", proxy.port)
            used = await anyio.connect_tcp("127.0.0.1", proxy.port)
            async with idle, used:
                await idle.send(b"hi")
                assert await receive_exactly(idle, 2) == b"hi"
                proxy.mode = "blackhole"
                late = await anyio.connect_tcp("127.0.0.1", proxy.port)  # accepted, mute
                async with late:
                    for stream in (used, late):
                        await stream.send(b"lost")
                        with anyio.move_on_after(0.2) as waited:
                            await stream.receive()
                        assert waited.cancelled_caught  # nothing came back
                    proxy.mode = "pass"
                    await expect_reset(used)
                    await expect_reset(late)
                await idle.send(b"still")  # it lost nothing: it lives on
                assert await receive_exactly(idle, 5) == b"still"
            assert proxy.resets == 2


async def test_reset_all_and_reset_mode_abort_connections_with_rst() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_proxy() as proxy:
            async with await anyio.connect_tcp("127.0.0.1", proxy.port) as c:
                await c.send(b"hi")
                assert await receive_exactly(c, 2) == b"hi"
                proxy.reset_all()
                await expect_reset(c)
            proxy.mode = "reset"
            async with await anyio.connect_tcp("127.0.0.1", proxy.port) as c:
                await expect_reset(c)
            proxy.mode = "pass"
            async with await anyio.connect_tcp("127.0.0.1", proxy.port) as c:
                await c.send(b"ok")
                assert await receive_exactly(c, 2) == b"ok"


async def test_a_refused_upstream_connection_is_reset() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            Proxy(free_port()) as proxy,
            await anyio.connect_tcp("127.0.0.1", proxy.port) as c,
        ):
            await expect_reset(c)
