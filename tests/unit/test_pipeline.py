"""The one coerce -> encode -> verify -> write pipeline: rules, retention and verification."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite

from coercion.batch import command_line_rule
from coercion.dicom.part10 import read_file
from coercion.engine import (
    ActionEnv,
    Dimse,
    Engine,
    EventContext,
    Role,
    RuleSet,
)
from coercion.engine.pipeline import apply_rules, prepare, write
from coercion.errors import VerificationError
from coercion.profile import Action
from tests.helpers import SECRET, make_dataset

CTX = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "RESEARCH")


def engine(uri: str | None) -> Engine:
    """An engine with one rule for C_STORE_RQ/SCP running *uri* (none when None)."""
    if uri is None:
        return Engine(RuleSet([]))
    return Engine(RuleSet([command_line_rule(uri, ActionEnv(SECRET))]))


def source(tmp_path: Path, leaky: bool) -> Path:
    """A CT object on disk; *leaky*: its ManufacturerModelName (kept) names the patient."""
    ds = make_dataset(patient="QZXPIPE^ANNA")
    ds.StudyDescription = "CT head"
    if leaky:
        ds.ManufacturerModelName = "Console of Anna Qzxpipe"
    path = tmp_path / "in.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_a_deidentified_object_is_encoded_verified_and_written(tmp_path: Path) -> None:
    """deidentify: applies; the verified output is written and no longer names the patient."""
    path = source(tmp_path, leaky=False)
    prepared = prepare(
        read_file(path), apply_rules(engine("deidentify:"), CTX), verify=True, name="in.dcm"
    )
    assert prepared.coerced.changed and prepared.coerced.retention is not None
    encoded = prepared.encode()
    prepared.verify(encoded)
    write(encoded, tmp_path / "out.dcm", sync=False)
    out = dcmread(tmp_path / "out.dcm")
    assert out.PatientIdentityRemoved == "YES" and "QZXPIPE" not in str(out.PatientName)


def test_a_leak_raises_naming_the_attribute_never_the_value(tmp_path: Path) -> None:
    """A kept attribute holding the name fails verification; the message names PatientName."""
    path = source(tmp_path, leaky=True)
    prepared = prepare(
        read_file(path), apply_rules(engine("deidentify:"), CTX), verify=True, name="in.dcm"
    )
    with pytest.raises(VerificationError) as raised:
        prepared.verify(prepared.encode())
    assert str(raised.value) == (
        "in.dcm: output still holds identifying values of PatientName; nothing written"
    )


def test_without_verification_the_leak_passes(tmp_path: Path) -> None:
    """verify=False collects nothing, so nothing is found."""
    path = source(tmp_path, leaky=True)
    prepared = prepare(
        read_file(path), apply_rules(engine("deidentify:"), CTX), verify=False, name="in.dcm"
    )
    assert prepared.identifiers is None
    prepared.verify(prepared.encode())  # no error


def test_no_rule_leaves_the_object_unchanged_and_unverified(tmp_path: Path) -> None:
    """Nothing applied: not changed, no retention (the caller keeps the bytes it read)."""
    path = source(tmp_path, leaky=True)
    ds = read_file(path)
    prepared = prepare(ds, apply_rules(engine(None), CTX), verify=True, name="in.dcm")
    assert not prepared.coerced.changed and prepared.coerced.retention is None
    assert prepared.dataset is ds
    prepared.verify(prepared.encode())  # nothing de-identified: nothing to verify


def test_retention_is_the_deidentify_rules_profile(tmp_path: Path) -> None:
    """The retention of a deidentify: rule is its compiled profile (K attributes not looked for)."""
    path = source(tmp_path, leaky=False)
    prepared = prepare(
        read_file(path),
        apply_rules(engine("deidentify:RetainUIDsOption"), CTX),
        verify=True,
        name="in.dcm",
    )
    keeps = prepared.coerced.retention
    assert keeps is not None
    assert keeps.action_for(0x00080018) is Action.K  # SOP Instance UID kept on purpose
    assert keeps.action_for(0x00100010) is not Action.K
