"""What the private servers of the tests (tests/slapd.py, tests/postgres.py) have in common.

A ``ManagedServer`` runs one program in the foreground with a private data
folder, its output appended to ``<program>.log`` there. ``start`` returns once
this run has logged its ready line and a real client succeeds (``probe``);
``stop`` sends the server's shutdown signals, then SIGKILL, and reaps it. A
server that exits on start, refuses its client or stalls is stopped, never left
behind, and the error names it with the tail of its log.

``start_on_free_port`` starts a server on free ports, again when another
process took a probed port first; ``short_directory`` gives the short folder a
server's Unix socket needs; ``run_tool`` runs a server's offline tool.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self, TypeVar

from tests.helpers import WaitTimeoutError, wait_until

#: How many lines of a server's log its errors quote.
LOG_TAIL_LINES = 50

#: How long an offline tool (initdb, slapadd, pg_dump, openssl) may take.
TOOL_TIMEOUT = 60.0


class ServerError(RuntimeError):
    """A private server or one of its tools failed; the message carries their output."""


@dataclass
class ManagedServer(ABC):
    """One server program with a private data folder (*directory*), started and stopped here.

    Subclasses name the program, their error class and the log line after
    which clients are tried, and give the command line and one client probe.
    """

    #: The program's name, in messages and in the log file's name.
    program: ClassVar[str]
    #: The class of this server's errors.
    error: ClassVar[type[ServerError]] = ServerError
    #: The log line of a run once it listens on its port(s); probes start after it.
    ready_line: ClassVar[bytes]
    #: The log text of a port in use, retried by start_on_free_port.
    port_in_use: ClassVar[str]
    #: How long the program may take to accept a client, and to exit after each stop signal.
    start_timeout: ClassVar[float] = 10.0
    stop_timeout: ClassVar[float] = 10.0
    #: The signals stop() sends in turn, waiting stop_timeout after each; SIGKILL comes last.
    stop_signals: ClassVar[tuple[signal.Signals, ...]] = (signal.SIGTERM,)

    directory: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach the server, for messages."""

    @abstractmethod
    def command(self) -> list[str]:
        """The program's command line (in the foreground, logging to stderr)."""

    @abstractmethod
    def probe(self) -> bool:
        """One real client: True on success, False to retry; raise failure() on a real error."""

    def popen_options(self) -> dict[str, Any]:
        """More keyword arguments of ``subprocess.Popen`` (``cwd``, ``env``)."""
        return {}

    @property
    def log_path(self) -> Path:
        """The program's stdout and stderr, all runs."""
        return self.directory / f"{self.program}.log"

    @property
    def running(self) -> bool:
        """True while our child process has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the program on the same port(s) and data; return once a client succeeds.

        Does nothing when it is already running. Raises ``error`` with the tail of
        the log when the program exits, refuses the probe or does not answer
        within start_timeout; it is then stopped, never left behind.
        """
        if self.running:
            return
        self.stop()  # reap a server that exited by itself and close its log
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **self.popen_options(),
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Send stop_signals in turn (then SIGKILL) until the program exits; reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            for signal_number in self.stop_signals:
                process.send_signal(signal_number)
                try:
                    process.wait(self.stop_timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        """The whole log so far (all runs)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def failure(self, message: str) -> ServerError:
        """``error`` with *message* and the last LOG_TAIL_LINES lines of the log."""
        tail = "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:])
        return self.error(f"{message}; the end of {self.log_path}:\n{tail}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        """Poll until this run logged ready_line and probe() succeeds; failure() otherwise.

        Clients are tried only after the ready line: the program has bound its
        port(s) by then, so a client cannot reach another process that took a
        port after free_port(). If the program exits first (a port in use, a bad
        setting) the error says so, with its log.
        """

        def ready() -> bool:
            assert self._process is not None
            status = self._process.poll()
            if status is not None:
                raise self.failure(
                    f"{self.directory}: {self.program} exited with status {status} on start"
                )
            return self._logged_ready() and self.probe()

        try:
            wait_until(
                ready,
                f"{self.program} at {self.address} to accept a client",
                timeout=self.start_timeout,
                interval=0.005,
            )
        except WaitTimeoutError as exc:
            raise self.failure(
                f"{self.address}: {self.program} did not accept a client "
                f"within {self.start_timeout} s"
            ) from exc

    def _logged_ready(self) -> bool:
        """True once this run's log has the ready line."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return self.ready_line in log.read()


Server = TypeVar("Server", bound=ManagedServer)


def start_on_free_port(make: Callable[[], Server], attempts: int = 3) -> Server:
    """``make()`` a server (on ports from free_port()) and start it.

    When another process took a port between free_port() and the server's bind
    (its error has ``port_in_use``), a new server is made, *attempts* times at most.
    """
    for attempt in range(1, attempts + 1):
        server = make()
        try:
            server.start()
        except ServerError as exc:
            if server.port_in_use not in str(exc) or attempt == attempts:
                raise
            continue
        return server
    raise AssertionError("attempts must be at least 1")


@contextmanager
def short_directory(prefix: str) -> Iterator[Path]:
    """A new folder ``/tmp/<prefix>XXXXXXXX`` (short enough for a Unix socket); removed after."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_tool(
    command: list[str],
    error: type[ServerError],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    """Run an offline tool and return its stdout; *error* with its output when it fails."""
    try:
        result = subprocess.run(
            command, capture_output=True, check=False, cwd=cwd, env=env, timeout=TOOL_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"{shlex.join(command)}: did not finish in {TOOL_TIMEOUT} s") from exc
    if result.returncode != 0:
        output = (result.stderr + result.stdout).decode("utf-8", "replace")
        raise error(f"{shlex.join(command)}: exit status {result.returncode}\n{output}")
    return result.stdout
