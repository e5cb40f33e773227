"""Create or migrate the store's schema (:mod:`coercion.store.tables`) in one transaction.

Versions: 1 patients, UIDs, studies, counters; 2 adds ``coercion_counter_values``;
3 date offsets in seconds; 4 sealed offsets, ``id_hash``, one UID row per
original and ``created`` times. A store of any older version is brought to
:data:`SCHEMA_VERSION` step by step.

On PostgreSQL the whole of it runs under a transaction-level advisory lock, so
nodes opening a new database at the same moment create it once, one after the
other, without a failed CREATE in the server's log. On SQLite a race on a new
file is retried by the caller.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection

from coercion.errors import StoreError
from coercion.store.crypto import ScopeKeys
from coercion.store.tables import counter_values, meta, metadata, patients, studies, uids

__all__ = ["SCHEMA_VERSION", "NewerSchemaError", "create_or_migrate", "seal_offset"]

#: The schema version this code writes; older stores are migrated on open.
SCHEMA_VERSION = 4
#: The PostgreSQL advisory lock key held while the schema is created or migrated ("coercion").
ADVISORY_LOCK_KEY = 0x636F6572_63696F6E

log = logging.getLogger(__name__)


class NewerSchemaError(StoreError):
    """The store was written by a newer coercion: never retried."""


def seal_offset(keys: ScopeKeys, patient_hash: str, seconds: int) -> bytes:
    """A patient's date offset sealed (AES-GCM, bound to the patient's row)."""
    return keys.seal({"seconds": str(seconds)}, f"offset/{patient_hash}")


def create_or_migrate(connection: Connection, secret: bytes, where: str) -> None:
    """Create the tables, or migrate them to :data:`SCHEMA_VERSION`, in *connection*'s transaction.

    Raises :class:`NewerSchemaError` when the store is newer than this code.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
    metadata.create_all(connection, checkfirst=True)
    found = connection.execute(select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
    if found is None:
        connection.execute(meta.insert().values(name="schema_version", value=str(SCHEMA_VERSION)))
        return
    version = int(found)
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"store {where}: schema version {found} is newer than this coercion "
            f"({SCHEMA_VERSION}); upgrade coercion"
        )
    if version == SCHEMA_VERSION:
        return
    # 1 -> 2: coercion_counter_values, made by create_all above.
    if version < 3:
        _offsets_to_seconds(connection)
    if version < 4:
        _version_4(connection, secret, where)
    connection.execute(
        meta.update().where(meta.c.name == "schema_version").values(value=str(SCHEMA_VERSION))
    )
    log.info("store %s: schema migrated from version %s to %s", where, found, SCHEMA_VERSION)


def _columns(connection: Connection, table: str) -> set[str]:
    return {str(c["name"]) for c in inspect(connection).get_columns(table)}


def _add_columns(connection: Connection, table: str, columns: dict[str, tuple[str, str]]) -> None:
    """Add the *columns* (name -> (SQLite type, PostgreSQL type)) that *table* lacks."""
    present = _columns(connection, table)
    index = 1 if connection.dialect.name == "postgresql" else 0
    for name, types in columns.items():
        if name not in present:
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {types[index]}")


_CREATED = {"created": ("DATETIME", "TIMESTAMP WITH TIME ZONE")}


def _offsets_to_seconds(connection: Connection) -> None:
    """2 -> 3: the patients' day offsets become seconds (day * 86400), in a BIGINT column."""
    table = patients.name
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN date_offset TYPE BIGINT")
    # SQLite's INTEGER column holds 64 bits already.
    connection.exec_driver_sql(
        f"ALTER TABLE {table} RENAME COLUMN date_offset TO date_offset_seconds"
    )
    connection.exec_driver_sql(
        f"UPDATE {table} SET date_offset_seconds = date_offset_seconds * 86400"
    )


def _version_4(connection: Connection, secret: bytes, where: str) -> None:
    """3 -> 4: sealed offsets (clear column dropped), ``id_hash``, unique originals, ``created``."""
    _add_columns(
        connection,
        patients.name,
        {
            "id_hash": ("VARCHAR(64)", "VARCHAR(64)"),
            "sealed_offset": ("BLOB", "BYTEA"),
            **_CREATED,
        },
    )
    for table in (uids.name, studies.name, counter_values.name):
        _add_columns(connection, table, _CREATED)
    keys: dict[str, ScopeKeys] = {}
    unreadable = 0
    rows = connection.exec_driver_sql(
        f"SELECT scope, patient_hash, date_offset_seconds, sealed FROM {patients.name}"
    ).all()
    for scope, patient_hash, seconds, sealed in rows:
        scope_key = keys.get(scope) or keys.setdefault(scope, ScopeKeys(secret, scope))
        id_hash = None
        if sealed is not None:
            try:
                patient_id = scope_key.open(bytes(sealed), f"patient/{patient_hash}")["PatientID"]
                id_hash = scope_key.lookup("patient-id", patient_id)
            except (StoreError, KeyError):
                unreadable += 1  # another key's record: found by its full hash only
        connection.execute(
            patients.update()
            .where(patients.c.scope == scope, patients.c.patient_hash == patient_hash)
            .values(
                sealed_offset=seal_offset(scope_key, patient_hash, int(seconds)), id_hash=id_hash
            )
        )
    connection.exec_driver_sql(f"ALTER TABLE {patients.name} DROP COLUMN date_offset_seconds")
    if unreadable:
        log.warning(
            "store %s: %d patient records do not decrypt with this key; they are found by "
            "Patient ID and issuer only",
            where,
            unreadable,
        )
    _unique_uid_originals(connection, where)
    connection.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS ix_{patients.name}_id_hash ON {patients.name} (id_hash)"
    )


def _unique_uid_originals(connection: Connection, where: str) -> None:
    """One UID row per (scope, original): duplicates reported, the first new UID kept."""
    table = uids.name
    duplicates = connection.execute(
        text(
            f"SELECT scope, original_hash, MIN(new_uid) FROM {table} "
            "GROUP BY scope, original_hash HAVING COUNT(*) > 1"
        )
    ).all()
    removed = 0
    for scope, original_hash, first in duplicates:
        removed += connection.execute(
            text(f"DELETE FROM {table} WHERE scope = :s AND original_hash = :h AND new_uid <> :f"),
            {"s": scope, "h": original_hash, "f": first},
        ).rowcount
    if removed:
        log.warning(
            "store %s: %d UID rows duplicated an original of their scope; removed, the first "
            "(lowest new UID) of each kept",
            where,
            removed,
        )
    connection.exec_driver_sql(
        f"CREATE UNIQUE INDEX IF NOT EXISTS coercion_uids_original ON {table} "
        "(scope, original_hash)"
    )
