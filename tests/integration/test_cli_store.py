"""``coercion store register|export|stats`` as a user runs them (SQLite store)."""

from __future__ import annotations

import csv
import shutil
import stat
from pathlib import Path

import pytest

from coercion.resources import default_ldif_dir
from coercion.store.store import SCHEMA_VERSION
from tests.helpers import DEVICE, coercion

pytestmark = pytest.mark.integration


def config_dir(tmp_path: Path) -> Path:
    """The shipped directory plus scope TRIAL_A (offsets -400..-30 days)."""
    config = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), config)
    (config / "20-trial.ldif").write_text(
        f"dn: cn=TRIAL_A,{DEVICE}\nobjectClass: coercionPseudonymScope\ncn: TRIAL_A\n"
        "coercionParam: date_offset_range=-400..-30\n\n",
        encoding="utf-8",
    )
    return config


def test_register_export_and_stats(tmp_path: Path) -> None:
    """Register, again (idempotent), stats, export: offsets in the scope's range."""
    subjects = tmp_path / "subjects.csv"
    subjects.write_text(
        "PatientID,PseudonymID,PseudonymName\nQZX-001,SUBJ-001,SUBJECT^ONE\nQZX-002,SUBJ-002,\n",
        encoding="utf-8",
    )
    common = ["--store", f"sqlite:///{tmp_path / 'store.db'}", "--key", tmp_path / "k"]
    directory = ["--config-dir", config_dir(tmp_path)]
    first = coercion("store", "register", "TRIAL_A", subjects, *common, *directory, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 subjects registered, 0 already were" in first.stdout
    again = coercion("store", "register", "TRIAL_A", subjects, *common, *directory, cwd=tmp_path)
    assert "0 subjects registered, 2 already were" in again.stdout
    shown = coercion("store", "stats", *common, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "TRIAL_A" in shown.stdout and f"schema version {SCHEMA_VERSION}" in shown.stdout
    out = tmp_path / "key.csv"
    exported = coercion("store", "export", "TRIAL_A", "--out", out, *common, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "holds PHI" in exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["pseudonym_id"], r["PatientID"]) for r in rows} == {
        ("SUBJ-001", "QZX-001"),
        ("SUBJ-002", "QZX-002"),
    }
    for row in rows:  # the scope's date_offset_range, not the default -3650..-1
        assert -400 * 86400 - 86399 <= int(row["date_offset_seconds"]) <= -30 * 86400


def test_register_names_the_line_of_a_conflict(tmp_path: Path) -> None:
    """A pseudonym given twice, an issuer-less row conflicting with an issuer's: refused."""
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("PatientID,PseudonymID\nQZX-001,SUBJ-001\nQZX-002,SUBJ-001\n")
    common = ["--store", f"sqlite:///{tmp_path / 'store.db'}", "--key", tmp_path / "k"]
    common += ["--config-dir", config_dir(tmp_path)]
    result = coercion("store", "register", "TRIAL_A", subjects, *common, cwd=tmp_path)
    assert result.returncode == 6
    assert (
        "subjects.csv: line 3:" in result.stderr and "belongs to another subject" in result.stderr
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Pseudonym\nx,y\n")
    result = coercion("store", "register", "TRIAL_A", bad, *common, cwd=tmp_path)
    assert result.returncode == 2 and "columns PatientID, PseudonymID missing" in result.stderr
    issuers = tmp_path / "issuers.csv"
    issuers.write_text(
        "PatientID,PseudonymID,IssuerOfPatientID\nQZX-009,SUBJ-009,\nQZX-009,SUBJ-010,HOSP\n"
    )
    result = coercion("store", "register", "TRIAL_A", issuers, *common, cwd=tmp_path)
    assert result.returncode == 6
    assert "issuers.csv: line 3:" in result.stderr and "another pseudonym" in result.stderr


def test_register_refuses_a_scope_the_directory_lacks(tmp_path: Path) -> None:
    """Without the scope's entry there is no date offset range: refused, scopes named."""
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("PatientID,PseudonymID\nQZX-001,SUBJ-001\n")
    common = ["--store", f"sqlite:///{tmp_path / 'store.db'}", "--key", tmp_path / "k"]
    common += ["--config-dir", config_dir(tmp_path)]
    result = coercion("store", "register", "TRIAL_X", subjects, *common, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no scope 'TRIAL_X'" in result.stderr and "TRIAL_A" in result.stderr
