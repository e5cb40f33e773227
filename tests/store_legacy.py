"""Stores as older coercion versions wrote them (schema 1, 2 and 3), for the migration tests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
)

from coercion.store import ScopeKeys
from tests.helpers import SECRET


@dataclass(frozen=True)
class OldPatient:
    """A patient row of an old store; *offset* in days (schema 1, 2) or seconds (3)."""

    patient_id: str
    pseudonym: str
    offset: int
    registered: bool = False
    issuer: str = ""


def _tables(version: int) -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    offset = (
        Column("date_offset_seconds", BigInteger, nullable=False)
        if version >= 3
        else Column("date_offset", Integer, nullable=False)
    )
    patients = Table(
        "coercion_patients",
        metadata,
        Column("scope", String(64), primary_key=True),
        Column("patient_hash", String(64), primary_key=True),
        Column("pseudonym_id", String(64), nullable=False),
        Column("pseudonym_name", String(128), nullable=False),
        offset,
        Column("registered", Boolean, nullable=False),
        Column("sealed", LargeBinary, nullable=True),
        UniqueConstraint("scope", "pseudonym_id", name="coercion_patients_pseudonym"),
    )
    uids = Table(
        "coercion_uids",
        metadata,
        Column("scope", String(64), primary_key=True),
        Column("new_uid", String(64), primary_key=True),
        Column("original_hash", String(64), nullable=False, index=True),
        Column("sealed", LargeBinary, nullable=False),
    )
    Table(
        "coercion_meta",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("value", String(256), nullable=False),
    )
    Table(
        "coercion_studies",
        metadata,
        Column("scope", String(64), primary_key=True),
        Column("new_study_uid", String(64), primary_key=True),
        Column("patient_hash", String(64), nullable=False),
        Column("sealed", LargeBinary, nullable=False),
    )
    Table(
        "coercion_counters",
        metadata,
        Column("scope", String(64), primary_key=True),
        Column("name", String(128), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )
    if version >= 2:
        Table(
            "coercion_counter_values",
            metadata,
            Column("scope", String(64), primary_key=True),
            Column("counter", String(128), primary_key=True),
            Column("original_hash", String(64), primary_key=True),
            Column("number", BigInteger, nullable=False),
            UniqueConstraint("scope", "counter", "number", name="coercion_counter_values_number"),
        )
    return metadata, patients, uids


def make_legacy_store(
    url: str,
    version: int,
    scope: str,
    rows: list[OldPatient],
    uid_rows: list[tuple[str, str, str]] | None = None,
) -> None:
    """Write a schema-*version* store at *url* holding *rows* and (new UID, hash, original)."""
    metadata, patients, uids = _tables(version)
    keys = ScopeKeys(SECRET, scope)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            connection.execute(
                metadata.tables["coercion_meta"]
                .insert()
                .values(name="schema_version", value=str(version))
            )
            column = "date_offset_seconds" if version >= 3 else "date_offset"
            for row in rows:
                patient_hash = keys.lookup("patient", row.patient_id, row.issuer)
                sealed = keys.seal(
                    {"PatientID": row.patient_id, "IssuerOfPatientID": row.issuer},
                    f"patient/{patient_hash}",
                )
                connection.execute(
                    patients.insert().values(
                        scope=scope,
                        patient_hash=patient_hash,
                        pseudonym_id=row.pseudonym,
                        pseudonym_name=row.pseudonym,
                        registered=row.registered,
                        sealed=sealed,
                        **{column: row.offset},
                    )
                )
            for new_uid, original_hash, original in uid_rows or []:
                connection.execute(
                    uids.insert().values(
                        scope=scope,
                        new_uid=new_uid,
                        original_hash=original_hash,
                        sealed=keys.seal({"uid": original}, f"uid/{new_uid}"),
                    )
                )
    finally:
        engine.dispose()
