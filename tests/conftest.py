"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.helpers import SECRET

#: The private slapd fixtures ``slapd`` and ``slapd_no_syncprov``.
pytest_plugins = ["tests.slapd"]


@pytest.fixture
def secret() -> bytes:
    """A fixed secret, so results are repeatable inside one test."""
    return SECRET
