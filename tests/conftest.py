"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.helpers import SECRET

#: The private slapd fixtures ``slapd`` and ``slapd_no_syncprov``, and the private PostgreSQL
#: fixtures ``postgres`` and ``postgres_session``.
pytest_plugins = ["tests.slapd", "tests.postgres"]


@pytest.fixture
def secret() -> bytes:
    """A fixed secret, so results are repeatable inside one test."""
    return SECRET
