"""Schema 4: sealed date offsets, unique UID originals, creation times, issuer matching, studies."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from coercion.errors import StoreError
from coercion.store import PseudonymStore, ScopeKeys, ScopeSettings
from coercion.store.store import SCHEMA_VERSION
from tests.helpers import SECRET
from tests.store_legacy import OldPatient, make_legacy_store

pytestmark = pytest.mark.integration

PATIENT_ID = "QZXV4-ID-1"
OFFSET = -1234567  # seconds: not a value any other column holds
STUDY = "2.25.4711"


def _dump(store: PseudonymStore) -> bytes:
    """Every row of the patients table as text, and the SQLite file's bytes."""
    with store.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM coercion_patients")).all()
    dump = repr(rows).encode()
    if store.url.startswith("sqlite:///"):
        dump += Path(store.url.removeprefix("sqlite:///")).read_bytes()
    return dump


def test_a_version_3_store_gets_its_offsets_sealed(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """3 -> 4: the clear offset column is gone, the sealed offset decrypts, duplicates reported."""
    keys = ScopeKeys(SECRET, "TRIAL_A")
    original_hash = keys.lookup("uid", "1.2.3.4")
    make_legacy_store(
        store_url,
        3,
        "TRIAL_A",
        [OldPatient(PATIENT_ID, "SUBJ-1", OFFSET, True)],
        [("2.25.1", original_hash, "1.2.3.4"), ("2.25.2", original_hash, "1.2.3.4")],
    )
    caplog.set_level(logging.INFO, logger="coercion.store")
    store = PseudonymStore(store_url, SECRET)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        columns = {c["name"] for c in inspect(store.engine).get_columns("coercion_patients")}
        assert "date_offset_seconds" not in columns and "sealed_offset" in columns
        dump = _dump(store)
        for packed in (str(OFFSET).encode(), struct.pack("<q", OFFSET), struct.pack(">q", OFFSET)):
            assert packed not in dump
        scope = store.scope("TRIAL_A")
        assert scope.patient(PATIENT_ID, "QZXV4-ISSUER").date_offset_seconds == OFFSET
        [row] = list(scope.export())
        assert row["date_offset_seconds"] == str(OFFSET)
        assert scope.original_uid("2.25.1") == "1.2.3.4" and scope.original_uid("2.25.2") is None
        assert "1 UID rows duplicated" in caplog.text
        with pytest.raises(IntegrityError), store.engine.begin() as connection:  # unique now
            connection.execute(
                text(
                    "INSERT INTO coercion_uids (scope, new_uid, original_hash, sealed) "
                    "VALUES ('TRIAL_A', '2.25.3', :h, :s)"
                ),
                {"h": original_hash, "s": b"x"},
            )
    finally:
        store.close()


def test_a_new_store_never_holds_the_offset_in_clear(store: PseudonymStore) -> None:
    """Patients get sealed offsets and creation times; the offset is nowhere in clear."""
    scope = store.scope("TRIAL_A")
    patient = scope.patient(PATIENT_ID)
    dump = _dump(store)
    for packed in (
        str(patient.date_offset_seconds).encode(),
        struct.pack("<q", patient.date_offset_seconds),
        struct.pack(">q", patient.date_offset_seconds),
    ):
        assert packed not in dump
    with store.engine.connect() as connection:
        created = connection.execute(text("SELECT created FROM coercion_patients")).scalar()
    assert created is not None
    assert store.scope("TRIAL_A").patient(PATIENT_ID) == patient


def test_registration_matches_on_patient_id_when_a_side_has_no_issuer(
    store: PseudonymStore,
) -> None:
    """Registered without issuer: an object with one gets the registered pseudonym."""
    scope = store.scope("TRIAL_A")
    assert scope.register(PATIENT_ID, "SUBJ-001")
    assert scope.patient(PATIENT_ID, "QZXV4-ISSUER").pseudonym_id == "SUBJ-001"
    with pytest.raises(StoreError, match="already known under another pseudonym"):
        scope.register(PATIENT_ID, "SUBJ-002", issuer="QZXV4-OTHER")  # conflicts
    assert scope.register(PATIENT_ID, "SUBJ-001", issuer="QZXV4-ISSUER") is False
    # Registered with issuers: both sides have one, so they must agree.
    assert scope.register("QZXV4-ID-2", "SUBJ-010", issuer="A")
    assert scope.register("QZXV4-ID-2", "SUBJ-011", issuer="B")
    assert scope.patient("QZXV4-ID-2", "B").pseudonym_id == "SUBJ-011"
    assert scope.patient("QZXV4-ID-2", "C").pseudonym_id not in ("SUBJ-010", "SUBJ-011")
    with pytest.raises(StoreError, match="registered under 2 issuers"):
        scope.patient("QZXV4-ID-2")
    with pytest.raises(StoreError, match="already known under another pseudonym"):
        scope.register("QZXV4-ID-2", "SUBJ-012")
    assert scope.register("QZXV4-ID-3", "SUBJ-020", issuer="A")
    assert scope.patient("QZXV4-ID-3").pseudonym_id == "SUBJ-020"


def test_registration_uses_the_scope_offset_range(store: PseudonymStore) -> None:
    """A registered subject's offset lies in the scope's date offset range."""
    scope = store.scope("TRIAL_A", ScopeSettings(offset_min=-400, offset_max=-30))
    for index in range(20):
        scope.register(f"QZXV4-R-{index}", f"SUBJ-R{index}")
        offset = scope.patient(f"QZXV4-R-{index}").date_offset_seconds
        assert -400 * 86400 - 86399 <= offset <= -30 * 86400


def test_a_later_object_fills_in_the_study_record(store: PseudonymStore) -> None:
    """An RT Struct without accession first, then the CT: the accession is recorded."""
    scope = store.scope("TRIAL_A")
    patient = scope.patient(PATIENT_ID)
    scope.record_study(STUDY, patient, {"StudyID": "7", "StudyDate": "20240101"})
    other = store.scope("TRIAL_A", ScopeSettings(offset_min=-9))  # another object, no cache
    other.record_study(STUDY, patient, {"AccessionNumber": "QZXACC", "StudyID": "8"})
    assert scope.original_study(STUDY) == {
        "StudyID": "7",  # a value once recorded is kept
        "StudyDate": "20240101",
        "AccessionNumber": "QZXACC",
    }
