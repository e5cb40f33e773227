"""Key scopes through ``coercion deidentify``: rules, key=, --key-scope, pseudonym scopes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset

from coercion.resources import default_ldif_dir
from tests.helpers import DEVICE, coercion_in_process, make_dataset

pytestmark = pytest.mark.integration

UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: ``coercion deidentify`` with one worker, run in this process.
DEIDENTIFY = ("deidentify", "--workers", "1")


def rule(name: str, called: str, uri: str, *params: str) -> str:
    """An LDIF rule *name* applying *uri* to C-STORE requests received on *called*."""
    lines = [
        f"dn: cn={name},{DEVICE}",
        "objectClass: coercionRule",
        f"cn: {name}",
        "coercionDIMSE: C_STORE_RQ",
        "dicomTransferRole: SCP",
        f"coercionCondition: ReceivingApplicationEntityTitle={called}",
        f"coercionURI: {uri}",
        *(f"coercionParam: {p}" for p in params),
    ]
    return "\n".join(lines) + "\n\n"


def scope(name: str) -> str:
    """An LDIF pseudonymisation scope *name*."""
    return f"dn: cn={name},{DEVICE}\nobjectClass: coercionPseudonymScope\ncn: {name}\n\n"


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One CT object with an RT-like dummy-token attribute, in its own folder (cwd: tmp_path)."""
    monkeypatch.chdir(tmp_path)  # the default store lives under the working directory
    ds = make_dataset(patient="QZXSCOPE^PAT", patient_id="QZXSCOPE-1")
    ds.StructureSetLabel = "QZX PLAN LABEL"  # D in the Basic Profile: a keyed token
    folder = tmp_path / "in"
    folder.mkdir()
    dcmwrite(folder / "a.dcm", ds, enforce_file_format=True)
    return folder


def config(tmp_path: Path, ldif: str) -> Path:
    """The default configuration plus *ldif*."""
    folder = tmp_path / "config"
    if not folder.exists():
        shutil.copytree(default_ldif_dir(), folder)
    (folder / "20-test.ldif").write_text(ldif, encoding="utf-8")
    return folder


def through(tmp_path: Path, source: Path, folder: Path, called: str, key: Path) -> Dataset:
    """*source* through the rules of *folder* received on *called*; the one output."""
    out = tmp_path / f"out-{called}-{len(list(tmp_path.iterdir()))}"
    coercion_in_process(
        *DEIDENTIFY,
        "--config-dir",
        folder,
        "--called",
        called,
        "--key",
        key,
        source,
        out,
        check=True,
    )
    [path] = list(out.rglob("*.dcm"))
    return dcmread(path)


def identity(ds: Dataset) -> tuple[str, ...]:
    """Patient ID, the dummy token and the UIDs of an output."""
    return (str(ds.PatientID), str(ds.StructureSetLabel), *(str(ds[k].value) for k in UID_KEYWORDS))


def test_two_deidentify_rules_give_unlinkable_outputs(tmp_path: Path, source: Path) -> None:
    """Rules with different names derive different Patient ID tokens and UIDs."""
    key = tmp_path / "secret.key"
    folder = config(
        tmp_path, rule("to-alpha", "ALPHA", "deidentify:") + rule("to-beta", "BETA", "deidentify:")
    )
    alpha = through(tmp_path, source, folder, "ALPHA", key)
    beta = through(tmp_path, source, folder, "BETA", key)
    assert str(alpha.PatientID).startswith("ANON") and str(beta.PatientID).startswith("ANON")
    assert all(a != b for a, b in zip(identity(alpha), identity(beta), strict=True))
    assert identity(through(tmp_path, source, folder, "ALPHA", key)) == identity(alpha)


def test_rules_with_one_key_param_agree_with_each_other_and_the_cli(
    tmp_path: Path, source: Path
) -> None:
    """key=NAME on two rules gives both the values of ``--key-scope NAME``."""
    key = tmp_path / "secret.key"
    ldif = rule("to-alpha", "ALPHA", "deidentify:", "key=shared") + rule(
        "to-beta", "BETA", "deidentify:", "key=shared"
    )
    folder = config(tmp_path, ldif)
    alpha = through(tmp_path, source, folder, "ALPHA", key)
    beta = through(tmp_path, source, folder, "BETA", key)
    assert identity(alpha) == identity(beta)
    coercion_in_process(
        *DEIDENTIFY, "--key", key, "--key-scope", "shared", source, tmp_path / "cli", check=True
    )
    [cli] = [dcmread(p) for p in (tmp_path / "cli").rglob("*.dcm")]
    assert identity(cli) == identity(alpha)


def test_key_scope_option_changes_outputs_and_defaults_to_a_fixed_scope(
    tmp_path: Path, source: Path
) -> None:
    """--key-scope NAME gives other values; the default is the documented scope "default"."""
    key = tmp_path / "secret.key"
    coercion_in_process(*DEIDENTIFY, "--key", key, source, tmp_path / "plain", check=True)
    coercion_in_process(
        *DEIDENTIFY, "--key", key, "--key-scope", "default", source, tmp_path / "named", check=True
    )
    coercion_in_process(
        *DEIDENTIFY, "--key", key, "--key-scope", "trial-b", source, tmp_path / "other", check=True
    )
    plain, named, other = (
        next((tmp_path / name).rglob("*.dcm")) for name in ("plain", "named", "other")
    )
    assert plain.read_bytes() == named.read_bytes()  # byte-identical
    first, second = dcmread(plain), dcmread(other)
    assert all(a != b for a, b in zip(identity(first), identity(second), strict=True))


def test_key_scope_with_rules_is_refused(tmp_path: Path, source: Path) -> None:
    """--key-scope goes with --option: with the directory's rules it is a usage error."""
    folder = config(tmp_path, "")
    result = coercion_in_process(
        *DEIDENTIFY, "--config-dir", folder, "--key-scope", "x", source, tmp_path / "out"
    )
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "out").exists()


def test_pseudonymize_dummy_tokens_differ_across_scopes(tmp_path: Path, source: Path) -> None:
    """Two pseudonymisation scopes give one object different dummy tokens and UIDs."""
    key = tmp_path / "secret.key"
    ldif = (
        scope("TRIAL_A")
        + scope("TRIAL_B")
        + rule("to-a", "TRIAL_A", "pseudonymize:TRIAL_A")
        + rule("to-b", "TRIAL_B", "pseudonymize:TRIAL_B")
    )
    folder = config(tmp_path, ldif)
    a = through(tmp_path, source, folder, "TRIAL_A", key)
    b = through(tmp_path, source, folder, "TRIAL_B", key)
    assert str(a.StructureSetLabel).startswith("ANON")
    assert all(x != y for x, y in zip(identity(a), identity(b), strict=True))
    assert identity(through(tmp_path, source, folder, "TRIAL_A", key)) == identity(a)
