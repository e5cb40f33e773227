"""The store under contention: no deadlock, no refusal, schema made once (real PostgreSQL)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from coercion.store import PseudonymStore
from tests.helpers import SECRET

pytestmark = pytest.mark.integration

ROUNDS = 60
UIDS_PER_OBJECT = 24


@pytest.fixture
def two_stores(store_url: str) -> Iterator[tuple[PseudonymStore, PseudonymStore]]:
    first, second = PseudonymStore(store_url, SECRET), PseudonymStore(store_url, SECRET)
    yield first, second
    first.close()
    second.close()


def test_overlapping_uid_sets_in_opposite_orders_never_fail(
    two_stores: tuple[PseudonymStore, PseudonymStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes recording one new study's UIDs in opposite orders, many rounds: zero refusals."""
    caplog.set_level(logging.INFO, logger="coercion.store")
    barrier = threading.Barrier(2, timeout=60)
    failures: list[BaseException] = []
    deadline = time.monotonic() + 120

    def work(store: PseudonymStore, backwards: bool) -> None:
        for round_ in range(ROUNDS):
            scope = store.scope(f"RACE{round_}")  # a fresh scope: nothing cached, all new rows
            uids = [f"1.2.826.0.1.3680043.99.13.{round_}.{i}" for i in range(UIDS_PER_OBJECT)]
            try:
                barrier.wait()
                scope.map_uids(reversed(uids) if backwards else uids)
            except BaseException as exc:  # a refusal: recorded, the other thread goes on
                failures.append(exc)
                barrier.abort()
                return
            if time.monotonic() > deadline:
                return

    threads = [
        threading.Thread(target=work, args=(store, index == 1))
        for index, store in enumerate(two_stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not failures, f"refused: {[str(f) for f in failures][:3]}"
    stats = two_stores[0].stats()
    assert all(stats[f"RACE{r}"]["uids"] == UIDS_PER_OBJECT for r in range(ROUNDS))
    assert "reachable" not in caplog.text
