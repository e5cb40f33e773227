"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers import OPEN_ENVS, SECRET

#: The private slapd fixtures ``slapd`` and ``slapd_no_syncprov``, the private PostgreSQL
#: fixtures ``postgres`` and ``postgres_session``, and ``console_node`` (a node with its console).
pytest_plugins = ["tests.slapd", "tests.postgres", "tests.console"]


@pytest.fixture
def secret() -> bytes:
    """A fixed secret, so results are repeatable inside one test."""
    return SECRET


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Run the test under umask 000 (files 0666 and folders 0777 unless set explicitly)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(autouse=True)
def _close_action_envs() -> Iterator[None]:
    """Close the stores of the actions a test made with ``script_action``."""
    yield
    while OPEN_ENVS:
        OPEN_ENVS.pop().close()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync is called on (still really synced)."""
    calls: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return calls
