"""Throwaway servers for the fault-injection suite, and the interface they share.

Every server here is a child process of the test run, on a free loopback port: the shared
servers at 6379 and 5432 are never touched. :class:`FaultServer` is what the tests use;
:class:`RedisServer` implements it here, ``postgres_server.PostgresServer`` for PostgreSQL.

The methods block (they start, signal and wait for processes): async tests call them
through ``anyio.to_thread.run_sync``. Every wait is bounded; readiness is polled with a
deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

from breaker_machines.storage import RedisStorage, SharedStorage

from .proxy import free_port

__all__ = ["Backend", "FaultServer", "RedisServer"]

Backend = Literal["redis", "postgres"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_POLL = 0.01


@runtime_checkable
class FaultServer(Protocol):
    """A server the tests own and can break (both backends implement it).

    ``port`` stays the same across restarts, so a storage (or a proxy) keeps its URL.
    """

    port: int
    backend: Backend

    @property
    def running(self) -> bool:
        """Whether the server process is alive (paused counts as alive)."""
        ...

    def start(self) -> None:
        """Start it unless it runs; return once it answers (bounded wait, else raise)."""
        ...

    def stop(self) -> None:
        """Shut it down cleanly (resuming it first if paused); a no-op if it is not running."""
        ...

    def kill(self) -> None:
        """SIGKILL it (every process of it) and wait until it is gone."""
        ...

    def pause(self) -> None:
        """SIGSTOP every process serving clients: connections hang, nothing answers."""
        ...

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped; harmless when it is not paused."""
        ...

    def restart(self, keep_data: bool = True) -> None:
        """Stop and start again on the same port, with its data or empty."""
        ...

    def url(self, port: int | None = None) -> str:
        """The URL (DSN) a storage uses; through a proxy listening on ``port`` if given."""
        ...

    def storage(self, url: str, **options: Any) -> SharedStorage:
        """A (not yet opened) storage of this backend on ``url`` with ``options``."""
        ...

    def close(self) -> None:
        """Stop it and delete whatever it wrote. Idempotent."""
        ...


def _ping(port: int, timeout: float) -> bool:
    """Does a Redis server answer PING with PONG (not LOADING, not an error)?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """Send one command (RESP) and return the first line of the answer."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n{arg}\r\n".encode() for arg in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.strip()


class _Process:
    """The redis-server child, killed by a finalizer if the server object is lost."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)


class RedisServer:
    """A private ``redis-server`` without persistence on a free loopback port.

    It runs with ``--save '' --appendonly no``: a killed or stopped server comes back
    empty. ``restart(keep_data=True)`` keeps the data by an explicit ``SAVE`` before the
    stop (the snapshot is loaded by the next start, then deleted).
    """

    backend: Backend = "redis"

    def __init__(self, *, executable: str = "redis-server") -> None:
        found = shutil.which(executable)
        if found is None:
            raise RuntimeError(f"{executable} not found on PATH")
        self.executable = found
        self.root = Path(tempfile.mkdtemp(prefix="bm-redis-"))
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self._process = _Process()
        self._finalizer = weakref.finalize(self, _cleanup, self._process, self.root)
        self._paused = False
        self._started_once = False
        self._closed = False

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<RedisServer 127.0.0.1:{self.port} {state}>"

    @property
    def pid(self) -> int | None:
        proc = self._process.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def paused(self) -> bool:
        return self._paused

    def url(self, port: int | None = None) -> str:
        return f"redis://127.0.0.1:{port or self.port}/0"

    def storage(self, url: str, **options: Any) -> SharedStorage:
        return RedisStorage(url, **options)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("this RedisServer is closed")
        if self.running:
            return
        self._paused = False
        for attempt in range(5):
            try:
                self._launch()
                break
            except _PortInUse:
                if self._started_once or attempt == 4:
                    raise
                self.port = free_port()
        self._started_once = True
        # The snapshot of restart(keep_data=True) is loaded: never load it again.
        with contextlib.suppress(FileNotFoundError):
            (self.root / "dump.rdb").unlink()

    def _launch(self) -> None:
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,  # a Ctrl-C on the test run does not reach it
        )
        self._process.proc = proc
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port, 0.5):
            code = proc.poll()
            if code is not None:
                self._process.proc = None
                tail = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if "Address already in use" in tail:
                    raise _PortInUse(f"port {self.port} is taken:\n{tail}")
                raise RuntimeError(f"redis-server exited with status {code}:\n{tail}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"redis-server did not answer on port {self.port} within {START_TIMEOUT}s"
                )
            time.sleep(_POLL)

    def stop(self) -> None:
        proc = self._process.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.resume()
            proc.terminate()  # SIGTERM: no save points, so nothing is written
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._process.proc = None
        self._paused = False

    def kill(self) -> None:
        proc = self._process.proc
        self._process.proc = None
        self._paused = False
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # SIGKILL ends a stopped process too
        proc.wait(STOP_TIMEOUT)

    def pause(self) -> None:
        proc = self._process.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("redis-server is not running")
        os.kill(proc.pid, signal.SIGSTOP)
        self._paused = True
        deadline = time.monotonic() + STOP_TIMEOUT
        while _state(proc.pid) not in ("T", "t", None):
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not stop")
            time.sleep(_POLL)

    def resume(self) -> None:
        proc = self._process.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        self._paused = False

    def restart(self, keep_data: bool = True) -> None:
        if keep_data and self.running:
            self.resume()
            answer = _command(self.port, "SAVE")
            if answer != b"+OK":
                raise RuntimeError(f"redis SAVE answered {answer!r}")
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.root / "dump.rdb").unlink()
        self.stop()
        self.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            self._finalizer()

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _PortInUse(RuntimeError):
    pass


def _state(pid: int) -> str | None:
    """The state letter of a process (``T``: stopped), None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


def _cleanup(process: _Process, root: Path) -> None:
    process()
    shutil.rmtree(root, ignore_errors=True)
