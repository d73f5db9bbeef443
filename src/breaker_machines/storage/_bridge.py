"""Run asyncio-only drivers (redis-py's ``redis.asyncio``, asyncpg) from any event loop.

Under asyncio a storage simply awaits its driver: :class:`DirectExecutor`. Under trio the
driver cannot run on the caller's loop, so the storage starts a :class:`LoopThread`: one
dedicated thread running an asyncio event loop, on which every driver call runs as an
asyncio task. The calling task waits for the result without blocking its own loop and
without a worker thread per call: the task's completion wakes it through the trio token
(or, for an asyncio caller, through ``call_soon_threadsafe``).

:func:`executor_for_current_loop` picks the right one for the running loop. trio is
imported lazily, so this module imports (and :class:`DirectExecutor` works) without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError as FutureCancelledError
from concurrent.futures import Future
from typing import Any, ParamSpec, Protocol, TypeVar

__all__ = ["DirectExecutor", "Executor", "LoopThread", "executor_for_current_loop"]

P = ParamSpec("P")
T = TypeVar("T")

_DEFAULT_NAME = "breaker-machines-asyncio"


class Executor(Protocol):
    """Runs an async driver function where the driver can run."""

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on the driver's loop and return its result.

        An exception raised by ``fn`` propagates to the caller unchanged.
        """
        ...

    async def aclose(self) -> None:
        """Release whatever the executor holds (a thread, a loop); safe to call twice."""
        ...


class DirectExecutor:
    """The executor for asyncio callers: the driver runs on the caller's own loop."""

    __slots__ = ()

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` right here and return its result."""
        return await fn(*args, **kwargs)

    async def aclose(self) -> None:
        """Nothing to release."""


class _Raised:
    """What a bridged call raised, carried as a result so it reaches the caller untouched.

    Letting the asyncio task fail instead would copy some exceptions on the way through
    ``concurrent.futures`` (a ``TimeoutError`` becomes a new object without its traceback),
    and a ``KeyboardInterrupt`` or ``SystemExit`` would escape ``run_forever`` and kill the
    loop thread.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_NEW, _RUNNING, _CLOSED = "new", "running", "closed"


class LoopThread:
    """An asyncio event loop in one dedicated thread, started and stopped by its owner.

    :meth:`start` creates the loop and the (non-daemon) thread; :meth:`run` runs a driver
    function there as an asyncio task, from a trio task (the intended caller) or an asyncio
    task of another loop; :meth:`aclose` cancels what is still running, stops and closes the
    loop and joins the thread. A loop thread is started once and cannot be restarted.

    Cancelling a caller of :meth:`run` cancels the asyncio task behind it, and the caller
    returns at once, without waiting for that task to finish unwinding.
    """

    __slots__ = ("_finished", "_lock", "_loop", "_name", "_state", "_thread")

    def __init__(self, name: str = _DEFAULT_NAME) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finished: Future[None] = Future()

    def __repr__(self) -> str:
        return f"<LoopThread {self._name!r} {self._state}>"

    @property
    def name(self) -> str:
        """The name of the thread (and of this loop thread in error messages)."""
        return self._name

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The asyncio loop the calls run on, once started (for diagnostics and tests)."""
        return self._loop

    @property
    def thread(self) -> threading.Thread | None:
        """The thread running the loop, once started (for diagnostics and tests)."""
        return self._thread

    def start(self) -> None:
        """Create the loop, start its thread, and return once the loop is running.

        Raises RuntimeError if this loop thread was already started (or closed).
        """
        ready = threading.Event()
        with self._lock:
            if self._state != _NEW:
                raise RuntimeError(f"{self._name} was already started or closed; start it once")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._main, args=(loop, ready), name=self._name, daemon=False
            )
            try:
                thread.start()
            except BaseException:
                loop.close()
                raise
            self._loop = loop
            self._thread = thread
            self._state = _RUNNING
        ready.wait()

    def _main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        """The thread: run the loop until stopped, then drain it and close it."""
        try:
            loop.call_soon(ready.set)
            loop.run_forever()
            # Stopped by aclose(), which let no call in after asking: cancel every task
            # still on the loop (and any its cancellation spawns), then let them finish.
            while tasks := asyncio.all_tasks(loop):
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            try:
                loop.close()
            finally:
                ready.set()
                self._finished.set_result(None)

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` as a task on the loop thread; return its result.

        ``fn`` is called on the loop thread, so whatever it creates binds to that loop. An
        exception it raises reaches the caller unchanged (the same object). The caller's
        loop keeps running meanwhile, and no thread is used per call. If the loop thread
        is closed before the call finishes, RuntimeError is raised.

        Raises RuntimeError if the loop thread is not running (not started, or closed).
        """
        library = _current_library()

        async def call() -> T | _Raised:
            # Runs on the loop thread: fn is called there, inside the running loop.
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                return _Raised(exc)

        coro = call()
        with self._lock:
            if self._state != _RUNNING or self._loop is None:
                coro.close()
                raise RuntimeError(f"{self._name} is not running")
            try:
                future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            except BaseException:
                coro.close()
                raise
        await _wait(library, future, cancel=True)
        try:
            result = future.result()
        except FutureCancelledError:
            raise RuntimeError(
                f"the call was cancelled on {self._name}'s event loop before it finished"
                " (the loop thread was closed, or the driver cancelled it)"
            ) from None
        if isinstance(result, _Raised):
            exc = result.exc
            try:
                raise exc
            finally:
                del exc, result
        return result

    async def aclose(self) -> None:
        """Cancel the tasks still on the loop, stop and close it, and join the thread.

        The caller's loop keeps running while the thread winds down; if the caller is
        cancelled meanwhile, the thread still finishes on its own. Calling it again does
        nothing but wait, if needed, for the thread to end. Before :meth:`start`, it only
        marks the loop thread closed, for good.
        """
        with self._lock:
            state, self._state = self._state, _CLOSED
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if state == _RUNNING:
            # RuntimeError: the loop already stopped and closed on its own.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        if not self._finished.done():
            await _wait(_current_library(), self._finished, cancel=False)
        thread.join()


def executor_for_current_loop(name: str = _DEFAULT_NAME) -> Executor:
    """The executor for the running event loop.

    Under asyncio, a :class:`DirectExecutor`; under trio, a started :class:`LoopThread`
    called ``name`` (the caller owns it and must :meth:`~LoopThread.aclose` it). Raises
    RuntimeError under any other library, or outside an event loop.
    """
    library = _current_library()
    if library == "asyncio":
        return DirectExecutor()
    if library == "trio":
        executor = LoopThread(name)
        executor.start()
        return executor
    raise RuntimeError(
        f"breaker-machines storages run under asyncio or trio, not under {library!r}"
    )


def _current_library() -> str:
    """The async library running in this thread: ``"asyncio"``, ``"trio"``, ..."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio needs sniffio, so only asyncio can run
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("no async library is running in this thread") from None
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("no async library is running in this thread") from None


async def _wait(library: str, future: Future[Any], *, cancel: bool) -> None:
    """Wait until ``future`` (completed on another thread) is done, without blocking.

    If the waiting task is cancelled, ``future`` is cancelled too when ``cancel`` is set
    (when it already finished, the result wins and the cancellation shows at the next
    checkpoint); otherwise the task stops waiting and ``future`` runs on.
    """
    if library == "trio":
        await _wait_trio(future, cancel=cancel)
    elif library == "asyncio":
        await _wait_asyncio(future, cancel=cancel)
    else:
        raise RuntimeError(f"a LoopThread is awaited from asyncio or trio, not from {library!r}")


async def _wait_trio(future: Future[Any], *, cancel: bool) -> None:
    """:func:`_wait` for a trio task: parked, and rescheduled through the trio token."""
    import trio

    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()
    # Read and written on the trio thread only (wake runs there through the token).
    aborted = False

    def wake() -> None:
        if not aborted:
            trio.lowlevel.reschedule(task)

    def on_done(_: Future[Any]) -> None:
        # Runs on the loop thread, or on the trio thread when the future is already done
        # or is cancelled by abort() below.
        with contextlib.suppress(trio.RunFinishedError):  # the trio run is over
            token.run_sync_soon(wake)

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        nonlocal aborted
        if cancel and not future.cancel():
            # Already finished: on_done has run or is about to, and wake() will
            # reschedule this task; trio delivers the cancellation at its next checkpoint.
            return trio.lowlevel.Abort.FAILED
        aborted = True
        return trio.lowlevel.Abort.SUCCEEDED

    future.add_done_callback(on_done)
    await trio.lowlevel.wait_task_rescheduled(abort)


async def _wait_asyncio(future: Future[Any], *, cancel: bool) -> None:
    """:func:`_wait` for an asyncio task (of another loop than the loop thread's)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def on_done(_: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed
            loop.call_soon_threadsafe(wake)

    future.add_done_callback(on_done)
    try:
        await waiter
    except asyncio.CancelledError:
        if cancel:
            future.cancel()
        raise
