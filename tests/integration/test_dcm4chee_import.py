"""``coercion config import-dcm4chee`` as a user runs it: dcm4chee-arc's shipped coercion rules
converted, imported into a private slapd, loaded and explained; exit codes and --strict."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from coercion.directory.ldifio import read_ldif
from coercion.engine import schemes
from coercion.resources import default_ldif_dir
from tests.helpers import Start, coercion, dcmtk, remote_device, stored, wait_until
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "dcm4chee"
SAMPLE = ROOT / "samples" / "dicom" / "SAMPLE-0001" / "slice1.dcm"  # a CT, no OtherPatientIDs
DEVICE = "dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,dc=coercion,dc=local"
ARC = "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org"
SAMPLE_CONFIG = DATA / "sample-config.ldif"
XSL = DATA / "xsl"  # stylesheets written for the tests, named as dcm4chee-arc's
AES = ("DCM4CHEE", "WORKLIST", "AS_RECEIVED", "IOCM_REGULAR_USE")
#: The rules of dcm4chee-arc's own services, which have no counterpart here.
DCM4CHEE_ONLY = {"Leading DCMQRSCP FIND", "Leading DCMQRSCP STORE", "RetrieveAsReceived"}
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


def flat(text: str) -> str:
    """*text* on one line (rich wraps long lines)."""
    return " ".join(text.split())


def convert_sample(out: Path, args: list[str]) -> CompletedProcess[str]:
    """import-dcm4chee of sample-config.ldif with our stylesheets of dcm4chee-arc's names."""
    return coercion(
        "config", "import-dcm4chee", SAMPLE_CONFIG, "--stylesheets", XSL, "--out", out, *args
    )


def ct_object(path: Path, **changes: str | None) -> Path:
    """pydicom's CT_small.dcm with a new SOP Instance UID and *changes* (None: removed)."""
    source = get_testdata_file("CT_small.dcm", download=False)
    assert source is not None
    ds = dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def more_than(data: Path, count: int) -> bool:
    """Whether the node with data folder *data* has stored more than *count* objects."""
    return len(stored(data)) > count


def with_our_aes(server: Slapd, tmp_path: Path) -> list[str]:
    """Import our network AEs of dcm4chee-arc's titles into *server*; the CLI options for it."""
    args = ldap_args(server, tmp_path)
    aes = tmp_path / "aes.ldif"
    aes.write_text(OUR_AES, encoding="utf-8")
    assert coercion("config", "import", aes, *args).returncode == 0
    return args


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
    """sample-config's 17 rules with --stylesheets: all active but leading-arc: and
    retrieve-as-received:; the devices carried over; slapd takes it all and it validates."""
    args = with_our_aes(slapd, tmp_path)
    bare = coercion("config", "import-dcm4chee", SAMPLE_CONFIG, "--out", tmp_path / "x", *args)
    assert bare.returncode == 9
    assert "17 rules written (7 active, 10 inactive)" in flat(bare.stderr)
    assert "pass --stylesheets" in flat(bare.stderr)
    out = tmp_path / "converted.ldif"
    result = convert_sample(out, args)
    assert result.returncode == 9, result.stderr
    assert "17 rules written (14 active, 3 inactive), 2 devices carried over" in flat(result.stderr)
    converted = read_ldif(out)
    rules = [(dn, attrs) for dn, attrs in converted if attrs["objectClass"] == ["coercionRule"]]
    inactive = {attrs["cn"][0] for _dn, attrs in rules if attrs.get("dicomInstalled") == ["FALSE"]}
    assert inactive == DCM4CHEE_ONLY
    for dn, attrs in rules:
        scheme = attrs["coercionURI"][0].partition(":")[0]
        assert (scheme in schemes()) or attrs["cn"][0] in DCM4CHEE_ONLY, dn
        assert "${" not in attrs["coercionURI"][0] or attrs["cn"][0] in inactive
    placed = {dn.split(",", 2)[1] for dn, _attrs in rules}
    assert placed == {f"dicomAETitle={title}" for title in AES} | {"dicomDeviceName=coercion"}
    imported = coercion("config", "import", out, *args)
    assert imported.returncode == 0, imported.stderr
    assert "25 added" in imported.stdout  # 17 rules, 2 devices with 2 connections and an AE each
    validated = coercion("config", "validate", *args)
    assert validated.returncode == 0, validated.stderr
    shown = json.loads(coercion("config", "show", "--format", "json", *args).stdout)
    assert len(shown["rules"]) == 3 + 14  # the shipped three and the active ones


def test_explain_shows_the_shipped_rules_where_dcm4chee_arc_applies_them(
    slapd: Slapd, tmp_path: Path
) -> None:
    """Converted sample-config in slapd: each rule at its AE, with its calling AE and conditions."""
    args = with_our_aes(slapd, tmp_path)
    out = tmp_path / "converted.ldif"
    assert convert_sample(out, args).returncode == 9
    assert coercion("config", "import", out, *args).returncode == 0
    no_issuer = ct_object(tmp_path / "no-issuer.dcm")
    with_issuer = ct_object(tmp_path / "issuer.dcm", IssuerOfPatientID="SITE")

    def explain(path: Path, calling: str, called: str, *extra: str) -> str:
        shown = coercion("explain", path, "--calling", calling, "--called", called, *extra, *args)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout

    at_arc = explain(no_issuer, "CT01", "DCM4CHEE")
    assert "SupplementIssuerOfPatientID" in at_arc  # IssuerOfPatientID!=.+ holds
    assert "Ensure PID" not in at_arc  # SendingApplicationEntityTitle=ENSURE_PID does not
    assert "no rule applies" in explain(with_issuer, "CT01", "DCM4CHEE")
    assert "no rule applies" in explain(no_issuer, "CT01", "WORKLIST")  # an MPPS rule there
    ensure = explain(with_issuer, "ENSURE_PID", "AS_RECEIVED")
    assert "Ensure PID" in ensure and "SupplementIssuerOfPatientID" not in ensure
    merged = explain(with_issuer, "MERGE_MWL", "DCM4CHEE")
    assert "Merge MWL" in merged and "Merge MWL Study" not in merged
    supplemented = explain(with_issuer, "STORESCU", "AS_RECEIVED")
    assert "Supplement Composite" in supplemented and "Supplement MPPS" not in supplemented
    sent = explain(with_issuer, "IOCM_REGULAR_USE", "NULLIFY_PN", "--role", "SCU")
    assert "Nullify PN" in sent


def test_converted_rules_run_on_a_node(slapd: Slapd, serve: Start, tmp_path: Path) -> None:
    """merge-attrs:, xslt: and sup-from-dev: rules of sample-config on objects sent with dcmtk's
    storescu to a node reading slapd; the carried storescu device supplements what it sends."""
    args = with_our_aes(slapd, tmp_path)
    out = tmp_path / "converted.ldif"
    assert "17 rules written (14 active, 3 inactive)" in flat(convert_sample(out, args).stderr)
    assert coercion("config", "import", out, *args).returncode == 0
    node = serve(None, *args)
    sends: dict[str, tuple[str, str, dict[str, str | None]]] = {
        "merge-attrs": ("CT01", "DCM4CHEE", {"IssuerOfPatientID": None}),
        "xslt": ("ENSURE_PID", "AS_RECEIVED", {"PatientID": None}),
        "sup-from-dev": (
            "STORESCU",
            "AS_RECEIVED",
            {"InstitutionName": None, "AccessionNumber": "A-1", "AdmissionID": "ADM-1"},
        ),
    }
    uids = {}
    for number, (scheme, (calling, called, changes)) in enumerate(sends.items()):
        path = ct_object(tmp_path / f"{scheme}.dcm", **changes)
        uids[scheme] = dcmread(path).SOPInstanceUID
        sent = dcmtk("storescu", "-aet", calling, "-aec", called, "127.0.0.1", node.port, path)
        assert sent.returncode == 0, sent.stderr
        wait_until(partial(more_than, node.data, number), "the object stored", detail=node.text)
    by_uid = {ds.SOPInstanceUID: ds for ds in map(dcmread, stored(node.data))}
    merged = by_uid[uids["merge-attrs"]]
    assert merged.IssuerOfPatientID.startswith("DCM4CHEE.")  # DCM4CHEE.{hash}.{hash}
    assert len(merged.IssuerOfPatientID.split(".")) == 3
    ensured = by_uid[uids["xslt"]]
    assert ensured.PatientID == ensured.StudyInstanceUID  # ensure-pid.xsl (ours, same name)
    assert ensured.IssuerOfPatientID == "ENSURE_PID"
    supplemented = by_uid[uids["sup-from-dev"]]
    assert supplemented.InstitutionName == "Site A"  # the carried storescu device's
    assert supplemented.IssuerOfPatientID == "Site A"
    qualifiers = supplemented.IssuerOfPatientIDQualifiersSequence[0]
    assert qualifiers.UniversalEntityID == "1.2.40.0.13.1.1.999.111.1111"
    assert qualifiers.UniversalEntityIDType == "ISO"
    for sequence in ("IssuerOfAccessionNumberSequence", "IssuerOfAdmissionIDSequence"):
        issuer = supplemented[sequence][0]
        assert issuer.LocalNamespaceEntityID == "Site A"
        assert issuer.UniversalEntityID == "1.2.40.0.13.1.1.999.111.1111"
    code = supplemented.InstitutionCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "111.1111",
        "99DCM4CHEE",
        "Site A",
    )


def test_converted_rules_apply_only_at_their_ae_and_when_conditions_hold(
    slapd: Slapd, tmp_path: Path
) -> None:
    """A converted rule under AE DCM4CHEE applies there only; OtherPatientIDs=.* not when absent."""
    args = with_our_aes(slapd, tmp_path)
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
    assert "2 rules written (2 active, 0 inactive), 0 devices carried over, 0 not carried over" in (
        flat(whole.stderr)
    )
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


def test_a_device_the_directory_has_is_not_carried_over(tmp_path: Path) -> None:
    """sup-from-dev's storescu already a device of the directory: only mppsscu is carried."""
    folder = our_directory(tmp_path)
    (folder / "21-storescu.ldif").write_text(remote_device("storescu", "STORESCU", 11113))
    out = tmp_path / "converted.ldif"
    result = coercion(
        "config",
        "import-dcm4chee",
        SAMPLE_CONFIG,
        "--stylesheets",
        XSL,
        "--out",
        out,
        "--config-dir",
        folder,
    )
    assert "2 devices" not in flat(result.stderr)
    assert "1 device carried over" in flat(result.stderr)
    devices = [a["dicomDeviceName"][0] for _dn, a in read_ldif(out) if "dicomDeviceName" in a]
    assert devices == ["mppsscu"]
    shutil.copy(out, folder / "30-converted.ldif")
    validated = coercion("config", "validate", "--config-dir", folder)
    assert validated.returncode == 0, validated.stderr
