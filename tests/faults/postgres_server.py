"""A throwaway PostgreSQL cluster for fault-injection tests.

``PostgresServer()`` owns a temporary directory holding a fresh cluster (``initdb``) and
runs its postmaster as a child process on a free loopback port, never the shared server
at 127.0.0.1:5432. The test can then stop it, crash it (``kill``: SIGKILL to the
postmaster and every backend), freeze it (``pause``/``resume``: SIGSTOP/SIGCONT) and
start it again with or without its data. Every wait is bounded.

Two things about PostgreSQL shape the code:

* ``initdb`` and ``postgres`` refuse to run as root. Under root the cluster belongs to an
  unprivileged user (``postgres``, else ``nobody``): the temporary directory is chowned to
  it and ``initdb``/``postgres`` are started with ``subprocess.Popen(user=..., group=...)``,
  which switches user in the child before ``exec``: the pid we hold is the postmaster's
  itself, so signals reach it directly (no ``su``/``runuser``/``pg_ctl`` in between).
* Each child of the postmaster calls ``setsid()`` (``InitPostmasterChild``): backends are
  not in the postmaster's process group, so ``os.killpg`` would miss them. The processes
  of the cluster are found in ``/proc`` instead: the postmaster's descendants, plus every
  process whose working directory is the data directory (all of them ``chdir`` there,
  which also finds backends orphaned by a dead postmaster).

The server runs with ``fsync=off`` and ``full_page_writes=off`` but ``synchronous_commit``
left ``on``: a commit is then written to the kernel (not flushed to disk) before it is
acknowledged, so a ``kill()`` (the process dies, the kernel does not) loses no
acknowledged commit, as with a real server; ``synchronous_commit=off`` would lose the
last ~200 ms of commits on every kill.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

from breaker_machines.storage import PostgresStorage, SharedStorage

__all__ = ["PostgresError", "PostgresServer", "find_bindir", "simple_query"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0
INITDB_TIMEOUT = 60.0
_POLL = 0.01

#: Settings given on the postmaster's command line (PostgreSQL 15's initdb has no ``-c``).
SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "50",
    "shared_buffers": "16MB",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",  # see the module docstring
    # Dynamic shared memory as files in the data directory, so that a killed cluster
    # leaves nothing behind in /dev/shm once its directory is deleted.
    "dynamic_shared_memory_type": "mmap",
    "huge_pages": "off",
    "autovacuum": "off",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "UTC",
}


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (newest version), or None.

    ``BREAKER_MACHINES_PG_BINDIR`` overrides the search.
    """
    candidates: list[str] = []
    override = os.environ.get("BREAKER_MACHINES_PG_BINDIR")
    if override:
        candidates.append(override)

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name))

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    candidates.append("/usr/local/pgsql/bin")
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        if all(os.access(path / name, os.X_OK) for name in ("initdb", "postgres")):
            return path
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port (connections in TIME_WAIT are fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------- wire protocol


class PostgresError(Exception):
    """An ErrorResponse from the server (``sqlstate`` is its SQLSTATE code)."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.sqlstate = fields.get("C", "")
        self.fields = fields
        super().__init__(f"{fields.get('S', 'ERROR')} {self.sqlstate}: {fields.get('M', '')}")


class _Connection:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("PostgreSQL did not answer in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("PostgreSQL closed the connection")
            self.buffer += chunk

    def read(self) -> tuple[bytes, bytes]:
        self._fill(5)
        kind, length = self.buffer[:1], struct.unpack("!i", self.buffer[1:5])[0]
        self._fill(1 + length)
        body = self.buffer[5 : 1 + length]
        self.buffer = self.buffer[1 + length :]
        return kind, body

    def send(self, kind: bytes, body: bytes) -> None:
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        self.sock.sendall(kind + struct.pack("!i", 4 + len(body)) + body)


def _error_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in body.split(b"\0"):
        if item:
            fields[chr(item[0])] = item[1:].decode("utf-8", "replace")
    return fields


def _data_row(body: bytes) -> tuple[str | None, ...]:
    (count,) = struct.unpack_from("!h", body, 0)
    offset = 2
    values: list[str | None] = []
    for _ in range(count):
        (size,) = struct.unpack_from("!i", body, offset)
        offset += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[offset : offset + size].decode())
            offset += size
    return tuple(values)


def simple_query(
    port: int,
    sql: str,
    *,
    database: str = "test",
    user: str = "postgres",
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> list[tuple[str | None, ...]]:
    """Run ``sql`` (simple query protocol, trust auth) and return its rows as text.

    A tiny synchronous client, so that the harness needs no event loop (it may be called
    from inside one) and no driver. Raises OSError/TimeoutError when the server does not
    answer, PostgresError when it answers with an error.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        connection = _Connection(sock, deadline)
        params = f"user\0{user}\0database\0{database}\0\0".encode()
        sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        while True:
            kind, body = connection.read()
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise PostgresError({"M": "the harness speaks trust authentication only"})
            if kind == b"E":
                raise PostgresError(_error_fields(body))
            if kind == b"Z":
                break
        connection.send(b"Q", sql.encode() + b"\0")
        rows: list[tuple[str | None, ...]] = []
        error: PostgresError | None = None
        while True:
            kind, body = connection.read()
            if kind == b"D":
                rows.append(_data_row(body))
            elif kind == b"E":
                error = PostgresError(_error_fields(body))
            elif kind == b"Z":
                break
        with contextlib.suppress(OSError):
            connection.send(b"X", b"")
    if error is not None:
        raise error
    return rows


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def _alive(pid: int) -> bool:
    found = _proc_stat(pid)
    return found is not None and found[0] not in ("Z", "X")


def _cluster_pids(postmaster: int | None, data_dir: Path) -> list[int]:
    """The postmaster's descendants and every process working in ``data_dir``."""
    children: dict[int, list[int]] = {}
    matches: set[int] = set()
    target = str(data_dir)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        found = _proc_stat(pid)
        if found is None or found[0] in ("Z", "X"):
            continue
        children.setdefault(found[1], []).append(pid)
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd") == target:
                matches.add(pid)
    if postmaster is not None:
        todo = [postmaster]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in matches:
                    matches.add(child)
                    todo.append(child)
    matches.discard(os.getpid())
    return sorted(matches)


def _signal(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (waited {timeout}s)")
        time.sleep(_POLL)


def _remove_interlock_segment(data_dir: Path) -> None:
    """Remove the SysV segment of a cluster that died without shutting down.

    A killed postmaster leaves its small System V interlock segment behind (the next start
    on the same data directory would remove it); when the directory itself is discarded
    the segment would leak until reboot, so it is removed here, once its key is checked.
    ``postmaster.pid`` only exists after an unclean end, so this is a no-op otherwise.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        key, shmid = (int(part) for part in lines[6].split())
    except (OSError, IndexError, ValueError):
        return
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover
        return
    libc = ctypes.CDLL(name, use_errno=True)
    buffer = ctypes.create_string_buffer(256)  # struct shmid_ds; ipc_perm.__key comes first
    if libc.shmctl(shmid, 2, buffer) != 0:  # IPC_STAT
        return
    if struct.unpack_from("=i", buffer.raw, 0)[0] == key:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


# --------------------------------------------------------------------------- the server


class _Resources:
    """What must be cleaned up even if the server is never closed (see weakref.finalize)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> list[int]:
        """SIGKILL every process of the cluster; returns their pids."""
        postmaster = self.proc.pid if self.proc is not None else None
        if self.proc is not None and self.proc.poll() is None:
            # Stopped, the postmaster cannot fork a backend we would miss.
            _signal([self.proc.pid], signal.SIGSTOP)
        victims = _cluster_pids(postmaster, self.data)
        if postmaster is not None and postmaster not in victims:
            victims.append(postmaster)
        _signal(victims, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(KILL_TIMEOUT)
        self.proc = None
        return victims

    def discard_data(self) -> None:
        _remove_interlock_segment(self.data)  # a no-op after a clean shutdown
        shutil.rmtree(self.data, ignore_errors=True)

    def __call__(self) -> None:  # the finalizer
        with contextlib.suppress(Exception):
            self.kill()
        with contextlib.suppress(Exception):
            self.discard_data()
        shutil.rmtree(self.root, ignore_errors=True)


class _PortInUse(RuntimeError):
    pass


class _RunAs(NamedTuple):
    """The user the cluster runs as; ``user``/``group``/``extra_groups`` go to Popen."""

    name: str
    uid: int
    gid: int
    user: int | None  # None: stay who we are (not root)
    group: int | None
    extra_groups: list[int] | None


def _run_as() -> _RunAs:
    """Ourselves, or under root (which initdb and postgres refuse) an unprivileged user."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, None, None, None)
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(name, entry.pw_uid, entry.pw_gid, entry.pw_uid, entry.pw_gid, [])
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run as")


def _base_dir() -> Path:
    """Where clusters live: ``BREAKER_MACHINES_PG_TMPDIR``, else /dev/shm when it has room
    (a tmpfs: initdb takes ~0.3 s there against ~1-1.5 s on this machine's disk), else the
    usual temporary directory."""
    override = os.environ.get("BREAKER_MACHINES_PG_TMPDIR")
    if override:
        return Path(override)
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
            stats = os.statvfs(shm)
            if stats.f_bavail * stats.f_frsize >= 1 << 30:
                return shm
    return Path(tempfile.gettempdir())


def _traversable(path: Path, uid: int, gid: int) -> bool:
    for directory in [path, *path.parents]:
        mode = directory.stat()
        if mode.st_uid == uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid == gid:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


_templates: dict[tuple[str, str], PostgresServer] = {}
_templates_lock = threading.Lock()


def _template(bindir: Path, os_user: str) -> Path:
    """The data directory of a stopped cluster with database ``test``, made once per
    process (initdb + start + createdb + stop: ~0.6 s on /dev/shm) and copied by every
    ``PostgresServer`` that needs a fresh cluster (~0.05 s on /dev/shm)."""
    key = (str(bindir), os_user)
    with _templates_lock:
        server = _templates.get(key)
        if server is None:
            server = PostgresServer(bindir=bindir, template=False)
            try:
                server.start()
                server.stop()
            except BaseException:
                server.close()
                raise
            _templates[key] = server  # closed (deleted) at exit by its finalizer
        return server.data_dir


class PostgresServer:
    """A private PostgreSQL cluster on a free loopback port (see the module docstring).

    ``start()`` runs ``initdb`` when there is no cluster yet, starts the postmaster and
    waits (at most ``start_timeout`` seconds) until it accepts connections, then creates
    database ``test`` in a fresh cluster. ``stop()`` is a fast shutdown, ``kill()`` a crash,
    ``pause()``/``resume()`` freeze and thaw every process, ``restart(keep_data)`` starts
    again with the same data or a fresh empty cluster, always on the same port (``port``
    only changes during the very first ``start()``, if another process took it).
    ``close()`` stops and deletes everything; ``with PostgresServer() as server:`` starts
    and closes. ``timings`` holds how long the last template/initdb/copy/start/createdb
    took (seconds).

    With ``template=True`` (the default) a fresh cluster is a copy of one made once per
    process (see :func:`_template`) rather than a new ``initdb``: a second server, or a
    ``restart(keep_data=False)``, then starts in ~0.1 s instead of ~0.6 s (on /dev/shm;
    ~1.3 s or more on this machine's disk).
    """

    backend: Literal["redis", "postgres"] = "postgres"  # servers.Backend

    def __init__(
        self,
        *,
        bindir: Path | str | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        settings: dict[str, str] | None = None,
        template: bool = True,
    ) -> None:
        found = Path(bindir) if bindir is not None else find_bindir()
        if found is None:
            raise RuntimeError(
                "no PostgreSQL binaries (initdb, postgres) found; "
                "set BREAKER_MACHINES_PG_BINDIR to their directory"
            )
        self.bindir = found
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.settings = {**SETTINGS, **(settings or {})}
        self.template = template
        self._run_as = run_as = _run_as()
        self.os_user = run_as.name
        uid, gid = run_as.uid, run_as.gid
        base = _base_dir()
        if os.geteuid() == 0 and not _traversable(base, uid, gid):
            base = Path("/tmp")
        root = Path(tempfile.mkdtemp(prefix="bm-pg-", dir=base)).resolve()
        if os.geteuid() == 0:
            os.chown(root, uid, gid)
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root / "sock"
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            os.chown(self.socket_dir, uid, gid)
        if len(str(self.socket_dir)) > 90:  # sun_path holds 107 bytes
            self.settings["unix_socket_directories"] = ""
        else:
            self.settings["unix_socket_directories"] = str(self.socket_dir)
        self.log_path = root / "server.log"
        self.log_path.touch()
        self._resources = _Resources(root)
        self._finalizer = weakref.finalize(self, self._resources)
        self._log_offset = 0
        self._paused = False
        self._needs_database = False
        self._started_once = False
        self._closed = False
        self.timings: dict[str, float] = {}
        self.port = free_port()

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        proc = self._resources.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def paused(self) -> bool:
        return self._paused

    def url(self, port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/test"

    def storage(self, url: str, **options: Any) -> SharedStorage:
        return PostgresStorage(dsn=url, **options)

    def query(self, sql: str, *, database: str = "test", timeout: float = 5.0) -> list[Any]:
        """Run ``sql`` on this server without an event loop (rows as tuples of text)."""
        return simple_query(self.port, sql, database=database, timeout=timeout)

    def processes(self) -> list[int]:
        """The pids of the cluster's processes (postmaster, backends, auxiliaries)."""
        return _cluster_pids(self.pid, self.data_dir)

    def log_tail(self, lines: int = 40, *, since_start: bool = False) -> str:
        raw = self.log_path.read_bytes()
        if since_start:
            raw = raw[self._log_offset :]
        return "\n".join(raw.decode("utf-8", "replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the server (initdb first if there is no cluster); a no-op if it runs."""
        if self._closed:
            raise RuntimeError("this PostgresServer is closed")
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            if self.template:
                self._copy_template()
            else:
                self._initdb()
        for attempt in range(5):
            try:
                self._launch()
                break
            except _PortInUse:
                if self._started_once or attempt == 4:
                    raise
                self.port = free_port()
        self._started_once = True
        if self._needs_database:
            began = time.monotonic()
            try:
                self.query("CREATE DATABASE test", database="postgres", timeout=30)
            except PostgresError as exc:
                if exc.sqlstate != "42P04":  # duplicate_database: created before a kill
                    raise
            self._needs_database = False
            self.timings["createdb"] = time.monotonic() - began

    def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGKILL when it takes over ``stop_timeout`` seconds."""
        proc = self._resources.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                self.resume()
            _signal([proc.pid], signal.SIGINT)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
            else:
                if proc.returncode == 0 and not _cluster_pids(None, self.data_dir):
                    self._resources.proc = None
                    self._wait_port_free()
                    return
        self.kill()  # it died on its own, left processes behind, or did not stop in time

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and all its processes, wait until
        they are gone and the port is free. A no-op when it is not running."""
        victims = self._resources.kill()
        self._paused = False
        _wait_until(
            lambda: not any(_alive(pid) for pid in victims),
            KILL_TIMEOUT,
            f"PostgreSQL processes {victims} survived SIGKILL",
        )
        self._wait_port_free()

    def pause(self) -> None:
        """SIGSTOP every process of the server (connections hang; the kernel still
        completes TCP handshakes, so only a timeout on the startup exchange notices)."""
        postmaster = self.pid
        if postmaster is None:
            raise RuntimeError("PostgreSQL is not running")
        _signal([postmaster], signal.SIGSTOP)  # first, so that it forks no new backend
        pids = _cluster_pids(postmaster, self.data_dir)
        _signal(pids, signal.SIGSTOP)
        self._paused = True

        def all_stopped() -> bool:
            states = (_proc_stat(pid) for pid in [postmaster, *pids])
            return all(state is None or state[0] in ("T", "t", "Z", "X") for state in states)

        _wait_until(all_stopped, KILL_TIMEOUT, "PostgreSQL processes did not stop")

    def resume(self) -> None:
        """SIGCONT every process of the server."""
        postmaster = self.pid
        pids = _cluster_pids(postmaster, self.data_dir)
        _signal([pid for pid in pids if pid != postmaster], signal.SIGCONT)
        if postmaster is not None:
            _signal([postmaster], signal.SIGCONT)
        self._paused = False

    def restart(self, keep_data: bool = True) -> None:
        """Stop (a no-op after ``kill()``) and start again on the same port, with the same
        data (``keep_data=True``: crash recovery after a kill) or a fresh empty cluster."""
        self.stop()
        if not keep_data:
            self._resources.discard_data()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> PostgresServer:
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
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<PostgresServer 127.0.0.1:{self.port} {state} {self.root}>"

    # ------------------------------------------------------------------ internals

    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bindir}:{os.defpath}",
            "LC_ALL": "C",
            "LANG": "C",
            "TZ": "UTC",  # spares initdb its time-zone probing
            "HOME": str(self.root),
            "USER": self.os_user,
            "LOGNAME": self.os_user,
        }

    def _initdb(self) -> None:
        self._resources.discard_data()
        self._log_offset = self.log_path.stat().st_size
        command = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--wal-segsize=1",  # 1 MB WAL segments instead of 16 MB: less to write and copy
            "--no-instructions",
        ]
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            try:
                subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    env=self._env(),
                    timeout=INITDB_TIMEOUT,
                    check=True,
                    user=self._run_as.user,
                    group=self._run_as.group,
                    extra_groups=self._run_as.extra_groups,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise RuntimeError(
                    f"initdb failed ({exc}); log tail:\n{self.log_tail(since_start=True)}"
                ) from None
        self.timings["initdb"] = time.monotonic() - began
        self._needs_database = True

    def _copy_template(self) -> None:
        began = time.monotonic()
        source = _template(self.bindir, self.os_user)
        self.timings["template"] = time.monotonic() - began  # ~0 once the template exists
        began = time.monotonic()
        self._resources.discard_data()
        try:
            # cp run as the cluster's user, so that the copy belongs to it.
            subprocess.run(
                ["cp", "-a", str(source), str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.root,
                env=self._env(),
                timeout=INITDB_TIMEOUT,
                check=True,
                user=self._run_as.user,
                group=self._run_as.group,
                extra_groups=self._run_as.extra_groups,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"copying the template cluster failed: {exc.stderr!r}") from None
        self.timings["copy"] = time.monotonic() - began
        self._needs_database = False

    def _launch(self) -> None:
        self._log_offset = self.log_path.stat().st_size
        command = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,  # a Ctrl-C on the test run does not reach it
                user=self._run_as.user,
                group=self._run_as.group,
                extra_groups=self._run_as.extra_groups,
            )
        self._resources.proc = proc
        deadline = began + self.start_timeout
        last: Exception | None = None
        while True:
            code = proc.poll()
            if code is not None:
                self._resources.proc = None
                tail = self.log_tail(since_start=True)
                if "Address already in use" in tail:
                    raise _PortInUse(f"port {self.port} is taken; log tail:\n{tail}")
                raise RuntimeError(
                    f"PostgreSQL exited with status {code} while starting on port "
                    f"{self.port}; log tail:\n{tail}"
                )
            if self._pid_file_says_ready(proc.pid):
                try:
                    self.query("SELECT 1", database="postgres", timeout=1.0)
                except (OSError, PostgresError) as exc:
                    last = exc
                else:
                    self.timings["start"] = time.monotonic() - began
                    return
            if time.monotonic() > deadline:
                self._resources.kill()
                raise TimeoutError(
                    f"PostgreSQL did not accept connections on port {self.port} within "
                    f"{self.start_timeout}s (last error: {last!r}); log tail:\n"
                    f"{self.log_tail(since_start=True)}"
                )
            time.sleep(_POLL)

    def _pid_file_says_ready(self, pid: int) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _wait_port_free(self) -> None:
        _wait_until(
            lambda: port_is_free(self.port),
            KILL_TIMEOUT,
            f"port {self.port} still taken after PostgreSQL stopped",
        )
