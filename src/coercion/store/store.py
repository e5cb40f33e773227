"""The pseudonym store: one interface over SQLite (embedded default) and PostgreSQL.

Per scope (a trial) it keeps patients (pseudonym, date offset, sealed
originals), the UID map (new UID -> sealed original, found by keyed hash),
study-level originals for re-identification, pre-registered subjects and
counters. Values are derived with the scope's keys (see
:mod:`coercion.store.crypto`); the store records them. Every insert is
idempotent (``ON CONFLICT DO NOTHING``) and reads back what is stored, so two
processes or nodes working on one patient at the same moment end with one
record and agree on it without locks.

Contention is retried, never refused: rows of one transaction are written in
a fixed order (sorted by key), so two transactions never wait on each other
in a circle; a deadlock or serialization failure the database reports anyway
is retried up to :data:`RETRIES` times after a random pause, logged as
``store contention (...)``.

Counters are the exception: a number must be handed out once, so a counter's
transaction first writes the counter's row (on PostgreSQL a row lock, on
SQLite the database's write lock) and holds it to the commit. Writing first
matters on SQLite: a transaction that reads and then writes fails with
SQLITE_BUSY in WAL mode when another process wrote in between.

The schema is versioned (table ``coercion_meta``, tables in
:mod:`coercion.store.tables`) and created or migrated when the store opens.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from coercion.cache import DEFAULT_ENTRIES, LRUCache
from coercion.dicom.outputs import create_private, private_folders
from coercion.engine.scopes import ScopeSettings
from coercion.errors import StoreError, map_errors
from coercion.profile.dates import offset_seconds
from coercion.profile.uids import UIDRemapper
from coercion.store.crypto import ScopeKeys
from coercion.store.schema import SCHEMA_VERSION, NewerSchemaError, create_or_migrate, seal_offset
from coercion.store.tables import (
    counter_values,
    counters,
    meta,
    patients,
    studies,
    uids,
)

__all__ = ["SCHEMA_VERSION", "Patient", "PseudonymStore", "Scope", "ScopeSettings"]

_MIGRATE_ATTEMPTS = 5
#: Retries of a transaction the database ended for contention (deadlock, serialization).
RETRIES = 6
_CONTENTION = {"40P01": "deadlock", "40001": "serialization"}

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Patient:
    """A patient of a scope: the pseudonym, the date offset (seconds) and the lookup hash."""

    pseudonym_id: str
    pseudonym_name: str
    date_offset_seconds: int
    patient_hash: str
    registered: bool = False


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA busy_timeout=30000")  # several processes share the file
    cursor.close()


def _create_private_sqlite(url: str) -> None:
    """Create the SQLite file (mode 0600, folders 0700) before SQLite does it with the umask.

    SQLite gives the -wal and -shm files the database file's permissions. An
    existing file is left as it is.
    """
    path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    # The embedded store lives in the node's data folder: make it.
    with map_errors({OSError: StoreError}, f"store {url}: cannot create its folder"):
        private_folders(path.parent)
    with map_errors({OSError: StoreError}, f"store {url}: cannot create its file"):
        fd = create_private(path)
    if fd is not None:
        os.close(fd)


class PseudonymStore:
    """A store at a SQLAlchemy URL (``sqlite:///PATH`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str, secret: bytes) -> None:
        self.url = url
        self._secret = secret
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            _create_private_sqlite(url)
        failures = (SQLAlchemyError, ImportError, ValueError)
        with map_errors({failures: StoreError}, f"store {_safe(url)}: cannot open"):
            self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.engine.dialect.name != "postgresql":
            raise StoreError(f"store {_safe(url)}: only SQLite and PostgreSQL are supported")
        self._scopes: dict[tuple[str, ScopeSettings], Scope] = {}
        self._lock = threading.Lock()
        try:
            self._migrate()
        except BaseException:
            self.engine.dispose()  # no connection left behind by a store that did not open
            raise

    def _insert(self, table: Table) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def _migrate(self) -> None:
        # Several processes may open a new store at once: one creates the tables, the
        # others' CREATE fails on the race; a retry then finds the tables in place.
        for attempt in range(_MIGRATE_ATTEMPTS):
            try:
                self._migrate_once()
                return
            except NewerSchemaError:
                raise
            except StoreError:
                if attempt == _MIGRATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _migrate_once(self) -> None:
        where = f"store {_safe(self.url)}: cannot create or migrate the schema"
        with map_errors({SQLAlchemyError: StoreError}, where), self.engine.begin() as connection:
            create_or_migrate(connection, self._secret, _safe(self.url))

    def run(self, work: Callable[[Connection], _T], where: str) -> _T:
        """*work* in one transaction, run again after a deadlock or serialization failure.

        Database errors become StoreError naming *where* (no statement, no
        values); contention that outlasts :data:`RETRIES` retries is named as such.
        """
        for attempt in range(1, RETRIES + 2):
            try:
                with self.engine.begin() as connection:
                    return work(connection)
            except SQLAlchemyError as exc:
                kind = _contention(exc)
                if kind is None:
                    hint = (
                        "; is it reachable and writable?"
                        if isinstance(exc, OperationalError)
                        else ""
                    )
                    raise StoreError(
                        f"store {_safe(self.url)}: {where}: transaction failed "
                        f"({exc.__class__.__name__}){hint}"
                    ) from None
                if attempt > RETRIES:
                    log.warning("store contention (%s), gave up after %d retries", kind, RETRIES)
                    raise StoreError(
                        f"store {_safe(self.url)}: {where}: contention ({kind}) persisted after "
                        f"{RETRIES} retries; too many writers on the same rows"
                    ) from None
                log.info("store contention (%s), retry %d/%d", kind, attempt, RETRIES)
                time.sleep(random.uniform(0.0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def schema_version(self) -> int:
        """The schema version recorded in the store."""
        with self.engine.connect() as connection:
            value = connection.execute(
                select(meta.c.value).where(meta.c.name == "schema_version")
            ).scalar()
        return int(value or 0)

    def scope(self, name: str, settings: ScopeSettings | None = None) -> Scope:
        """The scope *name* (one object per name and settings)."""
        settings = settings or ScopeSettings()
        with self._lock:
            found = self._scopes.get((name, settings))
            if found is None:
                found = self._scopes[(name, settings)] = Scope(self, name, settings)
            return found

    def stats(self) -> dict[str, dict[str, int]]:
        """Per scope: patients, registered subjects, UIDs, studies, counters, counter values.

        "counter values" counts the originals that ``number_for`` numbered.
        """
        result: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for label, table in (
                ("patients", patients),
                ("uids", uids),
                ("studies", studies),
                ("counters", counters),
                ("counter values", counter_values),
            ):
                rows = connection.execute(
                    select(table.c.scope, func.count()).group_by(table.c.scope)
                )
                for scope, count in rows:
                    result.setdefault(scope, {})[label] = int(count)
            registered = connection.execute(
                select(patients.c.scope, func.count())
                .where(patients.c.registered.is_(True))
                .group_by(patients.c.scope)
            )
            for scope, count in registered:
                result.setdefault(scope, {})["registered"] = int(count)
        return result

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def _contention(exc: SQLAlchemyError) -> str | None:
    """ "deadlock" or "serialization" when the database ended the transaction for contention."""
    original = getattr(exc, "orig", None)
    kind = _CONTENTION.get(str(getattr(original, "sqlstate", "")))
    if kind is None and isinstance(exc, OperationalError) and "locked" in str(original):
        kind = "serialization"  # SQLite: another writer held the file past busy_timeout
    return kind


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class Scope:
    """Pseudonyms, UIDs and originals of one scope.

    What it derived or read back (new UIDs, patients, numbers, recorded UIDs
    and studies) is cached in bounded LRU caches of :attr:`CACHE_ENTRIES`
    entries each: a node serving for months keeps a flat memory, and an
    evicted entry is derived or read again, to the same value.
    """

    #: The size of each of a scope's caches.
    CACHE_ENTRIES: ClassVar[int] = DEFAULT_ENTRIES

    def __init__(self, store: PseudonymStore, name: str, settings: ScopeSettings) -> None:
        if not name or len(name) > 64:
            raise StoreError(f"scope name {name!r}: 1 to 64 characters")
        self.store = store
        self.name = name
        self.settings = settings
        self.keys = ScopeKeys(store._secret, name)
        size = self.CACHE_ENTRIES
        self._patients: LRUCache[str, Patient] = LRUCache(size)
        self._uids = UIDRemapper(self.keys.uid, size)
        #: New UIDs known to be in the store (one written again is a no-op insert).
        self._recorded: LRUCache[str, bool] = LRUCache(size)
        self._numbers: LRUCache[tuple[str, str], int] = LRUCache(size)
        self._studies: LRUCache[str, frozenset[str]] = LRUCache(size)

    # -- derivation (no I/O) -----------------------------------------------------------------

    def derive_uid(self, original: str) -> str:
        """The scope's new UID for *original* (``2.25.`` and a UUIDv8 integer)."""
        return self._uids.remap(original)

    def _derived_patient(self, patient_hash: str) -> tuple[str, str, int]:
        digest = self.keys.derive("patient", patient_hash)
        token = digest[:6].hex().upper()
        # Days from bytes 6..13 (as in schema 2), the part below a day from 14..21.
        offset = offset_seconds(digest[6:22], self.settings.offset_min, self.settings.offset_max)
        return (
            self.settings.id_template.format(scope=self.name, hash=token),
            self.settings.name_template.format(scope=self.name, hash=token),
            offset,
        )

    def patient_hash(self, patient_id: str, issuer: str = "") -> str:
        """The keyed hash a patient is found by (Patient ID and issuer)."""
        return self.keys.lookup("patient", patient_id.strip(), issuer.strip())

    def id_hash(self, patient_id: str) -> str:
        """The keyed hash of the Patient ID alone (to match a side without an issuer)."""
        return self.keys.lookup("patient-id", patient_id.strip())

    # -- patients ------------------------------------------------------------------------------

    def patient(
        self, patient_id: str, issuer: str = "", originals: Mapping[str, str] | None = None
    ) -> Patient:
        """The patient's pseudonym and date offset (seconds), recorded on first sight.

        *originals* (demographics replaced by the pseudonymisation) are kept
        sealed for re-identification. A pre-registered subject keeps the
        pseudonym it was registered with; a registration matches on Patient ID
        and issuer when both sides have an issuer, on the Patient ID alone
        otherwise (StoreError when that is ambiguous).
        """
        patient_hash = self.patient_hash(patient_id, issuer)
        cached = self._patients.get(patient_hash)
        if cached is not None:
            return cached
        values = {"PatientID": patient_id.strip(), "IssuerOfPatientID": issuer.strip()}
        values.update(originals or {})
        pseudonym_id, pseudonym_name, offset = self._derived_patient(patient_hash)
        sealed = self.keys.seal(values, f"patient/{patient_hash}")
        id_hash = self.id_hash(patient_id)

        def work(connection: Connection) -> Any:
            row = self._patient_row(connection, patients.c.patient_hash, patient_hash)
            if row is None:
                row = self._registered_match(connection, patient_id, issuer)
            if row is None:
                self._insert_patient(
                    connection,
                    patient_hash,
                    id_hash,
                    (pseudonym_id, pseudonym_name, offset),
                    False,
                    sealed,
                )
                row = self._patient_row(connection, patients.c.patient_hash, patient_hash)
            assert row is not None  # inserted, or there already
            if row.registered and originals:  # a registered subject: keep what came with it
                connection.execute(
                    patients.update()
                    .where(
                        patients.c.scope == self.name, patients.c.patient_hash == row.patient_hash
                    )
                    .values(sealed=self.keys.seal(values, f"patient/{row.patient_hash}"))
                )
            return row

        patient = self._to_patient(self.store.run(work, f"scope {self.name}"))
        self._patients.put(patient_hash, patient)
        return patient

    def _registered_match(self, connection: Connection, patient_id: str, issuer: str) -> Any:
        """The registered row an object without an exact match belongs to, or None.

        An object with an issuer matches a registration without one; an object
        without an issuer matches the one registration of its Patient ID.
        """
        if issuer.strip():
            row = self._patient_row(
                connection, patients.c.patient_hash, self.patient_hash(patient_id)
            )
            return row if row is not None and row.registered else None
        rows = connection.execute(
            select(patients).where(
                patients.c.scope == self.name,
                patients.c.id_hash == self.id_hash(patient_id),
                patients.c.registered.is_(True),
            )
        ).all()
        if len(rows) > 1:
            raise StoreError(
                f"scope {self.name}: the object has no Issuer of Patient ID and its Patient ID "
                f"is registered under {len(rows)} issuers; refused (add the issuer)"
            )
        return rows[0] if rows else None

    def register(
        self,
        patient_id: str,
        pseudonym_id: str,
        pseudonym_name: str | None = None,
        issuer: str = "",
    ) -> bool:
        """Pre-register a subject (original id -> chosen pseudonym); False when already so.

        The date offset comes from the scope's settings. Raises StoreError when
        the patient already has another pseudonym (matched on Patient ID and
        issuer, or on the Patient ID alone when either side has no issuer), or
        the pseudonym belongs to another patient.
        """
        patient_hash = self.patient_hash(patient_id, issuer)
        id_hash = self.id_hash(patient_id)
        _derived_id, _derived_name, offset = self._derived_patient(patient_hash)
        name = pseudonym_name or pseudonym_id
        sealed = self.keys.seal(
            {"PatientID": patient_id.strip(), "IssuerOfPatientID": issuer.strip()},
            f"patient/{patient_hash}",
        )
        bare = self.patient_hash(patient_id)

        def work(connection: Connection) -> bool:
            taken = connection.execute(
                select(patients.c.patient_hash, patients.c.id_hash).where(
                    patients.c.scope == self.name, patients.c.pseudonym_id == pseudonym_id
                )
            ).first()
            if taken is not None and taken.patient_hash != patient_hash:
                if taken.id_hash != id_hash or (issuer.strip() and taken.patient_hash != bare):
                    raise StoreError(
                        f"scope {self.name}: pseudonym {pseudonym_id} belongs to another subject"
                    )
                return False  # the same Patient ID, registered without an issuer: it matches
            same_id = connection.execute(
                select(patients).where(patients.c.scope == self.name, patients.c.id_hash == id_hash)
            ).all()
            for row in same_id:
                exact = row.patient_hash == patient_hash
                if (exact or not issuer.strip() or row.patient_hash == bare) and (
                    row.pseudonym_id != pseudonym_id
                ):
                    raise StoreError(
                        f"scope {self.name}: subject {row.pseudonym_id} is already known "
                        "under another pseudonym; it cannot be registered again"
                    )
            existing = self._patient_row(connection, patients.c.patient_hash, patient_hash)
            if existing is not None:
                return False
            self._insert_patient(
                connection, patient_hash, id_hash, (pseudonym_id, name, offset), True, sealed
            )
            return True

        added = self.store.run(work, f"scope {self.name}")
        self._patients.clear()  # a registration may change what an issuer's object matches
        return added

    def known_patient(self, pseudonym_id: str) -> tuple[Patient, dict[str, str]] | None:
        """The patient known as *pseudonym_id* and its sealed originals, or None."""
        with self.store.engine.connect() as connection:
            row = self._patient_row(connection, patients.c.pseudonym_id, pseudonym_id)
        if row is None:
            return None
        originals = self.keys.open(row.sealed, f"patient/{row.patient_hash}") if row.sealed else {}
        return self._to_patient(row), originals

    def original_patient(self, pseudonym_id: str) -> dict[str, str] | None:
        """The sealed originals of the patient known as *pseudonym_id*, or None."""
        known = self.known_patient(pseudonym_id)
        return known[1] if known is not None and known[1] else None

    def _patient_row(self, connection: Any, column: Any, value: str) -> Any:
        """The scope's patient row whose *column* is *value*, or None."""
        return connection.execute(
            select(patients).where(patients.c.scope == self.name, column == value)
        ).first()

    def _to_patient(self, row: Any) -> Patient:
        """A patient row as a Patient, its offset unsealed."""
        sealed = self.keys.open(row.sealed_offset, f"offset/{row.patient_hash}")
        return Patient(
            row.pseudonym_id,
            row.pseudonym_name,
            int(sealed["seconds"]),
            row.patient_hash,
            row.registered,
        )

    def _insert_patient(
        self,
        connection: Any,
        patient_hash: str,
        id_hash: str,
        pseudonym: tuple[str, str, int],
        registered: bool,
        sealed: bytes,
    ) -> None:
        """Insert a patient row (pseudonym id, name, offset) unless the scope has it already."""
        connection.execute(
            self.store._insert(patients)
            .values(
                scope=self.name,
                patient_hash=patient_hash,
                id_hash=id_hash,
                pseudonym_id=pseudonym[0],
                pseudonym_name=pseudonym[1],
                sealed_offset=seal_offset(self.keys, patient_hash, pseudonym[2]),
                registered=registered,
                sealed=sealed,
            )
            .on_conflict_do_nothing()
        )

    # -- UIDs ----------------------------------------------------------------------------------

    def map_uids(self, originals: Iterable[str]) -> dict[str, str]:
        """New UIDs for *originals*, recorded (one transaction for all that are new).

        The rows go in sorted by new UID: two objects of one study recording
        overlapping UIDs at once then never wait on each other in a circle.
        """
        mapping = {original: self.derive_uid(original) for original in originals}
        new_rows: list[dict[str, Any]] = sorted(
            (
                {
                    "scope": self.name,
                    "new_uid": new,
                    "original_hash": self.keys.lookup("uid", original),
                    "sealed": self.keys.seal({"uid": original}, f"uid/{new}"),
                }
                for original, new in mapping.items()
                if self._recorded.get(new) is None
            ),
            key=lambda row: str(row["new_uid"]),
        )
        if new_rows:
            statement = self.store._insert(uids).on_conflict_do_nothing()
            self.store.run(
                lambda connection: connection.execute(statement, new_rows), f"scope {self.name}"
            )
            for row in new_rows:
                self._recorded.put(str(row["new_uid"]), True)
        return mapping

    def original_uid(self, new_uid: str) -> str | None:
        """The original of a UID this scope made, or None when it made no such UID."""
        with self.store.engine.connect() as connection:
            sealed = connection.execute(
                select(uids.c.sealed).where(
                    uids.c.scope == self.name, uids.c.new_uid == new_uid.strip("\x00 ")
                )
            ).scalar()
        if sealed is None:
            return None
        return self.keys.open(sealed, f"uid/{new_uid.strip(chr(0) + ' ')}")["uid"]

    # -- studies -------------------------------------------------------------------------------

    def record_study(
        self, new_study_uid: str, patient: Patient, originals: Mapping[str, str]
    ) -> None:
        """Keep a study's original study-level values (Accession Number, Study ID, date, time).

        The first object of a study records what it has; a later one fills in
        what is still missing (an RT Struct without an Accession Number may come
        first). A value once recorded is kept.
        """
        known = self._studies.get(new_study_uid)
        if known is not None and set(originals) <= known:
            return
        context = f"study/{new_study_uid}"
        where = (studies.c.scope == self.name, studies.c.new_study_uid == new_study_uid)

        def work(connection: Connection) -> frozenset[str]:
            inserted = connection.execute(
                self.store._insert(studies)
                .values(
                    scope=self.name,
                    new_study_uid=new_study_uid,
                    patient_hash=patient.patient_hash,
                    sealed=self.keys.seal(dict(originals), context),
                )
                .on_conflict_do_nothing()
                .returning(studies.c.new_study_uid)
            ).first()
            if inserted is not None:
                return frozenset(originals)
            locked = select(studies.c.sealed).where(*where)
            if connection.dialect.name == "postgresql":
                locked = locked.with_for_update()  # another object may fill in at the same time
            stored = self.keys.open(connection.execute(locked).scalar_one(), context)
            missing = {k: v for k, v in originals.items() if k not in stored}
            if missing:
                merged = {**stored, **missing}
                connection.execute(
                    studies.update().where(*where).values(sealed=self.keys.seal(merged, context))
                )
                return frozenset(merged)
            return frozenset(stored)

        self._studies.put(new_study_uid, self.store.run(work, f"scope {self.name}"))

    def original_study(self, new_study_uid: str) -> dict[str, str] | None:
        """The original study-level values of a pseudonymised study, or None."""
        with self.store.engine.connect() as connection:
            sealed = connection.execute(
                select(studies.c.sealed).where(
                    studies.c.scope == self.name, studies.c.new_study_uid == new_study_uid
                )
            ).scalar()
        return None if sealed is None else self.keys.open(sealed, f"study/{new_study_uid}")

    # -- counters ------------------------------------------------------------------------------

    def increment(self, counter: str) -> int:
        """Add 1 to *counter* (0 when new) and return the new value: 1, 2, 3, ...

        Atomic across processes and nodes sharing the store: no number is
        given twice and none is skipped.
        """
        self._check_counter(counter)
        return self.store.run(
            lambda connection: self._bump(connection, counter, 1), f"scope {self.name}"
        )

    def number_for(self, counter: str, original: str) -> int:
        """The number *counter* gave *original*, or on first sight its next number, recorded.

        The same original (compared exactly) always gets the same number;
        distinct originals get 1, 2, 3, ... with no gap and no repeat, also
        when several processes or nodes ask at once. The store keeps only a
        keyed hash of *original*. A counter used here should not also be
        given to :meth:`increment` (its numbers would then have gaps).
        """
        self._check_counter(counter)
        found = self._numbers.get((counter, original))
        if found is not None:
            return found
        original_hash = self.keys.lookup("counter", counter, original)

        def work(connection: Connection) -> int:
            self._bump(connection, counter, 0)  # write first: the lock, held to the commit
            found = connection.execute(
                select(counter_values.c.number).where(
                    counter_values.c.scope == self.name,
                    counter_values.c.counter == counter,
                    counter_values.c.original_hash == original_hash,
                )
            ).scalar()
            if found is None:
                found = self._bump(connection, counter, 1)
                connection.execute(
                    counter_values.insert().values(
                        scope=self.name,
                        counter=counter,
                        original_hash=original_hash,
                        number=found,
                    )
                )
            return int(found)

        number = self.store.run(work, f"scope {self.name}")
        self._numbers.put((counter, original), number)
        return number

    def _bump(self, connection: Connection, counter: str, step: int) -> int:
        """Add *step* to the counter's row (made at 0 when absent) and return its value.

        The first write of a transaction: it takes the row lock (PostgreSQL) or
        the write lock (SQLite) that the rest of the transaction holds.
        """
        statement = self.store._insert(counters).values(scope=self.name, name=counter, value=step)
        statement = statement.on_conflict_do_update(
            index_elements=[counters.c.scope, counters.c.name],
            set_={"value": counters.c.value + step},
        ).returning(counters.c.value)
        return int(connection.execute(statement).scalar_one())

    def _check_counter(self, counter: str) -> None:
        if not counter or len(counter) > 128:
            raise StoreError(f"scope {self.name}: counter name {counter!r}: 1 to 128 characters")

    # -- export ----------------------------------------------------------------------------------

    def export(self) -> Iterator[dict[str, str]]:
        """The scope's key: one row per patient (pseudonym, offset and the originals)."""
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(patients)
                .where(patients.c.scope == self.name)
                .order_by(patients.c.pseudonym_id)
            ).all()
        for row in rows:
            originals = (
                self.keys.open(row.sealed, f"patient/{row.patient_hash}") if row.sealed else {}
            )
            record: dict[str, str] = {
                "pseudonym_id": str(row.pseudonym_id),
                "pseudonym_name": str(row.pseudonym_name),
                "date_offset_seconds": str(self._to_patient(row).date_offset_seconds),
                "registered": "yes" if row.registered else "no",
            }
            record.update(originals)
            yield record
