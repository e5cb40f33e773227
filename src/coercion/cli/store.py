"""``coercion store ...``: pre-register subjects, export a scope's key, show the store's figures."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coercion.cli.config import directory_options, open_source
from coercion.defaults import STORE_URL
from coercion.dicom.outputs import output_file
from coercion.errors import ConfigError, StoreError
from coercion.profile.keys import load_or_create_secret

if TYPE_CHECKING:
    from coercion.store import PseudonymStore, ScopeSettings

__all__ = ["store"]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
#: Columns of a subjects file; the first two are required.
SUBJECT_COLUMNS = ("PatientID", "PseudonymID", "PseudonymName", "IssuerOfPatientID")


def _open(url: str, key: Path | None) -> PseudonymStore:
    from coercion.store import PseudonymStore

    return PseudonymStore(url, load_or_create_secret(key))


def _store_options(function: Any) -> Any:
    function = click.option(
        "--key",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Secret key file (the same as the node's: it derives the scopes' keys).",
    )(function)
    return click.option(
        "--store",
        "url",
        envvar="COERCION_STORE",
        default=STORE_URL,
        show_default=True,
        help="Store URL: sqlite:///PATH or postgresql+psycopg://USER:PW@HOST/DB ($COERCION_STORE).",
    )(function)


@click.group()
def store() -> None:
    """Work with the pseudonym store."""


def _scope_settings(scope: str, secret: bytes, directory: dict[str, Any]) -> ScopeSettings:
    """The settings of *scope* in the directory the options name; ConfigError when it has none."""
    from coercion.directory.config import build_configuration
    from coercion.engine import ActionEnv

    device = directory.pop("device")
    source = open_source(directory)
    try:
        entries, origin = source.entries(device), source.origin
    finally:
        source.close()
    env = ActionEnv(secret)
    build_configuration(entries, origin, env, device)
    settings = env.scopes.get(scope)
    if settings is None:
        known = ", ".join(sorted(env.scopes)) or "none"
        raise ConfigError(
            f"{origin}: no scope {scope!r} (coercionPseudonymScope entries: {known}); "
            "registration takes the scope's date_offset_range from there"
        )
    return settings


@store.command()
@click.argument("scope")
@click.argument("subjects", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_store_options
@directory_options
def register(scope: str, subjects: Path, url: str, key: Path | None, **directory: Any) -> None:
    """Pre-register SUBJECTS (CSV: PatientID, PseudonymID[, PseudonymName, IssuerOfPatientID]).

    SCOPE is the directory's: its date_offset_range gives the subjects' offsets. A
    subject registered without an issuer matches objects of its Patient ID with any
    issuer; a registration that conflicts with a known subject is refused.
    """
    from coercion.store import PseudonymStore

    with open(subjects, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in SUBJECT_COLUMNS[:2] if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{subjects}: columns {', '.join(missing)} missing (header row)")
        rows = list(reader)
    secret = load_or_create_secret(key)
    settings = _scope_settings(scope, secret, directory)
    opened = PseudonymStore(url, secret)
    added = known = 0
    try:
        target = opened.scope(scope, settings)
        for number, row in enumerate(rows, start=2):
            patient_id, pseudonym = row["PatientID"].strip(), row["PseudonymID"].strip()
            if not patient_id or not pseudonym:
                raise ConfigError(f"{subjects}: line {number}: PatientID and PseudonymID needed")
            try:
                new = target.register(
                    patient_id,
                    pseudonym,
                    (row.get("PseudonymName") or "").strip() or None,
                    (row.get("IssuerOfPatientID") or "").strip(),
                )
            except StoreError as exc:
                raise StoreError(f"{subjects}: line {number}: {exc}") from None
            added, known = (added + 1, known) if new else (added, known + 1)
    finally:
        opened.close()
    _out.print(f"scope {escape(scope)}: {added} subjects registered, {known} already were")


@store.command()
@click.argument("scope")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    required=True,
    help="The key file to write (CSV, mode 0600; - for stdout).",
)
@_store_options
def export(scope: str, out_path: Path, url: str, key: Path | None) -> None:
    """Write the key of SCOPE (pseudonym -> original identity) as CSV. It holds PHI."""
    opened = _open(url, key)
    try:
        rows = list(opened.scope(scope).export())
    finally:
        opened.close()
    columns = ["pseudonym_id", "pseudonym_name", "date_offset_seconds", "registered"]
    columns += sorted({k for row in rows for k in row} - set(columns))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with (
        output_file(out_path, what="cannot write the key") as fd,
        open(fd, "wb", closefd=False) as handle,
    ):
        handle.write(buffer.getvalue().encode("utf-8"))
    _err.print(
        f"[yellow]warning:[/] {escape(str(out_path))} holds PHI ({len(rows)} subjects of scope "
        f"{escape(scope)}); keep it as safe as the originals"
    )


@store.command()
@_store_options
def stats(url: str, key: Path | None) -> None:
    """Per scope: patients, registered subjects, UIDs, studies, counters."""
    opened = _open(url, key)
    try:
        figures = opened.stats()
        version = opened.schema_version()
    finally:
        opened.close()
    table = Table(title=f"store (schema version {version})")
    columns = ("patients", "registered", "uids", "studies", "counters", "counter values")
    table.add_column("scope")
    for column in columns:
        table.add_column(column, justify="right")
    for scope in sorted(figures):
        table.add_row(escape(scope), *(str(figures[scope].get(c, 0)) for c in columns))
    _out.print(table)
