"""Batch failure lines name the file, the rule and the kind of failure, never a value.

``coercion deidentify --called ...`` and ``coercion reidentify`` print
``failed <file>: rule <cn>: <kind>`` for an object a rule refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmwrite

from tests.helpers import coercion, make_dataset
from tests.integration.test_pseudonymize import RETURN_RULE, Trial

pytestmark = pytest.mark.integration

STRANGER_ID = "TA-QZXNOTKNOWN"


@pytest.fixture
def trial(tmp_path: Path) -> Trial:
    """The TRIAL_A scope with its pseudonymize rule and the way back, on SQLite."""
    configured = Trial(tmp_path, f"sqlite:///{tmp_path / 'data' / 'store.db'}")
    (configured.config / "21-return.ldif").write_text(RETURN_RULE, encoding="utf-8")
    return configured


def stranger(folder: Path, patient_id: str = STRANGER_ID) -> Path:
    """One object whose Patient ID no scope made (empty: no Patient ID at all)."""
    ds = make_dataset(patient_id=patient_id)
    if not patient_id:
        del ds.PatientID
    folder.mkdir(parents=True, exist_ok=True)
    dcmwrite(folder / "x.dcm", ds, enforce_file_format=True)
    return folder / "x.dcm"


def test_deidentify_called_names_file_rule_and_kind(tmp_path: Path, trial: Trial) -> None:
    """deidentify --called RETURN: "failed <file>: rule reidentify-trial-a: unknown pseudonym"."""
    path = stranger(tmp_path / "in")
    result = trial.run(tmp_path / "in", tmp_path / "out", called="RETURN")
    assert result.returncode == 1
    assert f"failed {path}: rule reidentify-trial-a: unknown pseudonym\n" in result.stderr
    assert STRANGER_ID not in result.stderr
    assert not list((tmp_path / "out").rglob("*.dcm"))


def test_deidentify_without_patient_id_names_the_kind(tmp_path: Path, trial: Trial) -> None:
    """pseudonymize: on an object without Patient ID: "rule pseudonymize-trial-a: no Patient ID"."""
    path = stranger(tmp_path / "in", "")
    result = trial.run(tmp_path / "in", tmp_path / "out")
    assert result.returncode == 1
    assert f"failed {path}: rule pseudonymize-trial-a: no Patient ID\n" in result.stderr


def test_reidentify_names_file_rule_and_kind(tmp_path: Path, trial: Trial) -> None:
    """reidentify TRIAL_A: "failed <file>: rule reidentify:TRIAL_A: unknown pseudonym"."""
    path = stranger(tmp_path / "in")
    result = coercion(
        "reidentify",
        "TRIAL_A",
        tmp_path / "in",
        tmp_path / "back",
        "--config-dir",
        trial.config,
        "--key",
        tmp_path / "secret.key",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"failed {path}: rule reidentify:TRIAL_A: unknown pseudonym\n" in result.stderr
    assert STRANGER_ID not in result.stderr
    assert not list((tmp_path / "back").rglob("*.dcm"))
