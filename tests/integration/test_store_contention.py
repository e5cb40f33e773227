"""The store under contention: no deadlock, no refusal, schema made once (real PostgreSQL)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from coercion.errors import StoreError
from coercion.store import PseudonymStore
from coercion.store.store import SCHEMA_VERSION
from tests.helpers import SECRET
from tests.postgres import Postgres, fresh_database

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
    assert "deadlock" not in caplog.text  # the sorted order avoids them, not only the retries


def test_two_objects_of_one_new_study_at_once_are_both_recorded(
    two_stores: tuple[PseudonymStore, PseudonymStore],
) -> None:
    """A CT and an RT Struct of one new study, many rounds: no refusal, the study record merged."""
    barrier = threading.Barrier(2, timeout=60)
    failures: list[BaseException] = []
    rounds = ROUNDS // 2
    values = ({"StudyID": "1", "AccessionNumber": "QZXACC"}, {"StudyID": "1", "StudyDate": "D"})

    def work(store: PseudonymStore, index: int) -> None:
        for round_ in range(rounds):
            scope = store.scope(f"STUDY{round_}")
            study = f"1.2.826.0.1.3680043.99.13.{round_}"
            uids = [study, f"{study}.1", f"{study}.1.{index}", f"{study}.2.1"]
            try:
                barrier.wait()
                patient = scope.patient(f"QZXRACE-{round_}", "", {"PatientName": "QZX^RACE"})
                scope.map_uids(reversed(uids) if index else uids)
                scope.record_study(scope.derive_uid(study), patient, values[index])
            except BaseException as exc:
                failures.append(exc)
                barrier.abort()
                return

    threads = [
        threading.Thread(target=work, args=(store, index)) for index, store in enumerate(two_stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not failures, f"refused: {[str(f) for f in failures][:3]}"
    for round_ in range(rounds):
        scope = two_stores[0].scope(f"STUDY{round_}")
        study = scope.derive_uid(f"1.2.826.0.1.3680043.99.13.{round_}")
        assert scope.original_study(study) == {**values[0], **values[1]}


def _open(url: str, barrier: Barrier, queue: multiprocessing.Queue[str]) -> None:
    """A worker: open the store at *url* together with the others; report the error or ""."""
    barrier.wait(timeout=120)
    try:
        PseudonymStore(url, SECRET).close()
    except StoreError as exc:
        queue.put(str(exc))
        return
    queue.put("")


def test_nodes_opening_a_new_postgresql_database_at_once_create_it_once(
    postgres: Postgres,
) -> None:
    """Four processes open one new database together: no error here or in the server's log."""
    url = fresh_database(postgres)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    queue: multiprocessing.Queue[str] = context.Queue()
    workers = [context.Process(target=_open, args=(url, barrier, queue)) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        errors = [queue.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(60)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(10)
    assert errors == ["", "", "", ""]
    assert "ERROR" not in postgres.log()
    store = PseudonymStore(url, SECRET)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM coercion_meta")).scalar() == 1
    finally:
        store.close()


class _DeadlockError(Exception):
    """A DBAPI error as psycopg raises it for a deadlock (SQLSTATE 40P01)."""

    sqlstate = "40P01"


def test_a_deadlock_is_retried_and_logged_as_contention(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction the database ends for a deadlock runs again; the log names contention."""
    caplog.set_level(logging.INFO, logger="coercion.store")
    store = PseudonymStore(store_url, SECRET)
    calls: list[int] = []

    def work(connection: Connection) -> int:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, _DeadlockError())
        return int(connection.execute(text("SELECT 1")).scalar_one())

    def always(connection: Connection) -> int:
        raise OperationalError("INSERT", {}, _DeadlockError())

    try:
        assert store.run(work, "scope T") == 1 and len(calls) == 3
        assert "store contention (deadlock), retry 1/" in caplog.text
        assert "store contention (deadlock), retry 2/" in caplog.text
        with pytest.raises(StoreError, match=r"contention \(deadlock\) persisted") as raised:
            store.run(always, "scope T")
    finally:
        store.close()
    assert "reachable" not in str(raised.value) and "reachable" not in caplog.text
