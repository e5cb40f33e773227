"""Fixtures of the integration tests: ``serve`` runs ``coercion serve`` as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Served, Start, start_node


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
