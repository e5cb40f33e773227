"""``coercion config ...``, ``explain`` and ``deidentify`` with rules, run as a user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import ldap3
import pytest
from pydicom import dcmread

from coercion.directory.ldifio import read_ldif
from coercion.resources import default_ldif_dir
from tests.helpers import coercion
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "dicom"
BASE = "dc=coercion,dc=local"
DEVICE = f"dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,{BASE}"


def config_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), folder)
    return folder


def ldap_args(server: Slapd, tmp_path: Path) -> list[str]:
    password = tmp_path / "password"
    password.write_text(server.password + "\n", encoding="utf-8")
    return ["--ldap", server.url, "--bind-dn", server.admin_dn, "--password-file", str(password)]


NEW_RULE = f"""dn: cn=deidentify-ct01,{DEVICE}
objectClass: coercionRule
cn: deidentify-ct01
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionCondition: SendingApplicationEntityTitle=CT01
coercionCondition: Modality=CT
coercionURI: deidentify:RetainUIDsOption
coercionPriority: 20
"""


def test_validate_the_default_configuration() -> None:
    result = coercion("config", "validate")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "3 rules for device coercion" in result.stdout


def test_validate_lists_every_problem_with_dn_and_attribute(tmp_path: Path) -> None:
    folder = config_copy(tmp_path)
    (folder / "20-bad.ldif").write_text(
        NEW_RULE.replace("C_STORE_RQ", "C_STORE").replace("Modality=CT", "Modalty=CT")
        + f"\ndn: cn=second,{DEVICE}\nobjectClass: coercionRule\ncn: second\n"
        "coercionDIMSE: C_FIND_RQ\ndicomTransferRole: SCP\n"
        "coercionURI: deidentify:RetainUIDOption\n",
        encoding="utf-8",
    )
    result = coercion("config", "validate", "--config-dir", folder)
    assert result.returncode == 2
    assert f"cn=deidentify-ct01,{DEVICE}: attribute coercionDIMSE: 'C_STORE' is not one of" in (
        result.stderr.replace("\n", "")
    )
    assert f"cn=second,{DEVICE}: attribute coercionURI" in result.stderr.replace("\n", "")
    assert "RetainUIDsOption" in result.stderr  # the did-you-mean


def test_validate_names_file_and_line_of_broken_ldif(tmp_path: Path) -> None:
    folder = config_copy(tmp_path)
    (folder / "30-broken.ldif").write_text("dn: cn=x\nno colon here\n", encoding="utf-8")
    result = coercion("config", "validate", "--config-dir", folder)
    assert result.returncode == 2
    assert "30-broken.ldif: line" in result.stderr


def test_show_prints_the_rules_in_order() -> None:
    result = coercion("config", "show")
    assert result.returncode == 0, result.stderr
    names = ["deidentify-research-store", "deidentify-research-modality-worklist"]
    assert all(name in result.stdout for name in names)
    assert result.stdout.index(names[0]) < result.stdout.index(names[1])
    assert "SendingApplicationEntityTitle=RESEARCH_.*" in result.stdout


def test_export_round_trips_through_a_config_dir(tmp_path: Path) -> None:
    out = tmp_path / "export.ldif"
    result = coercion("config", "export", "--out", out)
    assert result.returncode == 0, result.stderr
    exported = read_ldif(out)
    shipped = read_ldif(default_ldif_dir() / "10-default-config.ldif")
    remote = ("ct-scanner-1", "research-mr", "ris")  # devices the node does not reference
    expected = [dn for dn, _ in shipped if not any(f"dicomDeviceName={d}," in dn for d in remote)]
    assert sorted(dn for dn, _ in exported) == sorted(expected)
    folder = tmp_path / "again"
    folder.mkdir()
    for schema in default_ldif_dir().glob("0*-schema.ldif"):
        shutil.copy(schema, folder)
    shutil.copy(out, folder / "10-exported.ldif")
    shown = coercion("config", "validate", "--config-dir", folder)
    assert shown.returncode == 0, shown.stderr
    assert "3 rules" in shown.stdout


def test_import_adds_and_modifies_entries_in_slapd(slapd: Slapd, tmp_path: Path) -> None:
    changes = tmp_path / "changes.ldif"
    research = f"cn=deidentify-research-store,dicomAETitle=RESEARCH,{DEVICE}"
    changes.write_text(
        NEW_RULE + f"\ndn: {research}\nobjectClass: coercionRule\ncn: deidentify-research-store\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\n"
        "coercionURI: deidentify:RetainUIDsOption\ncoercionPriority: 7\n",
        encoding="utf-8",
    )
    args = ldap_args(slapd, tmp_path)
    result = coercion("config", "import", changes, *args)
    assert result.returncode == 0, result.stderr
    assert "1 added, 1 modified, 0 unchanged" in result.stdout
    assert "4 rules" in result.stdout
    connection = ldap3.Connection(ldap3.Server(slapd.url), auto_bind=True)
    connection.search(research, "(objectClass=*)", ldap3.BASE, attributes=["*"])
    attributes = connection.response[0]["attributes"]
    assert attributes["coercionPriority"] == 7
    assert "coercionSufficient" not in attributes  # the entry now holds what the file says
    connection.unbind()
    again = coercion("config", "import", changes, *args)
    assert "0 added, 0 modified, 2 unchanged" in again.stdout
    shown = coercion("config", "show", *args)
    assert "deidentify-ct01" in shown.stdout


def test_import_refuses_an_invalid_file_and_writes_nothing(slapd: Slapd, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ldif"
    bad.write_text(NEW_RULE.replace("coercionPriority: 20", "coercionPriority: 20\nfoo: bar"))
    result = coercion("config", "import", bad, *ldap_args(slapd, tmp_path))
    assert result.returncode == 2
    assert "attribute foo: not allowed in a coercionRule" in result.stderr
    connection = ldap3.Connection(ldap3.Server(slapd.url), auto_bind=True)
    connection.search(BASE, "(cn=deidentify-ct01)", attributes=["cn"])
    assert connection.response == []
    connection.unbind()


def test_validate_against_an_unreachable_server_says_so(tmp_path: Path) -> None:
    result = coercion("config", "validate", "--ldap", "ldap://127.0.0.1:9")
    assert result.returncode == 3
    assert "ldap://127.0.0.1:9: cannot connect" in result.stderr


def test_explain_shows_rules_and_actions_but_no_values() -> None:
    sample = sorted(SAMPLES.rglob("*.dcm"))[0]
    ds = dcmread(sample)
    result = coercion("explain", sample, "--calling", "CT01", "--called", "RESEARCH")
    assert result.returncode == 0, result.stderr
    assert "deidentify-research-store" in result.stdout
    assert "PatientName" in result.stdout and "SOPInstanceUID" in result.stdout
    for value in (str(ds.PatientName), ds.PatientID, ds.SOPInstanceUID, ds.StudyInstanceUID):
        assert value not in result.stdout + result.stderr
    none = coercion("explain", sample, "--calling", "CT01", "--called", "COERCION")
    assert "no rule applies" in none.stdout


def test_deidentify_through_the_rules(tmp_path: Path) -> None:
    research, clinical = tmp_path / "research", tmp_path / "clinical"
    key = tmp_path / "secret.key"
    result = coercion(
        "deidentify", "--key", key, "--calling", "CT01", "--called", "RESEARCH", SAMPLES, research
    )
    assert result.returncode == 0, result.stderr
    result = coercion(
        "deidentify", "--key", key, "--calling", "CT01", "--called", "COERCION", SAMPLES, clinical
    )
    assert result.returncode == 0, result.stderr
    for source in SAMPLES.rglob("*.dcm"):
        relative = source.relative_to(SAMPLES)
        original, coerced, kept = (
            dcmread(source),
            dcmread(research / relative),
            dcmread(clinical / relative),
        )
        assert coerced.PatientName != original.PatientName
        assert coerced.SOPInstanceUID != original.SOPInstanceUID
        assert coerced.DeidentificationMethod  # marked
        assert kept.PatientName == original.PatientName  # no rule for COERCION
        assert kept.SOPInstanceUID == original.SOPInstanceUID


def test_deidentify_refuses_options_together_with_rules(tmp_path: Path) -> None:
    result = coercion(
        "deidentify",
        "--option",
        "RetainUIDsOption",
        "--called",
        "RESEARCH",
        SAMPLES,
        tmp_path / "o",
    )
    assert result.returncode == 2
    assert "exclude each other" in result.stderr
