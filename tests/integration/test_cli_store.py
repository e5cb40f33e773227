"""``coercion store register|export|stats`` as a user runs them (SQLite store)."""

from __future__ import annotations

import csv
import stat
from pathlib import Path

import pytest

from coercion.store.store import SCHEMA_VERSION
from tests.helpers import coercion

pytestmark = pytest.mark.integration


def test_register_export_and_stats(tmp_path: Path) -> None:
    subjects = tmp_path / "subjects.csv"
    subjects.write_text(
        "PatientID,PseudonymID,PseudonymName\nQZX-001,SUBJ-001,SUBJECT^ONE\nQZX-002,SUBJ-002,\n",
        encoding="utf-8",
    )
    common = ["--store", f"sqlite:///{tmp_path / 'store.db'}", "--key", tmp_path / "k"]
    first = coercion("store", "register", "TRIAL_A", subjects, *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 subjects registered, 0 already were" in first.stdout
    again = coercion("store", "register", "TRIAL_A", subjects, *common, cwd=tmp_path)
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


def test_register_names_the_line_of_a_conflict(tmp_path: Path) -> None:
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("PatientID,PseudonymID\nQZX-001,SUBJ-001\nQZX-002,SUBJ-001\n")
    common = ["--store", f"sqlite:///{tmp_path / 'store.db'}", "--key", tmp_path / "k"]
    result = coercion("store", "register", "TRIAL_A", subjects, *common, cwd=tmp_path)
    assert result.returncode == 6
    assert (
        "subjects.csv: line 3:" in result.stderr and "belongs to another subject" in result.stderr
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Pseudonym\nx,y\n")
    result = coercion("store", "register", "TRIAL_A", bad, *common, cwd=tmp_path)
    assert result.returncode == 2 and "columns PatientID, PseudonymID missing" in result.stderr
