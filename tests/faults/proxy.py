"""A loopback TCP proxy that plays the unreliable network between a storage and its server.

``async with Proxy(target_port) as proxy:`` listens on ``127.0.0.1:proxy.port`` and relays
every connection to ``127.0.0.1:target_port``, both ways. The test changes the network
while connections are open:

* ``proxy.latency = seconds``: every chunk is delivered that much later than it arrived,
  in both directions, in order (a chunk never overtakes an earlier one of its direction).
  Lowering the latency does not reorder: later chunks still wait for earlier ones.
* ``proxy.mode = "blackhole"``: nothing is forwarded or answered. Connections stay open,
  what they carry is read and swallowed, and new connections are accepted and then
  swallow everything too. A TCP connection that lost bytes is dead in reality (TCP
  delivers everything or fails), so when the blackhole is lifted, every connection that
  swallowed something (and every connection accepted meanwhile) is reset: clients
  reconnect, as they would after their kernel gave up.
* ``proxy.mode = "reset"``: new connections are reset (RST) as soon as they are
  accepted, and an open connection is reset as soon as a chunk crosses it.
* ``proxy.reset_all()``: abort every open connection with RST (``SO_LINGER`` 0), now.
* ``proxy.mode = "pass"``: relay normally (the default).

A server that refuses the proxy's upstream connection (stopped, killed) is mirrored by
resetting the client's connection. The proxy runs its tasks in a task group of its own
inside the caller's event loop (asyncio or trio, through anyio), opened by ``async with``
and cancelled when the block exits.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from types import TracebackType
from typing import Literal

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["MODES", "Mode", "Proxy", "free_port"]

Mode = Literal["pass", "blackhole", "reset"]
MODES: tuple[Mode, ...] = ("pass", "blackhole", "reset")

_LINGER_ZERO = struct.pack("ii", 1, 0)
_BROKEN = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _abort_on_close(stream: anyio.abc.SocketStream) -> None:
    """Make closing ``stream`` send RST instead of FIN."""
    try:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except (OSError, anyio.TypedAttributeLookupError):
        pass  # already closed: nothing left to reset


class _Connection:
    """One relayed connection: the client's stream, the upstream one, their cancel scope."""

    __slots__ = ("client", "dead", "scope", "swallowed", "upstream")

    def __init__(self, client: anyio.abc.SocketStream) -> None:
        self.client = client
        self.upstream: anyio.abc.SocketStream | None = None
        self.scope = anyio.CancelScope()
        self.swallowed = False  # lost bytes in a blackhole (or never had an upstream)
        self.dead = False

    def reset(self) -> None:
        """Abort both sides with RST; the connection's task closes them."""
        if self.dead:
            return
        self.dead = True
        _abort_on_close(self.client)
        if self.upstream is not None:
            _abort_on_close(self.upstream)
        self.scope.cancel()


class Proxy:
    """A fault-injecting TCP relay to ``127.0.0.1:target_port`` (see the module docstring)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency = 0.0
        self._mode: Mode = "pass"
        self._connections: set[_Connection] = set()
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self.accepted = 0
        """Connections accepted so far."""
        self.resets = 0
        """Connections reset so far (by ``reset_all()``, ``reset`` mode or a lifted blackhole)."""

    def __repr__(self) -> str:
        return (
            f"<Proxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}"
            f" mode={self._mode} latency={self.latency}>"
        )

    @property
    def open_connections(self) -> int:
        """Connections relayed right now."""
        return len(self._connections)

    # ------------------------------------------------------------------ the knobs

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        previous, self._mode = self._mode, mode
        if previous == "blackhole" and mode != "blackhole":
            for connection in list(self._connections):
                if connection.swallowed:
                    self._reset(connection)

    def reset_all(self) -> None:
        """Abort every open connection with RST (clients see ECONNRESET)."""
        for connection in list(self._connections):
            self._reset(connection)

    def _reset(self, connection: _Connection) -> None:
        if not connection.dead:
            self.resets += 1
            connection.reset()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Proxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._listener = listener
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(listener.serve, self._handle, task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        listener, self._listener = self._listener, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            if listener is not None:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()

    # ------------------------------------------------------------------ relaying

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        connection = _Connection(client)
        self._connections.add(connection)
        try:
            with connection.scope:
                if self._mode == "reset":
                    self._reset(connection)
                elif self._mode == "blackhole":
                    connection.swallowed = True  # never connected: reset once lifted
                    await self._swallow(client)
                else:
                    await self._relay(connection)
        finally:
            self._connections.discard(connection)
            with anyio.CancelScope(shield=True):
                for stream in (connection.upstream, client):
                    if stream is not None:
                        with contextlib.suppress(*_BROKEN):
                            await stream.aclose()

    async def _swallow(self, client: anyio.abc.SocketStream) -> None:
        try:
            async for _ in client:
                pass
        except _BROKEN:
            pass

    async def _relay(self, connection: _Connection) -> None:
        try:
            connection.upstream = await anyio.connect_tcp(*self.target)
        except OSError:
            self._reset(connection)  # the server refused: so does the proxy
            return
        if connection.dead:  # reset while connecting
            _abort_on_close(connection.upstream)
            return
        async with anyio.create_task_group() as task_group:
            for source, sink in (
                (connection.client, connection.upstream),
                (connection.upstream, connection.client),
            ):
                send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
                task_group.start_soon(self._read, connection, source, send, task_group)
                task_group.start_soon(self._write, connection, receive, sink, task_group)

    async def _read(
        self,
        connection: _Connection,
        source: anyio.abc.SocketStream,
        chunks: MemoryObjectSendStream[tuple[float, bytes]],
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        """Read one direction; queue each chunk with the time it is due."""
        async with chunks:
            try:
                async for chunk in source:
                    if self._mode == "reset":
                        self._reset(connection)
                        return
                    if self._mode == "blackhole":
                        connection.swallowed = True
                        continue
                    await chunks.send((anyio.current_time() + self.latency, chunk))
            except _BROKEN:
                task_group.cancel_scope.cancel()  # a reset or error: the connection is over
        # End of stream: the writer delivers what is queued, then ends the connection.

    async def _write(
        self,
        connection: _Connection,
        chunks: MemoryObjectReceiveStream[tuple[float, bytes]],
        sink: anyio.abc.SocketStream,
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        """Deliver one direction's chunks in order, each when it is due."""
        async with chunks:
            try:
                async for due, chunk in chunks:
                    delay = due - anyio.current_time()
                    if delay > 0:
                        await anyio.sleep(delay)
                    if self._mode == "reset":
                        self._reset(connection)
                        return
                    if self._mode == "blackhole":
                        connection.swallowed = True
                        continue
                    await sink.send(chunk)
            except _BROKEN:
                pass
        task_group.cancel_scope.cancel()  # one side is done: so is the connection
