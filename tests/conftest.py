"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.helpers import SECRET


@pytest.fixture
def secret() -> bytes:
    """A fixed secret, so results are repeatable inside one test."""
    return SECRET
