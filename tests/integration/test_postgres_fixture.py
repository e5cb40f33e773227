"""The private PostgreSQL server of tests/postgres.py, reached through SQLAlchemy and psycopg."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from tests.helpers import free_port
from tests.postgres import Postgres, PostgresError, fresh_database, start_postgres
from tests.servers import short_directory

pytestmark = pytest.mark.integration

#: A value no template database holds, to find in the dump.
MARKER = "coercion-marker-7f3c9a"


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on *url*, disposed afterwards (its pooled connections closed)."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _insert_marker(url: str) -> None:
    with _engine(url) as engine, engine.begin() as connection:
        connection.execute(text("CREATE TABLE marker (id integer PRIMARY KEY, value text)"))
        connection.execute(text("INSERT INTO marker VALUES (1, :value)"), {"value": MARKER})


def _markers(url: str) -> list[str]:
    with _engine(url) as engine, engine.connect() as connection:
        return list(connection.execute(text("SELECT value FROM marker ORDER BY id")).scalars())


def test_sqlalchemy_creates_table_and_reads_row_back(postgres: Postgres) -> None:
    """A table created and filled through SQLAlchemy reads back on the ``coercion`` database."""
    assert postgres.url.startswith("postgresql+psycopg://coercion:")
    assert postgres.url.endswith(f"@127.0.0.1:{postgres.port}/coercion")
    _insert_marker(postgres.url)
    assert _markers(postgres.url) == [MARKER]
    with psycopg.connect(postgres.dsn) as connection:
        row = connection.execute("SELECT current_database(), current_user").fetchone()
    assert row == ("coercion", "coercion")


def test_stop_then_start_keeps_port_and_data(postgres: Postgres) -> None:
    """After stop() (twice) and start() the same URL reaches the same rows; stop() reaps."""
    _insert_marker(postgres.url)
    process = postgres._process
    assert process is not None
    postgres.stop()
    postgres.stop()
    assert not postgres.running
    assert process.returncode == 0  # a clean fast shutdown, reaped by stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.dsn, connect_timeout=2).close()
    postgres.start()
    postgres.start()  # already running: nothing happens
    assert postgres.running
    assert _markers(postgres.url) == [MARKER]


def test_fresh_database_is_empty_and_separate(postgres_session: Postgres) -> None:
    """fresh_database gives a new database with no tables, apart from ``coercion``'s."""
    first = fresh_database(postgres_session)
    second = fresh_database(postgres_session)
    assert first != second
    _insert_marker(first)
    with _engine(second) as engine:
        assert inspect(engine).get_table_names() == []
    with _engine(postgres_session.url) as engine:
        assert "marker" not in inspect(engine).get_table_names()
    assert _markers(first) == [MARKER]


def test_dump_holds_inserted_value(postgres: Postgres) -> None:
    """dump() is pg_dump's plain SQL of the database, with the rows' values in it."""
    assert MARKER.encode() not in postgres.dump()
    _insert_marker(postgres.url)
    dump = postgres.dump()
    assert b"CREATE TABLE public.marker" in dump
    assert MARKER.encode() in dump
    assert postgres.password.encode() not in dump


def test_second_server_on_same_data_fails_with_log(postgres: Postgres) -> None:
    """A server that exits on start raises PostgresError with its log, and is reaped."""
    second = dataclasses.replace(postgres, port=free_port())
    with pytest.raises(PostgresError, match=r"exited with status 1 on start(.|\n)*postmaster\.pid"):
        second.start()
    assert not second.running
    assert postgres.running
    _insert_marker(postgres.url)
    assert _markers(postgres.url) == [MARKER]


def test_start_postgres_refuses_bad_directory() -> None:
    """start_postgres on a used or too long directory fails with a readable error."""
    with short_directory("pg") as directory:
        (directory / "data").mkdir()
        with pytest.raises(PostgresError, match="data: exists already"):
            start_postgres(directory)
        with pytest.raises(PostgresError, match="too long for a Unix socket"):
            start_postgres(directory / ("x" * 100))
