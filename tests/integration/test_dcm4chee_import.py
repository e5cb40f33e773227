"""``coercion config import-dcm4chee`` as a user runs it: dcm4chee-arc's shipped coercion rules
converted, imported into a private slapd, loaded and explained; exit codes and --strict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coercion.directory.ldifio import read_ldif
from coercion.engine import schemes
from coercion.resources import default_ldif_dir
from tests.helpers import coercion
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "dcm4chee"
SAMPLE = ROOT / "samples" / "dicom" / "SAMPLE-0001" / "slice1.dcm"  # a CT, no OtherPatientIDs
DEVICE = "dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,dc=coercion,dc=local"
ARC = "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org"
AES = ("DCM4CHEE", "WORKLIST", "AS_RECEIVED", "IOCM_REGULAR_USE")
#: Our network AEs of the titles dcm4chee-arc's rules sit under.
OUR_AES = "\n".join(
    f"dn: dicomAETitle={title},{DEVICE}\nobjectClass: dicomNetworkAE\ndicomAETitle: {title}\n"
    f"dicomNetworkConnectionReference: cn=dicom,{DEVICE}\n"
    "dicomAssociationInitiator: TRUE\ndicomAssociationAcceptor: TRUE\n"
    for title in AES
)
#: Rules that convert exactly today: de-identification under the AE DCM4CHEE, with conditions.
EXACT = f"""dn: cn=anonymize CT,dicomAETitle=DCM4CHEE,{ARC}
objectClass: dcmArchiveAttributeCoercion2
cn: anonymize CT
dicomDescription: De-identify CT sent to DCM4CHEE
dcmDIMSE: C_STORE_RQ
dicomTransferRole: SCU
dcmURI: deidentify:BasicApplicationConfidentialityProfile,RetainUIDsOption
dcmProperty: Modality=CT
dcmCoercionParam: ignored=by-dcm4chee

dn: cn=other IDs,dicomAETitle=DCM4CHEE,{ARC}
objectClass: dcmArchiveAttributeCoercion2
cn: other IDs
dcmDIMSE: C_STORE_RQ
dicomTransferRole: SCU
dcmURI: deidentify:
dcmProperty: OtherPatientIDs=.*
"""


def ldap_args(server: Slapd, tmp_path: Path) -> list[str]:
    password = tmp_path / "password"
    password.write_text(server.password + "\n", encoding="utf-8")
    return ["--ldap", server.url, "--bind-dn", server.admin_dn, "--password-file", str(password)]


def our_directory(tmp_path: Path) -> Path:
    """The shipped configuration with network AEs of dcm4chee-arc's titles."""
    folder = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), folder)
    (folder / "20-aes.ldif").write_text(OUR_AES, encoding="utf-8")
    return folder


def test_shipped_rules_convert_into_slapd_and_load(slapd: Slapd, tmp_path: Path) -> None:
    """sample-config's 17 rules: under our AEs, inactive unless exact; slapd loads them all."""
    args = ldap_args(slapd, tmp_path)
    aes = tmp_path / "aes.ldif"
    aes.write_text(OUR_AES, encoding="utf-8")
    assert coercion("config", "import", aes, *args).returncode == 0
    out = tmp_path / "converted.ldif"
    result = coercion("config", "import-dcm4chee", DATA / "sample-config.ldif", "--out", out, *args)
    converted = read_ldif(out)
    inactive = [attrs for _dn, attrs in converted if attrs.get("dicomInstalled") == ["FALSE"]]
    assert len(converted) == 17
    assert result.returncode == (9 if inactive else 0), result.stderr
    assert f"17 rules written ({17 - len(inactive)} active, {len(inactive)} inactive)" in (
        result.stderr.replace("\n", " ")
    )
    for dn, attrs in converted:
        scheme = attrs["coercionURI"][0].partition(":")[0]
        if scheme not in schemes():
            assert attrs in inactive, dn
            assert f"{ARC}" not in dn
    placed = {dn.split(",", 2)[1] for dn, _attrs in converted}
    assert placed == {f"dicomAETitle={title}" for title in AES} | {"dicomDeviceName=coercion"}
    imported = coercion("config", "import", out, *args)
    assert imported.returncode == 0, imported.stderr
    assert "17 added" in imported.stdout
    shown = json.loads(coercion("config", "show", "--format", "json", *args).stdout)
    assert len(shown["rules"]) == 3 + 17 - len(inactive)  # the shipped three and the active ones


def test_converted_rules_apply_only_at_their_ae_and_when_conditions_hold(
    slapd: Slapd, tmp_path: Path
) -> None:
    """A converted rule under AE DCM4CHEE applies there only; OtherPatientIDs=.* not when absent."""
    args = ldap_args(slapd, tmp_path)
    aes = tmp_path / "aes.ldif"
    aes.write_text(OUR_AES, encoding="utf-8")
    assert coercion("config", "import", aes, *args).returncode == 0
    source = tmp_path / "exact.ldif"
    source.write_text(EXACT, encoding="utf-8")
    out = tmp_path / "converted.ldif"
    result = coercion("config", "import-dcm4chee", source, "--out", out, *args)
    assert result.returncode == 0, result.stderr
    assert "dcmCoercionParam: dcm4chee-arc ignores it for deidentify:" in result.stderr
    assert coercion("config", "import", out, *args).returncode == 0
    at_arc = coercion("explain", SAMPLE, "--calling", "CT01", "--called", "DCM4CHEE", *args)
    assert at_arc.returncode == 0, at_arc.stderr
    assert "anonymize CT" in at_arc.stdout
    assert "other IDs" not in at_arc.stdout  # the absent attribute never matches
    at_worklist = coercion("explain", SAMPLE, "--calling", "CT01", "--called", "WORKLIST", *args)
    assert at_worklist.returncode == 0, at_worklist.stderr
    assert "no rule applies" in at_worklist.stdout


def test_strict_writes_nothing_and_a_complete_conversion_exits_0(tmp_path: Path) -> None:
    """Exit 9 when a rule is not carried over (nothing written with --strict), 0 when whole."""
    folder = our_directory(tmp_path)
    out = tmp_path / "converted.ldif"
    source = DATA / "default-config.ldif"
    strict = coercion(
        "config", "import-dcm4chee", source, "--strict", "--out", out, "--config-dir", folder
    )
    if any(s not in schemes() for s in ("merge-attrs", "retrieve-as-received")):
        assert strict.returncode == 9
        assert "nothing written (--strict)" in strict.stderr
        assert not out.exists()
    exact = tmp_path / "exact.ldif"
    exact.write_text(EXACT, encoding="utf-8")
    whole = coercion("config", "import-dcm4chee", exact, "--out", out, "--config-dir", folder)
    assert whole.returncode == 0, whole.stderr
    assert "2 rules written (2 active, 0 inactive), 0 not carried over" in whole.stderr
    # the converted rules load with the directory they were placed for
    shutil.copy(out, folder / "30-converted.ldif")
    validated = coercion("config", "validate", "--config-dir", folder)
    assert validated.returncode == 0, validated.stderr
    assert "5 rules" in validated.stdout


def test_missing_ae_is_reported_and_the_rule_inactive(tmp_path: Path) -> None:
    """Converted against the shipped directory (no AE DCM4CHEE): inactive, exit 9."""
    exact = tmp_path / "exact.ldif"
    exact.write_text(EXACT, encoding="utf-8")
    out = tmp_path / "converted.ldif"
    result = coercion("config", "import-dcm4chee", exact, "--out", out)
    assert result.returncode == 9
    assert "its network AE DCM4CHEE (none here by that title)" in result.stderr
    for dn, attrs in read_ldif(out):
        assert dn.endswith(f"(DCM4CHEE),{DEVICE}")
        assert attrs["dicomInstalled"] == ["FALSE"]


def test_config_import_refuses_a_dn_given_twice(slapd: Slapd, tmp_path: Path) -> None:
    """config import names a DN given twice and writes nothing, instead of keeping the last."""
    twice = tmp_path / "twice.ldif"
    rule = (
        f"dn: cn=twice,{DEVICE}\nobjectClass: coercionRule\ncn: twice\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: deidentify:{}\n"
    )
    twice.write_text(rule.format("") + "\n" + rule.format("RetainUIDsOption"), encoding="utf-8")
    result = coercion("config", "import", twice, *ldap_args(slapd, tmp_path))
    assert result.returncode == 2
    assert f"entry cn=twice,{DEVICE}: given more than once" in result.stderr.replace("\n", "")


def test_a_file_without_coercion_entries_is_refused(tmp_path: Path) -> None:
    """A file without any coercion entry (the wrong export?) is an error, not an empty success."""
    empty = tmp_path / "devices.ldif"
    empty.write_text(f"dn: {ARC}\nobjectClass: dicomDevice\ndicomDeviceName: dcm4chee-arc\n")
    result = coercion("config", "import-dcm4chee", empty)
    assert result.returncode == 2
    assert "no dcmArchiveAttributeCoercion2 or dcmArchiveAttributeCoercion entry" in result.stderr
