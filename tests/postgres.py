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
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.helpers import free_port
from tests.servers import ManagedServer, ServerError, run_tool, short_directory, start_on_free_port

#: The superuser that initdb creates and the database that start_postgres creates.
USER = "coercion"
DATABASE = "coercion"

#: The longest Unix socket path (``sun_path`` less its NUL); postgres refuses longer ones.
MAX_SOCKET_PATH = 107

#: The account that runs initdb and postgres when we are root.
SYSTEM_USER = "postgres"

#: The server's settings for tests: no durability, messages in English for port_in_use.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "lc_messages": "C",
}

#: The server's refusal of a connection while it starts up (SQLSTATE 57P03); retried.
_STARTING_UP = "the database system is starting up"


class PostgresError(ServerError):
    """initdb, postgres or pg_dump failed; the message carries their output or the server log."""


@dataclass
class Postgres(ManagedServer):
    """A running (or stopped) private PostgreSQL server and what a client needs to reach it."""

    program: ClassVar[str] = "postgres"
    error: ClassVar[type[ServerError]] = PostgresError
    ready_line: ClassVar[bytes] = b"database system is ready to accept connections"
    port_in_use: ClassVar[str] = "could not bind IPv4 address"
    #: postgres accepts a connection after about 0.1 s.
    start_timeout: ClassVar[float] = 30.0
    #: A fast shutdown (SIGINT), then an immediate one (SIGQUIT), then SIGKILL.
    stop_signals: ClassVar[tuple[signal.Signals, ...]] = (signal.SIGINT, signal.SIGQUIT)

    port: int
    password: str
    #: How to run a server program: ``setpriv``, becoming ``postgres`` when root.
    _run_as: list[str] = field(repr=False)
    _bindir: Path = field(repr=False)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``coercion`` database (psycopg 3 driver)."""
        return self.database_url(DATABASE)

    @property
    def dsn(self) -> str:
        """The libpq connection string of the ``coercion`` database, for ``psycopg.connect``."""
        return self.database_dsn(DATABASE)

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def data_directory(self) -> Path:
        """The cluster made by initdb."""
        return self.directory / "data"

    @property
    def socket_directory(self) -> Path:
        """Where postgres puts its Unix socket (``-k``); clients here use TCP."""
        return self.directory / "s"

    def database_url(self, database: str) -> str:
        """The SQLAlchemy URL of *database* on this server."""
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def database_dsn(self, database: str) -> str:
        """The libpq connection string of *database* on this server."""
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=database
        )

    def command(self) -> list[str]:
        """``postgres`` on 127.0.0.1:port and the private socket folder, with SERVER_SETTINGS."""
        settings = [
            word for name, value in SERVER_SETTINGS.items() for word in ("-c", f"{name}={value}")
        ]
        return [
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

    def popen_options(self) -> dict[str, Any]:
        """In its folder, in locale C and time zone UTC."""
        return {"cwd": self.directory, "env": _server_environment()}

    def probe(self) -> bool:
        """One real connection to the ``postgres`` database: True on success, False to retry.

        Any failure but "starting up" (a bad password, say) is a PostgresError with
        the server's log at once, not after start_timeout. psycopg gives no SQLSTATE
        for a failed connection, hence the message (lc_messages is C).
        """
        try:
            with psycopg.connect(self.database_dsn("postgres"), connect_timeout=5):
                return True
        except psycopg.OperationalError as exc:
            if _STARTING_UP in str(exc):
                return False
            raise self.failure(f"{self.address}: connecting as {USER} failed: {exc}") from exc

    def dump(self, database: str = DATABASE) -> bytes:
        """*database* as plain SQL from the real ``pg_dump`` (schema and data, as stored).

        Raises PostgresError with pg_dump's stderr when it fails.
        """
        dsn = make_conninfo(host="127.0.0.1", port=self.port, user=USER, dbname=database)
        command = [str(self._bindir / "pg_dump"), "--format=plain", "--no-password", dsn]
        # The password in the environment, off the command line.
        return run_tool(command, PostgresError, env={**os.environ, "PGPASSWORD": self.password})


def start_postgres(directory: Path) -> Postgres:
    """Make a cluster in *directory* (which should be short: it holds the socket) and start it.

    *directory* may exist but must not hold a ``data`` directory yet. When we are
    root it is given to the ``postgres`` user, who must be able to reach it
    (``short_directory("pg")`` will do). The server has the superuser ``coercion``
    with a random password and the empty database ``coercion``. Raises
    PostgresError with the tools' output or the server's log on any failure.
    """
    directory = directory.resolve()
    bindir = find_bindir()
    socket_path = directory / "s" / ".s.PGSQL.65535"
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise PostgresError(
            f"{socket_path}: too long for a Unix socket; "
            'use a short directory such as tests.servers.short_directory("pg")'
        )
    if (directory / "data").exists():
        raise PostgresError(f"{directory / 'data'}: exists already; give an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "s").mkdir(mode=0o700, exist_ok=True)
    run_as = _run_as(directory)
    password = secrets.token_hex(16)
    _initdb(bindir, directory, password, run_as)
    server = start_on_free_port(
        lambda: Postgres(
            directory, port=free_port(), password=password, _run_as=run_as, _bindir=bindir
        )
    )
    try:
        _create_database(server, DATABASE)
    except BaseException:
        server.stop()
        raise
    return server


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
                'such as tests.servers.short_directory("pg")'
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
        run_tool(command, PostgresError, cwd=directory, env=_server_environment())
    finally:
        password_file.unlink(missing_ok=True)


def _server_environment() -> dict[str, str]:
    """The environment of initdb and postgres: ours, in locale C and time zone UTC."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("PG", "LC_"))
    }
    return {**environment, "LC_ALL": "C", "TZ": "UTC"}


def _temporary_postgres() -> Iterator[Postgres]:
    """Start a server in a short temporary directory; stop it and remove the directory after."""
    with short_directory("pg") as directory, start_postgres(directory) as server:
        yield server


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
