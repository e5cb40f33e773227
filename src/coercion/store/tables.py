"""The tables of the pseudonym store (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

All rows are per scope. Originals are never stored in clear: rows hold keyed
hashes (``*_hash``, see :meth:`coercion.store.crypto.ScopeKeys.lookup`) and
sealed ciphertext (``sealed``). The version of this schema is recorded in
``coercion_meta`` (``schema_version``); :mod:`coercion.store.store` creates and
migrates it.

Version 2 added ``coercion_counter_values``; version 3 kept date offsets in
seconds (``date_offset_seconds``, was ``date_offset`` in days); version 4 seals
them (``sealed_offset``: an offset in clear beside a pseudonym would give the
real dates back from the anonymised data), finds patients also by a keyed hash
of the Patient ID alone (``id_hash``, to match a subject registered without an
issuer), makes a UID's original unique per scope and records ``created`` times
(empty for rows older than version 4).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

__all__ = [
    "counter_values",
    "counters",
    "meta",
    "metadata",
    "patients",
    "studies",
    "uids",
]

metadata = MetaData()


def _now() -> datetime:
    return datetime.now(UTC)


def _created() -> Column[datetime]:
    """When the row was made (set by coercion, so also on SQLite tables altered by migration)."""
    return Column("created", DateTime(timezone=True), nullable=True, default=_now)


#: Facts about the store itself, e.g. ``schema_version``.
meta = Table(
    "coercion_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

#: Patients: pseudonym, sealed date offset, pre-registration and the sealed originals.
patients = Table(
    "coercion_patients",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("patient_hash", String(64), primary_key=True),
    Column("pseudonym_id", String(64), nullable=False),
    Column("pseudonym_name", String(128), nullable=False),
    Column("id_hash", String(64), nullable=True, index=True),
    Column("sealed_offset", LargeBinary, nullable=True),
    Column("registered", Boolean, nullable=False),
    Column("sealed", LargeBinary, nullable=True),
    _created(),
    UniqueConstraint("scope", "pseudonym_id", name="coercion_patients_pseudonym"),
)

#: The UID map: new UID -> sealed original, found by the original's keyed hash.
uids = Table(
    "coercion_uids",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("new_uid", String(64), primary_key=True),
    Column("original_hash", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    _created(),
    Index("coercion_uids_original", "scope", "original_hash", unique=True),
)

#: Study-level originals (Accession Number, Study ID, ...) for re-identification.
studies = Table(
    "coercion_studies",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("new_study_uid", String(64), primary_key=True),
    Column("patient_hash", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    _created(),
)

#: Named counters: the last number each gave.
counters = Table(
    "coercion_counters",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: The number a counter gave an original (found by its keyed hash); one number per original.
counter_values = Table(
    "coercion_counter_values",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("counter", String(128), primary_key=True),
    Column("original_hash", String(64), primary_key=True),
    Column("number", BigInteger, nullable=False),
    _created(),
    UniqueConstraint("scope", "counter", "number", name="coercion_counter_values_number"),
)
