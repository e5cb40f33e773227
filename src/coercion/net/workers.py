"""``coercion serve --workers N``: N processes serving one listening socket.

The Python interpreter runs one thread at a time, so one process cannot use
more than one core for the work associations do (reading, coercing,
encoding). With N workers the supervisor (the ``serve`` process itself)
binds and listens once, then starts N worker processes that each build their
own node (directory watcher, engine, store connections, forwarder) and accept
connections from that one socket. The socket is non-blocking: every worker
waits on it, the first to call ``accept()`` gets the connection and the others
find nothing and wait again, so a busy worker leaves new associations to an idle
one. Binding once keeps "port in use" an error at start (``SO_REUSEPORT`` would
let a second node on the same port share its connections silently).

What must be one across the node stays one across the processes:

* forwarding: the sender of a destination's queue holds :class:`ExclusiveLock`
  on a file in that queue's folder (``flock``); the senders of the other workers
  wait for it. The kernel releases the lock of a process that dies, and another
  worker's sender takes the queue over;
* association limits: each admitted association holds one of
  ``coercionMaxAssociations`` lock files (and one of its address's), see
  :class:`LockSlots`;
* the audit trail: each line is one ``write()`` to a file opened with
  ``O_APPEND``, under an ``flock`` (see :mod:`coercion.net.audit`);
* MPPS records: each N-CREATE or N-SET reads and rewrites its record while it
  holds an ``flock`` on ``DATA/mpps/.lock`` (:func:`exclusive`), so two workers
  never merge into the same record at once;
* the pseudonym store: its transactions are safe between processes (SQLite in
  WAL mode with the write lock taken first, or PostgreSQL row locks);
* stored objects, queue entries and snapshots are written to unique temporary
  files and renamed into place; the temporaries an earlier run left are removed
  once, by the supervisor, before any worker starts.

The supervisor restarts a worker that exits on its own (logged, with its exit
status; again and again with a growing delay when it dies soon after its
start). SIGTERM or SIGINT to the supervisor stops every worker (each lets its
associations finish) and a worker whose supervisor is gone stops itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Protocol

from coercion.dicom.outputs import private_folders
from coercion.errors import CoercionError

__all__ = [
    "ExclusiveLock",
    "LockSlots",
    "Servable",
    "Supervisor",
    "WorkerFailedError",
    "exclusive",
    "listen",
    "worker_count",
]

log = logging.getLogger(__name__)

#: Seconds between checks of the workers (and, in a worker, of its supervisor).
_CHECK_INTERVAL = 0.5
#: A worker that exits within this many seconds of its start is restarted after a delay.
_EARLY_EXIT = 10.0
_MAX_RESTART_DELAY = 30.0
_PR_SET_PDEATHSIG = 1
#: Seconds a stopping worker has beyond its node's grace before it is killed.
_STOP_MARGIN = 45.0


class WorkerFailedError(Exception):
    """A worker did not get to serving at start (its reason is in its log lines)."""


class Servable(Protocol):
    """What a worker runs: a node that listens on a given socket until stopped."""

    @property
    def ae_titles(self) -> list[str]: ...

    def start(self, listen: tuple[str, int] | socket.socket | None = None) -> tuple[str, int]: ...

    def stop(self, grace: float = 10.0) -> None: ...


#: Builds worker *index*'s node in the worker process (picklable: a module-level function
#: or a functools.partial of one).
NodeFactory = Callable[[int], Servable]


def worker_count(requested: int) -> int:
    """The number of workers: *requested*, or one per core when it is 0."""
    return requested or os.cpu_count() or 1


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on *host*:*port* (0: a free port).

    Each worker's node adopts it (:func:`coercion.net.adapt.start_server`, which
    also sets TCP_NODELAY). Raises OSError (socket.gaierror for an unknown host).
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on *path* (created if need be) for the ``with`` block.

    Waits until the lock is free. Each call opens the file anew, so the lock
    excludes the other threads of this process as well as other processes.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases its flock


class ExclusiveLock:
    """An exclusive ``flock`` on a file, taken without waiting; one holder across processes.

    The lock belongs to the open file: a second :class:`ExclusiveLock` on the
    same path (in this process or another) cannot take it until :meth:`release`
    or the holder's exit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd >= 0

    def acquire(self) -> bool:
        """Take the lock if it is free; whether it is held now."""
        if self._fd >= 0:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (nothing when not held)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the file releases its flock


class LockSlots:
    """Numbered lock files (``NAME.0``, ``NAME.1`` ...) in *folder*: a held one is a slot taken.

    Counts shared by processes (the associations running in every worker of a node):
    taking a slot is an ``flock`` on the first free file; the slot is free again when its
    descriptor is closed, or when the process holding it ends.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        private_folders(folder)

    def take(self, name: str, count: int) -> int | None:
        """The descriptor of a slot of *name* now held, or None when all *count* are taken."""
        for index in range(count):
            fd = self._open(name, index)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return fd
        return None

    def taken(self, name: str, count: int) -> int:
        """How many of the first *count* slots of *name* are held (by anyone)."""
        held = 0
        for index in range(count):
            fd = self._open(name, index)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
            finally:
                os.close(fd)
        return held

    def remove_free(self) -> int:
        """Remove the slot files nobody holds (one set per remote address piles up
        otherwise); how many were removed. Done once at start, before any worker serves."""
        removed = 0
        for path in self.folder.iterdir():
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()  # while holding it: nobody takes it meanwhile
                removed += 1
            except BlockingIOError:
                pass  # held: a slot in use
            finally:
                os.close(fd)
        return removed

    def _open(self, name: str, index: int) -> int:
        path = self.folder / f"{name}.{index}"
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@dataclass
class _Worker:
    """One worker process and what the supervisor knows of it."""

    index: int
    process: SpawnProcess
    ready: Connection
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    restart_at: float = 0.0  # when a dead worker is started again (0: it is running)

    @property
    def pid(self) -> int:
        """The process id (0 before the process started)."""
        return self.process.pid or 0


class Supervisor:
    """Start, watch (restart) and stop the worker processes of a node."""

    def __init__(self, count: int, factory: NodeFactory, listener: socket.socket) -> None:
        self.count = count
        self.factory = factory
        self.listener = listener
        self._context = multiprocessing.get_context("spawn")  # no threads or locks inherited
        self._workers: list[_Worker] = []
        self._stopping = False

    def start(self, timeout: float = 120.0) -> list[str]:
        """Start every worker and wait until each serves; the AE titles the first one reported.

        Raises WorkerFailedError (after stopping the others) when one exits or
        does not report within *timeout* seconds.
        """
        self._workers = [self._spawn(index) for index in range(1, self.count + 1)]
        titles: list[str] = []
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            message = self._await_ready(worker, deadline)
            if message is None:
                self.stop()
                raise WorkerFailedError(
                    f"worker {worker.index} did not start serving; its log lines above say why"
                )
            titles = titles or message
        return titles

    def _spawn(self, index: int) -> _Worker:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_run_worker,
            args=(index, self.factory, self.listener, sender, os.getpid()),
            name=f"coercion-worker-{index}",
        )
        process.start()
        sender.close()  # the child's end: the parent sees EOF when the child exits
        log.info("worker %d started (pid %s)", index, process.pid)
        return _Worker(index, process, receiver)

    @staticmethod
    def _await_ready(worker: _Worker, deadline: float) -> list[str] | None:
        """The AE titles *worker* reports once it serves, or None when it exits or is late."""
        while time.monotonic() < deadline:
            if worker.ready.poll(_CHECK_INTERVAL):
                try:
                    titles: list[str] = worker.ready.recv()
                except EOFError:
                    return None  # exited before it served
                return titles
        return None

    def check(self) -> None:
        """Restart the workers that exited (each one logged); call it regularly."""
        now = time.monotonic()
        for position, worker in enumerate(self._workers):
            if self._stopping:
                return
            if not worker.restart_at:
                if worker.process.is_alive():
                    continue
                self._exited(worker, now)
            if now >= worker.restart_at:
                restarted = self._spawn(worker.index)
                restarted.restarts = worker.restarts
                self._workers[position] = restarted

    @staticmethod
    def _exited(worker: _Worker, now: float) -> None:
        """Log a worker that exited on its own; set when it starts again."""
        worker.process.join()
        worker.ready.close()
        # Exits soon after start in a row (a bad environment): 1, 2, 4 ... 30 s apart.
        worker.restarts = worker.restarts + 1 if now - worker.started < _EARLY_EXIT else 0
        delay = min(2.0 ** (worker.restarts - 1), _MAX_RESTART_DELAY) if worker.restarts else 0.0
        worker.restart_at = now + delay
        log.error(
            "worker %d (pid %s) exited unexpectedly (%s); starting it again%s",
            worker.index,
            worker.pid,
            _exit_status(worker.process.exitcode),
            f" in {delay:.0f} s" if delay else "",
        )

    def wait(self, stopping: threading.Event) -> None:
        """Watch the workers until *stopping* is set."""
        while not stopping.is_set():
            sentinels = [w.process.sentinel for w in self._workers if not w.restart_at]
            if sentinels:
                wait(sentinels, timeout=_CHECK_INTERVAL)
            else:  # every worker waits to be started again
                stopping.wait(_CHECK_INTERVAL)
            if not stopping.is_set():
                self.check()

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [w.pid for w in self._workers if w.pid and not w.restart_at]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every worker, wait until they stopped (associations finish), kill the rest."""
        self._stopping = True
        running = [w for w in self._workers if not w.restart_at and w.process.is_alive()]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + _STOP_MARGIN
        for worker in running:
            worker.process.join(max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                log.error("worker %d (pid %s) did not stop; killed", worker.index, worker.pid)
                worker.process.kill()
                worker.process.join(5)
        for worker in self._workers:
            worker.ready.close()
        self.listener.close()


def _exit_status(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _stop_with(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent dies (Linux).

    Elsewhere the worker's loop notices a new parent process id instead.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before that
        os.kill(os.getpid(), signal.SIGTERM)


def _run_worker(
    index: int, factory: NodeFactory, listener: socket.socket, ready: Connection, parent: int
) -> None:
    """A worker process: build the node, serve on *listener* until SIGTERM, SIGINT or orphaned."""
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _stop_with(parent)
    try:
        node = factory(index)
        listener.setblocking(False)  # shared: another worker may take a connection first
        node.start(listener)
    except CoercionError as exc:
        log.error("worker %d: %s", index, exc)
        sys.exit(exc.exit_code)
    log.info("worker %d (pid %d) serving", index, os.getpid())
    ready.send(list(node.ae_titles))
    ready.close()
    try:
        while not stopping.wait(_CHECK_INTERVAL):
            if os.getppid() != parent:
                log.error("worker %d: the supervising process is gone; stopping", index)
                break
    finally:
        node.stop()
        log.info("worker %d (pid %d) stopped", index, os.getpid())
