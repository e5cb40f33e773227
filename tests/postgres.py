"""A private PostgreSQL server for tests, on 127.0.0.1 and a private Unix socket directory.

``start_postgres`` runs ``initdb`` (superuser ``coercion`` with a random password,
scram-sha-256, UTF8, locale C, time zone UTC) in the given directory, starts
``postgres`` in the foreground on a free port with durability off (fsync,
synchronous_commit, full_page_writes), returns once a real psycopg connection
succeeds and creates the database ``coercion``. Nothing is written outside the
given directory; the system cluster of Debian's ``postgresql`` package is never used.

PostgreSQL refuses to run as root: when the tests run as root, the directory is
given to the ``postgres`` user and initdb and postgres run as that user through
``setpriv`` (which execs, so our child is the server itself and signals reach it).
The server gets SIGINT (a fast shutdown) when the thread that started it ends,
so a killed pytest leaves no server behind; start servers from the main thread
(as fixtures are), not from a worker thread that ends before the server should.

The fixtures ``postgres`` (one per test) and ``postgres_session`` (one per run;
``fresh_database`` gives a test its own empty database there) are registered by
tests/conftest.py.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

#: The superuser that initdb creates and the database that start_postgres creates.
USER = "coercion"
DATABASE = "coercion"

#: How long postgres may take to accept a connection (it takes about 0.1 s) or to shut down.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: How long initdb (about 0.8 s), createdb and pg_dump may take.
TOOL_TIMEOUT = 60.0

#: The longest Unix socket path (``sun_path`` less its NUL); postgres refuses longer ones.
MAX_SOCKET_PATH = 107

#: The account that runs initdb and postgres when we are root.
SYSTEM_USER = "postgres"

#: The server's settings for tests: no durability, messages in English for _PORT_IN_USE.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "lc_messages": "C",
}

#: postgres's message when its port is taken by someone else between our probe and its bind.
_PORT_IN_USE = "could not bind IPv4 address"

#: The log line of a run once it listens on its port and has finished starting up.
_READY = "database system is ready to accept connections"

#: The server's refusal of a connection while it starts up (SQLSTATE 57P03); retried.
_STARTING_UP = "the database system is starting up"


class PostgresError(RuntimeError):
    """initdb, postgres or pg_dump failed; the message carries their output or the server log."""


@dataclass
class Postgres:
    """A running (or stopped) private PostgreSQL server and what a client needs to reach it."""

    port: int
    password: str
    directory: Path
    #: How to run a server program: empty, or ``setpriv`` to become ``postgres`` when root.
    _run_as: list[str] = field(repr=False)
    _bindir: Path = field(repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``coercion`` database (psycopg 3 driver)."""
        return self.database_url(DATABASE)

    @property
    def dsn(self) -> str:
        """The libpq connection string of the ``coercion`` database, for ``psycopg.connect``."""
        return self.database_dsn(DATABASE)

    @property
    def data_directory(self) -> Path:
        """The cluster made by initdb."""
        return self.directory / "data"

    @property
    def socket_directory(self) -> Path:
        """Where postgres puts its Unix socket (``-k``); clients here use TCP."""
        return self.directory / "s"

    @property
    def log_path(self) -> Path:
        """postgres's stderr (its whole log), all runs."""
        return self.directory / "postgres.log"

    @property
    def running(self) -> bool:
        """True while our postgres child process has not exited."""
        return self._process is not None and self._process.poll() is None

    def database_url(self, database: str) -> str:
        """The SQLAlchemy URL of *database* on this server."""
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def database_dsn(self, database: str) -> str:
        """The libpq connection string of *database* on this server."""
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=database
        )

    def start(self) -> None:
        """Start postgres on the same port and data; return once a connection succeeds.

        Does nothing when it is already running. Raises PostgresError with the
        server's log when it exits or does not accept a connection within
        START_TIMEOUT; it is then stopped, never left behind.
        """
        if self.running:
            return
        self.stop()  # reap a postgres that exited by itself and close its log
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        settings = [
            word for name, value in SERVER_SETTINGS.items() for word in ("-c", f"{name}={value}")
        ]
        command = [
            *self._run_as,
            str(self._bindir / "postgres"),
            "-D",
            str(self.data_directory),
            "-k",
            str(self.socket_directory),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            *settings,
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env=_server_environment(),
        )
        try:
            self._wait_for_connection()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop postgres with a fast shutdown (SIGINT) and reap it. Idempotent.

        After STOP_TIMEOUT it gets SIGQUIT (an immediate shutdown), then SIGKILL.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            for signal_number, timeout in (
                (signal.SIGINT, STOP_TIMEOUT),
                (signal.SIGQUIT, STOP_TIMEOUT),
                (signal.SIGKILL, None),
            ):
                process.send_signal(signal_number)
                try:
                    process.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None

    def dump(self, database: str = DATABASE) -> bytes:
        """*database* as plain SQL from the real ``pg_dump`` (schema and data, as stored).

        Raises PostgresError with pg_dump's stderr when it fails.
        """
        dsn = make_conninfo(host="127.0.0.1", port=self.port, user=USER, dbname=database)
        command = [str(self._bindir / "pg_dump"), "--format=plain", "--no-password", dsn]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                check=False,
                timeout=TOOL_TIMEOUT,
                env={**os.environ, "PGPASSWORD": self.password},  # off the command line
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"{dsn}: pg_dump did not finish in {TOOL_TIMEOUT} s") from exc
        if result.returncode != 0:
            raise PostgresError(
                f"{dsn}: pg_dump: exit status {result.returncode}\n"
                f"{result.stderr.decode('utf-8', 'replace')}"
            )
        return result.stdout

    def log(self) -> str:
        """The server's log so far, for error messages."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _wait_for_connection(self) -> None:
        """Poll until a psycopg connection succeeds; PostgresError if postgres exits or stalls.

        Connections are tried only once this run has logged that it is ready to
        accept connections: postgres has bound its port before that, so a
        connection cannot reach another process that took the port after
        free_port(), and a failure then is real (only "starting up" is retried).
        If postgres exits first (a port in use, a bad setting) its log is in the error.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._process is not None
            returncode = self._process.poll()
            if returncode is not None:
                raise PostgresError(
                    f"{self.directory}: postgres exited with status {returncode} on start; "
                    f"its log:\n{self.log()}"
                )
            if self._ready() and self._connect():
                return
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"127.0.0.1:{self.port}: postgres did not accept a connection within "
                    f"{START_TIMEOUT} s; its log:\n{self.log()}"
                )
            time.sleep(0.005)

    def _ready(self) -> bool:
        """True once this run's log says it accepts connections."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return _READY.encode() in log.read()

    def _connect(self) -> bool:
        """One real connection to the ``postgres`` database: True on success, False to retry.

        Any failure but "starting up" (a bad password, say) is a PostgresError with
        the server's log at once, not after START_TIMEOUT. psycopg gives no SQLSTATE
        for a failed connection, hence the message (lc_messages is C).
        """
        try:
            with psycopg.connect(self.database_dsn("postgres"), connect_timeout=5):
                return True
        except psycopg.OperationalError as exc:
            if _STARTING_UP in str(exc):
                return False
            raise PostgresError(
                f"127.0.0.1:{self.port}: connecting as {USER} failed: {exc}; "
                f"the server's log:\n{self.log()}"
            ) from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_postgres(directory: Path) -> Postgres:
    """Make a cluster in *directory* (which should be short: it holds the socket) and start it.

    *directory* may exist but must not hold a ``data`` directory yet. When we are
    root it is given to the ``postgres`` user, who must be able to reach it
    (``tempfile.mkdtemp(prefix="pg", dir="/tmp")`` will do). The server has the
    superuser ``coercion`` with a random password and the empty database ``coercion``.
    Raises PostgresError with the tools' output or the server's log on any failure.
    """
    directory = directory.resolve()
    bindir = find_bindir()
    socket_path = directory / "s" / ".s.PGSQL.65535"
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise PostgresError(
            f"{socket_path}: too long for a Unix socket; "
            'use a short directory such as tempfile.mkdtemp(prefix="pg", dir="/tmp")'
        )
    if (directory / "data").exists():
        raise PostgresError(f"{directory / 'data'}: exists already; give an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "s").mkdir(mode=0o700, exist_ok=True)
    run_as = _run_as(directory)
    password = secrets.token_hex(16)
    _initdb(bindir, directory, password, run_as)
    last_error: PostgresError | None = None
    for _ in range(3):
        server = Postgres(free_port(), password, directory, run_as, bindir)
        try:
            server.start()
        except PostgresError as exc:
            if _PORT_IN_USE not in str(exc):
                raise
            last_error = exc  # taken by another process between free_port() and the bind
            continue
        try:
            _create_database(server, DATABASE)
        except BaseException:
            server.stop()
            raise
        return server
    assert last_error is not None
    raise last_error


def fresh_database(server: Postgres) -> str:
    """Create a new empty database with a unique name on *server*; return its SQLAlchemy URL."""
    name = f"t_{secrets.token_hex(8)}"
    _create_database(server, name)
    return server.database_url(name)


def _create_database(server: Postgres, name: str) -> None:
    """CREATE DATABASE *name* (an empty copy of template1) as the superuser."""
    with psycopg.connect(server.database_dsn("postgres"), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def find_bindir() -> Path:
    """The directory of initdb and postgres: ``pg_config --bindir``, else the newest
    /usr/lib/postgresql/*/bin (Debian's pg_config may belong to another version's libpq-dev).
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
        reverse=True,
    )
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "postgres", "pg_dump")):
            return bindir
    raise PostgresError(
        "initdb, postgres and pg_dump: not found in `pg_config --bindir` or "
        "/usr/lib/postgresql/*/bin; install them: apt-get install -y postgresql"
    )


def _run_as(directory: Path) -> list[str]:
    """The command prefix of server programs; when root, hand *directory* to ``postgres``.

    ``setpriv`` execs the program, so our SIGINT reaches postgres (``runuser`` stays
    as its parent, does not pass SIGINT on, and answers SIGTERM with SIGTERM then
    SIGKILL to its child). ``--pdeathsig`` makes the server shut down when the
    thread that started it ends without stopping it.
    """
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    prefix = [setpriv, "--pdeathsig=INT"]
    if os.geteuid() != 0:
        return [*prefix, "--"]
    try:
        account = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(
            f"{SYSTEM_USER}: no such user; postgres refuses to run as root; "
            "install the postgresql package (apt-get install -y postgresql) or run as non-root"
        ) from None
    _check_reachable(directory, account)
    for path in (directory, directory / "s"):
        os.chown(path, account.pw_uid, account.pw_gid)
    return [
        *prefix,
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--init-groups",
        "--",
    ]


def _check_reachable(directory: Path, account: pwd.struct_passwd) -> None:
    """PostgresError unless *account* may search every directory above *directory*."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in directory.parents:
        status = parent.stat()
        if status.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif status.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not status.st_mode & bit:
            owner = f"{pwd.getpwuid(status.st_uid).pw_name}:{grp.getgrgid(status.st_gid).gr_name}"
            raise PostgresError(
                f"{directory}: the {account.pw_name} user cannot reach it ({parent} is "
                f"{stat.filemode(status.st_mode)} {owner}); use a directory it can reach, "
                'such as tempfile.mkdtemp(prefix="pg", dir="/tmp")'
            )


def _initdb(bindir: Path, directory: Path, password: str, run_as: list[str]) -> None:
    """Run initdb into ``directory/data``; PostgresError with its output when it fails."""
    password_file = directory / "password"
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n", encoding="utf-8")
    if os.geteuid() == 0:
        status = directory.stat()
        os.chown(password_file, status.st_uid, status.st_gid)
    command = [
        *run_as,
        str(bindir / "initdb"),
        "-D",
        str(directory / "data"),
        "--auth=scram-sha-256",
        f"--username={USER}",
        f"--pwfile={password_file}",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",  # the data of a test need not survive a crash of the machine
        "--no-instructions",
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=directory,
            env=_server_environment(),
            timeout=TOOL_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresError(f"{directory}: initdb did not finish in {TOOL_TIMEOUT} s") from exc
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise PostgresError(
            f"{' '.join(command)}: exit status {result.returncode}\n{result.stderr}{result.stdout}"
        )


def _server_environment() -> dict[str, str]:
    """The environment of initdb and postgres: ours, in locale C and time zone UTC."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("PG", "LC_"))
    }
    return {**environment, "LC_ALL": "C", "TZ": "UTC"}


def _temporary_postgres() -> Iterator[Postgres]:
    """Start a server in a short temporary directory; stop it and remove the directory after."""
    directory = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    server: Postgres | None = None
    try:
        server = start_postgres(directory)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL server with an empty database ``coercion`` (``url``, ``dsn``)."""
    yield from _temporary_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: SQLite in the test's folder, then a fresh database of the session's server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return fresh_database(request.getfixturevalue("postgres_session"))


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[Postgres]:
    """One private PostgreSQL server for the whole run; tests take ``fresh_database`` of it."""
    yield from _temporary_postgres()
