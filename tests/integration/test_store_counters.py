"""Counters of the pseudonym store, on SQLite and on a real PostgreSQL: the same tests on both."""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import re
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from coercion.errors import StoreError
from coercion.store import PseudonymStore, ScopeKeys
from coercion.store.store import SCHEMA_VERSION
from tests.helpers import SECRET
from tests.store_legacy import OldPatient, make_legacy_store

pytestmark = pytest.mark.integration

PATIENT_ID = "QZXCOUNT-ID-1"
OTHER_ID = "QZXCOUNT-ID-2"
STUDY_UID = "1.2.826.0.1.3680043.99.77.1"

#: Scope.derive_uid("TRIAL_A", STUDY_UID) with tests.helpers.SECRET before ScopeKeys.uid existed.
STUDY_UID_NEW = "2.25.81208681170579604710939739516157050558"

#: Calls per process in the races.
RACE_CALLS = 1000


def test_increment_counts_per_scope_and_per_counter(store: PseudonymStore) -> None:
    """increment gives 1, 2, 3 for each counter of each scope on its own."""
    a, b = store.scope("TRIAL_A"), store.scope("TRIAL_B")
    assert [a.increment("accession") for _ in range(3)] == [1, 2, 3]
    assert [a.increment("study") for _ in range(2)] == [1, 2]
    assert [b.increment("accession") for _ in range(2)] == [1, 2]
    assert a.increment("accession") == 4
    assert store.stats()["TRIAL_A"]["counters"] == 2


def test_increment_refuses_a_bad_counter_name(store: PseudonymStore) -> None:
    """A counter name must have 1 to 128 characters."""
    with pytest.raises(StoreError, match="1 to 128 characters"):
        store.scope("TRIAL_A").increment("")
    with pytest.raises(StoreError, match="1 to 128 characters"):
        store.scope("TRIAL_A").number_for("c" * 129, PATIENT_ID)


def test_number_for_is_stable_survives_reopening_and_keeps_no_original(
    store: PseudonymStore, store_url: str
) -> None:
    """number_for numbers new originals 1, 2, ... and repeats known ones, also in another store."""
    scope = store.scope("TRIAL_A")
    assert scope.number_for("subject", PATIENT_ID) == 1
    assert scope.number_for("subject", OTHER_ID) == 2
    assert scope.number_for("subject", PATIENT_ID) == 1
    assert scope.number_for("other", OTHER_ID) == 1
    assert store.scope("TRIAL_B").number_for("subject", OTHER_ID) == 1
    reopened = PseudonymStore(store_url, SECRET)
    try:
        again = reopened.scope("TRIAL_A")
        assert again.number_for("subject", OTHER_ID) == 2
        assert again.number_for("subject", PATIENT_ID) == 1
        assert again.number_for("subject", "QZXCOUNT-ID-3") == 3
    finally:
        reopened.close()
    assert store.stats()["TRIAL_A"]["counter values"] == 4
    with store.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM coercion_counter_values")).all()
    assert len(rows) == 5
    dump = "\n".join(repr(tuple(row)) for row in rows)
    if store_url.startswith("sqlite"):
        dump += Path(store_url.removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    for value in ("QZXCOUNT", PATIENT_ID, OTHER_ID):
        assert value not in dump


def _race(
    url: str,
    prefix: str,
    barrier: Barrier,
    queue: multiprocessing.Queue[tuple[str, list[int]]],
) -> None:
    """A worker: number RACE_CALLS originals ``<prefix>-<i>`` (or increment when no prefix)."""
    store = PseudonymStore(url, SECRET)
    try:
        scope = store.scope("TRIAL_A")
        barrier.wait(timeout=120)
        if prefix:
            numbers = [scope.number_for("subject", f"{prefix}-{i}") for i in range(RACE_CALLS)]
        else:
            numbers = [scope.increment("accession") for _ in range(RACE_CALLS)]
        queue.put((prefix, numbers))
    finally:
        store.close()


def _run_race(url: str, prefixes: tuple[str, str]) -> list[tuple[str, list[int]]]:
    """Start two _race workers together; their (prefix, numbers), in the order of *prefixes*."""
    PseudonymStore(url, SECRET).close()  # schema in place before the race
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(prefixes))
    queue: multiprocessing.Queue[tuple[str, list[int]]] = context.Queue()
    workers = [
        context.Process(target=_race, args=(url, prefix, barrier, queue)) for prefix in prefixes
    ]
    results: list[tuple[str, list[int]]] = []
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 120
        while len(results) < len(workers):
            try:
                results.append(queue.get(timeout=1))
            except queue_module.Empty:
                failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                assert not failed, f"a worker failed (exit codes {failed}); see its output"
                assert time.monotonic() < deadline, "the workers did not finish in 120 s"
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
    finally:
        for worker in workers:
            if worker.is_alive():  # a failed race: do not leave the other worker behind
                worker.kill()
                worker.join(10)
    return sorted(results)


@pytest.mark.parametrize("prefixes", [("P-a", "P-b"), ("", "")], ids=["number_for", "increment"])
def test_two_processes_racing_get_every_number_once(
    store_url: str, prefixes: tuple[str, str]
) -> None:
    """Two processes at once get exactly 1..2000 between them: no gap, no repeat."""
    results = _run_race(store_url, prefixes)
    numbers = [number for _prefix, result in results for number in result]
    assert sorted(numbers) == list(range(1, 2 * RACE_CALLS + 1))
    for _prefix, result in results:
        assert result == sorted(result)  # each process sees its numbers grow
    if prefixes[0]:  # the numbers are recorded: asking again gives them back
        store = PseudonymStore(store_url, SECRET)
        try:
            scope = store.scope("TRIAL_A")
            for prefix, result in results:
                asked = [scope.number_for("subject", f"{prefix}-{i}") for i in (0, 999)]
                assert asked == [result[0], result[-1]]
            assert store.stats()["TRIAL_A"]["counter values"] == 2 * RACE_CALLS
        finally:
            store.close()


def test_two_processes_racing_on_the_same_originals_agree(store_url: str) -> None:
    """Two processes numbering the same originals at once get the same numbers, 1..1000."""
    (_, first), (_, second) = _run_race(store_url, ("P-s", "P-s"))
    assert first == second == list(range(1, RACE_CALLS + 1))


def test_a_version_1_store_is_migrated(store_url: str) -> None:
    """A version-1 store gets the counter values table (and sealed offsets) when opened."""
    make_legacy_store(store_url, 1, "TRIAL_A", [OldPatient(PATIENT_ID, "SUBJ-1", -7, True)])
    engine = create_engine(store_url)
    try:
        assert "coercion_counter_values" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    store = PseudonymStore(store_url, SECRET)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        assert "coercion_counter_values" in inspect(store.engine).get_table_names()
        scope = store.scope("TRIAL_A")
        assert scope.patient(PATIENT_ID).date_offset_seconds == -7 * 86400
        assert [scope.number_for("subject", i) for i in (PATIENT_ID, OTHER_ID, PATIENT_ID)] == [
            1,
            2,
            1,
        ]
    finally:
        store.close()


def test_scope_keys_uid_is_the_uid_the_store_derives(tmp_path: Path) -> None:
    """ScopeKeys.uid gives the UID Scope.derive_uid gave before: 2.25., at most 64 characters."""
    keys = ScopeKeys(SECRET, "TRIAL_A")
    store = PseudonymStore(f"sqlite:///{tmp_path / 'store.db'}", SECRET)
    try:
        scope = store.scope("TRIAL_A")
        assert keys.uid(STUDY_UID) == scope.derive_uid(STUDY_UID) == STUDY_UID_NEW
        assert keys.uid(STUDY_UID + "\x00") == STUDY_UID_NEW  # padding is ignored
        assert scope.map_uids([STUDY_UID]) == {STUDY_UID: STUDY_UID_NEW}
    finally:
        store.close()
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", STUDY_UID_NEW) and len(STUDY_UID_NEW) <= 64
    assert ScopeKeys(SECRET, "TRIAL_B").uid(STUDY_UID) != STUDY_UID_NEW
