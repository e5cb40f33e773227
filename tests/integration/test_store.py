"""The pseudonym store, on SQLite and on a real PostgreSQL: the same tests on both."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import text

from coercion.errors import StoreError
from coercion.profile import Deidentifier, Option, compile_profile
from coercion.store import PseudonymStore, ScopeSettings
from coercion.store.store import SCHEMA_VERSION, Scope
from tests.helpers import SECRET, make_dataset
from tests.postgres import Postgres, fresh_database
from tests.store_legacy import OldPatient, make_legacy_store

pytestmark = pytest.mark.integration

MODIFIED = Option.RetainLongitudinalTemporalInformationModifiedDatesOption

NAME = "QZXSTORE^PATIENT"
PATIENT_ID = "QZXSTORE-ID-1"
STUDY_UID = "1.2.826.0.1.3680043.99.77.1"
SOP_UID = "1.2.826.0.1.3680043.99.77.1.1"
ACCESSION = "QZXACC4711"


def test_one_patient_one_pseudonym_across_stores_and_runs(store_url: str) -> None:
    first = PseudonymStore(store_url, SECRET)
    second = PseudonymStore(store_url, SECRET)  # another node on the same store
    try:
        a = first.scope("TRIAL_A").patient(PATIENT_ID, "", {"PatientName": NAME})
        b = second.scope("TRIAL_A").patient(PATIENT_ID)
        other = first.scope("TRIAL_B").patient(PATIENT_ID)
    finally:
        first.close()
        second.close()
    assert (a.pseudonym_id, a.pseudonym_name, a.date_offset_seconds) == (
        b.pseudonym_id,
        b.pseudonym_name,
        b.date_offset_seconds,
    )
    assert a.pseudonym_id.startswith("TRIAL_A-") and other.pseudonym_id != a.pseudonym_id
    assert -3650 * 86400 - 86399 <= a.date_offset_seconds <= -86400


def test_uid_map_is_repeatable_and_reversible(store: PseudonymStore) -> None:
    scope = store.scope("TRIAL_A")
    mapping = scope.map_uids([STUDY_UID, SOP_UID])
    assert mapping[STUDY_UID].startswith("2.25.") and mapping[STUDY_UID] != mapping[SOP_UID]
    assert scope.map_uids([STUDY_UID]) == {STUDY_UID: mapping[STUDY_UID]}
    assert scope.original_uid(mapping[SOP_UID]) == SOP_UID
    assert scope.original_uid("2.25.1") is None
    assert store.scope("TRIAL_B").derive_uid(STUDY_UID) != mapping[STUDY_UID]


def test_scope_caches_stay_bounded_and_answer_the_same_after_eviction(
    store: PseudonymStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three times each cache's bound: each holds the bound; evicted entries come back identical."""
    monkeypatch.setattr(Scope, "CACHE_ENTRIES", 4)
    scope = store.scope("TRIAL_A")
    ids = [f"QZXCACHE-{n}" for n in range(12)]
    uids = [f"{STUDY_UID}.{n}" for n in range(12)]
    patients = [scope.patient(patient_id) for patient_id in ids]
    numbers = [scope.number_for("subject", patient_id) for patient_id in ids]
    mapping = scope.map_uids(uids)
    for patient, uid in zip(patients, uids, strict=True):
        scope.record_study(mapping[uid], patient, {"StudyID": uid[-2:]})
    caches = (scope._patients, scope._uids._cache, scope._recorded, scope._numbers, scope._studies)
    assert [len(cache) for cache in caches] == [4] * 5
    assert [scope.patient(patient_id) for patient_id in ids] == patients
    assert [scope.number_for("subject", patient_id) for patient_id in ids] == numbers
    assert numbers == list(range(1, 13))
    assert scope.map_uids(uids) == mapping == {uid: scope.keys.uid(uid) for uid in uids}
    for patient, uid in zip(patients, uids, strict=True):
        scope.record_study(mapping[uid], patient, {"StudyID": uid[-2:]})
    assert [scope.original_study(mapping[uid]) for uid in uids] == [
        {"StudyID": uid[-2:]} for uid in uids
    ]
    assert [len(cache) for cache in caches] == [4] * 5
    stats = store.stats()["TRIAL_A"]
    assert (stats["patients"], stats["uids"], stats["studies"]) == (12, 12, 12)


def test_registered_subject_wins_and_conflicts_are_refused(store: PseudonymStore) -> None:
    scope = store.scope("TRIAL_A")
    assert scope.register(PATIENT_ID, "SUBJ-001", "SUBJECT^ONE") is True
    assert scope.register(PATIENT_ID, "SUBJ-001", "SUBJECT^ONE") is False  # idempotent
    patient = scope.patient(PATIENT_ID, "", {"PatientName": NAME})
    assert (patient.pseudonym_id, patient.pseudonym_name, patient.registered) == (
        "SUBJ-001",
        "SUBJECT^ONE",
        True,
    )
    assert scope.original_patient("SUBJ-001") == {
        "PatientID": PATIENT_ID,
        "IssuerOfPatientID": "",
        "PatientName": NAME,
    }
    with pytest.raises(StoreError, match="SUBJ-001 belongs to another subject"):
        scope.register("OTHER-ID", "SUBJ-001")
    with pytest.raises(StoreError, match="already known under another pseudonym"):
        scope.register(PATIENT_ID, "SUBJ-002")


def test_study_originals_and_export(store: PseudonymStore) -> None:
    scope = store.scope("TRIAL_A", ScopeSettings(id_template="P{hash}", offset_min=-10))
    patient = scope.patient(PATIENT_ID, "", {"PatientName": NAME})
    assert (
        patient.pseudonym_id.startswith("P")
        and -10 * 86400 - 86399 <= patient.date_offset_seconds <= -86400
    )
    new_study = scope.map_uids([STUDY_UID])[STUDY_UID]
    scope.record_study(new_study, patient, {"AccessionNumber": ACCESSION, "StudyID": "7"})
    assert scope.original_study(new_study) == {"AccessionNumber": ACCESSION, "StudyID": "7"}
    assert scope.original_study("2.25.1") is None
    [row] = list(scope.export())
    assert row["pseudonym_id"] == patient.pseudonym_id and row["PatientName"] == NAME
    stats = store.stats()["TRIAL_A"]
    assert stats["patients"] == 1 and stats["uids"] == 1 and stats["studies"] == 1


def test_the_database_alone_reveals_no_phi(store: PseudonymStore, store_url: str) -> None:
    scope = store.scope("TRIAL_A")
    patient = scope.patient(PATIENT_ID, "", {"PatientName": NAME, "PatientBirthDate": "19700101"})
    mapping = scope.map_uids([STUDY_UID, SOP_UID])
    scope.record_study(mapping[STUDY_UID], patient, {"AccessionNumber": ACCESSION})
    with store.engine.connect() as connection:
        rows = []
        for table in ("coercion_patients", "coercion_uids", "coercion_studies"):
            rows += [repr(tuple(r)) for r in connection.execute(text(f"SELECT * FROM {table}"))]
    dump = "\n".join(rows)
    if store_url.startswith("sqlite"):
        dump += Path(store_url.removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    for value in ("QZXSTORE", PATIENT_ID, STUDY_UID, SOP_UID, ACCESSION, "19700101"):
        assert value not in dump


def test_other_key_cannot_read_the_originals(store_url: str) -> None:
    ours = PseudonymStore(store_url, SECRET)
    theirs = PseudonymStore(store_url, b"\x01" * 32)
    try:
        new = ours.scope("TRIAL_A").map_uids([SOP_UID])[SOP_UID]
        patient = ours.scope("TRIAL_A").patient(PATIENT_ID, "", {"PatientName": NAME})
        # Another key derives other UIDs and pseudonyms, and cannot open what is stored.
        assert theirs.scope("TRIAL_A").derive_uid(SOP_UID) != new
        with pytest.raises(StoreError, match="does not decrypt"):
            theirs.scope("TRIAL_A").original_uid(new)
        with pytest.raises(StoreError, match="does not decrypt"):
            theirs.scope("TRIAL_A").original_patient(patient.pseudonym_id)
    finally:
        ours.close()
        theirs.close()


def test_schema_version_is_recorded_and_a_newer_one_refused(store: PseudonymStore) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE coercion_meta SET value = :v WHERE name = 'schema_version'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    with pytest.raises(StoreError, match="newer than this coercion"):
        PseudonymStore(store.url, SECRET)


def _pseudonymise(url: str, queue: multiprocessing.Queue[tuple[str, int, list[str]]]) -> None:
    store = PseudonymStore(url, SECRET)
    try:
        scope = store.scope("TRIAL_A")
        patient = scope.patient(PATIENT_ID, "", {"PatientName": NAME})
        uids = [scope.map_uids([f"{SOP_UID}.{i}"])[f"{SOP_UID}.{i}"] for i in range(50)]
        queue.put((patient.pseudonym_id, patient.date_offset_seconds, uids))
    finally:
        store.close()


def test_two_processes_at_once_agree(store_url: str) -> None:
    PseudonymStore(store_url, SECRET).close()  # schema in place before the race
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[str, int, list[str]]] = context.Queue()
    workers = [context.Process(target=_pseudonymise, args=(store_url, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert results[0] == results[1]
    store = PseudonymStore(store_url, SECRET)
    try:
        stats = store.stats()["TRIAL_A"]
    finally:
        store.close()
    assert stats["patients"] == 1 and stats["uids"] == 50


def test_a_postgresql_dump_holds_no_phi(postgres: Postgres) -> None:
    url = fresh_database(postgres)
    store = PseudonymStore(url, SECRET)
    try:
        scope = store.scope("TRIAL_A")
        patient = scope.patient(PATIENT_ID, "", {"PatientName": NAME})
        mapping = scope.map_uids([STUDY_UID, SOP_UID])
        scope.record_study(mapping[STUDY_UID], patient, {"AccessionNumber": ACCESSION})
    finally:
        store.close()
    dump = postgres.dump(url.rsplit("/", 1)[1]).decode("utf-8", "replace")
    assert patient.pseudonym_id in dump  # the data is in the dump ...
    for value in ("QZXSTORE", PATIENT_ID, STUDY_UID, SOP_UID, ACCESSION):
        assert value not in dump  # ... but none of the originals in clear


def test_a_version_2_store_keeps_its_day_offsets_as_seconds(store_url: str) -> None:
    """Schema 2 -> 4: each day offset becomes day * 86400 seconds; old subjects move as before."""
    make_legacy_store(
        store_url,
        2,
        "TRIAL_A",
        [OldPatient(PATIENT_ID, "SUBJ-001", -123, True), OldPatient("QZXSTORE-ID-2", "D-2", -45)],
    )
    store = PseudonymStore(store_url, SECRET)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        scope = store.scope("TRIAL_A")
        registered = scope.patient(PATIENT_ID)
        assert (registered.pseudonym_id, registered.date_offset_seconds) == (
            "SUBJ-001",
            -123 * 86400,
        )
        assert scope.patient("QZXSTORE-ID-2").date_offset_seconds == -45 * 86400
        [row] = [r for r in scope.export() if r["pseudonym_id"] == "SUBJ-001"]
        assert row["date_offset_seconds"] == str(-123 * 86400)
        ds = make_dataset()
        deidentifier = Deidentifier(compile_profile([MODIFIED]), SECRET, "TRIAL_A")
        deidentifier.apply(ds, date_offset=registered.date_offset_seconds)
        assert (ds.StudyDate, ds.StudyTime) == ("20231030", "101500")  # 123 days; time stays
        # A new patient after the migration gets a part below a day: its times move too.
        fresh = scope.patient("QZXSTORE-ID-3").date_offset_seconds
        assert fresh % 86400 != 0 and -3650 * 86400 - 86399 <= fresh <= -86400
    finally:
        store.close()
