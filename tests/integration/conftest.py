"""Fixtures of the integration tests.

``serve`` runs ``coercion serve`` as a subprocess; ``directory`` is the default
configuration on the embedded directory, then on a private slapd; ``store`` is a
pseudonym store on each ``store_url`` (SQLite, then PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coercion.store import PseudonymStore
from tests.directories import Directory, embedded_directory, ldap_directory
from tests.helpers import SECRET, Served, Start, start_node


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Start]:
    """``serve(config_dir=None, *args)`` starts a node (``-vv``); all are stopped afterwards."""
    started: list[Served] = []

    def start(config: Path | None = None, *extra: str) -> Served:
        served = start_node(tmp_path, len(started), config, *extra)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.terminate()
            served.process.wait(20)


@pytest.fixture(params=["embedded", "slapd"])
def directory(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Directory]:
    """The default configuration on the embedded directory, then on a private slapd."""
    if request.param == "embedded":
        yield embedded_directory(tmp_path)
    else:
        yield ldap_directory(request.getfixturevalue("slapd"), tmp_path, monkeypatch)


@pytest.fixture
def store(store_url: str) -> Iterator[PseudonymStore]:
    """A pseudonym store on ``store_url`` (SQLite, then PostgreSQL), closed afterwards."""
    opened = PseudonymStore(store_url, SECRET)
    yield opened
    opened.close()
