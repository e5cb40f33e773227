"""The dcm4chee-arc coercion schemes on pydicom's test files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from coercion.coerce.template import java_hash, parse_template
from coercion.directory.config import build_configuration
from coercion.directory.sources import EmbeddedDirectory
from coercion.engine import ActionEnv, Dimse, EventContext, PeerDevice, Role, build_action
from coercion.errors import RuleFailedError
from tests.helpers import DEVICE, config_dir, remote_device

SECRET = b"k" * 32
CTX = EventContext(Dimse.C_STORE_RQ, Role.SCP, "MODALITY1", "COERCION", "10.0.0.5", "10.0.0.1")
XSL_HEAD = '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'


def _file(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None
    return dcmread(path)


def _action(uri: str, params: dict[str, str] | None = None, env: ActionEnv | None = None):  # type: ignore[no-untyped-def]
    return build_action(uri, params or {}, env or ActionEnv(SECRET))


def _roundtrip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def test_template_hash_matches_java_string_hashcode() -> None:
    """{X,hash} is Java's String.hashCode in 8 hex digits, so issuers match dcm4chee-arc's."""
    assert java_hash("hello") == "05E918D2"  # "hello".hashCode() == 99162322
    assert java_hash("Doe^John") == f"{_java('Doe^John'):08X}"


def _java(text: str) -> int:
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value


def test_template_formats_on_ct_small() -> None:
    """Placeholders: plain, upper, nested, slice, date with a period, number, offset, now."""
    ds = _file("CT_small.dcm")
    cases = {
        "{PatientName,upper}": "COMPRESSEDSAMPLES^CT1",
        "{OtherPatientIDsSequence.PatientID}": "ABCD1234",
        "{00100020,slice,0,3}": "1CT",
        "{PatientID,slice,-2}": "T1",
        "{StudyDate,date-P1D,yyyy-MM-dd}": "2004-01-18",
        "{StudyTime,time+PT1H,HHmm}": "0827",
        "{SliceThickness,number,0.00}": "5.00",
        "{InstanceNumber,offset,10}": "11",
        "it''s {PatientID}": "it's 1CT1",
        "{PatientBirthDate,hash}": "null",
    }
    for text, expected in cases.items():
        assert parse_template(text).render(ds) == expected, text
    assert parse_template("{now,date,yyyy}").render(ds).isdigit()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{PatientNam}", "did you mean PatientName"),
        ("{PatientName,foo}", "unknown type 'foo'"),
        ("{StudyDate,date}", "give a pattern"),
        ("{StudyDate,date,yyyyQQ}", "date letter 'Q'"),
        ("{PatientName", "without its '}'"),
        ("{SliceThickness,number,$0}", "number format"),
        ("{PatientID,slice,a}", "slice takes"),
    ],
)
def test_merge_attrs_refuses_bad_templates(template: str, message: str) -> None:
    """A bad placeholder fails at load, naming the parameter and what to fix."""
    with pytest.raises(ValueError, match="merge-attrs: parameter") as caught:
        _action("merge-attrs:", {"IssuerOfPatientID": template})
    assert message in str(caught.value)


def test_merge_attrs_sets_nested_empties_and_removes() -> None:
    """PATH=TEMPLATE sets (making items), PATH= empties, PATH! removes, as dcmMergeAttribute."""
    ds = _file("CT_small.dcm")
    action = _action(
        "merge-attrs:",
        {
            "IssuerOfPatientID": "DCM4CHEE.{PatientName,hash}.{PatientBirthDate,hash}",
            "IssuerOfPatientIDQualifiersSequence.UniversalEntityID": "{PatientID}-X",
            "RequestAttributesSequence[2].AccessionNumber": "{StudyID}",
            "ReferringPhysicianName": "",
            "OtherPatientIDsSequence!": "",
        },
    )
    changes = action.apply(ds, CTX)
    out = _roundtrip(ds)
    assert out.IssuerOfPatientID == f"DCM4CHEE.{java_hash('CompressedSamples^CT1')}.null"
    assert out.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "1CT1-X"
    assert len(out.RequestAttributesSequence) == 2
    assert out.RequestAttributesSequence[1].AccessionNumber == out.StudyID
    assert "OtherPatientIDsSequence" not in out
    assert {c.action.value for c in changes} >= {"D", "X"}


def test_merge_attrs_empties_an_attribute() -> None:
    """PATH= (no template) empties an attribute that has a value."""
    ds = _file("MR_small.dcm")
    assert ds.InstitutionName
    changes = _action("merge-attrs:", {"InstitutionName": ""}).apply(ds, CTX)
    assert _roundtrip(ds).InstitutionName == ""
    assert [c.action.value for c in changes] == ["Z"]


def test_merge_attrs_refuses_uri_argument_and_no_parameter() -> None:
    """merge-attrs: takes its merges as parameters, and at least one."""
    with pytest.raises(ValueError, match="nothing after the colon"):
        _action("merge-attrs:PatientName")
    with pytest.raises(ValueError, match="no attribute to merge"):
        _action("merge-attrs:")
    with pytest.raises(ValueError, match="takes no value"):
        _action("merge-attrs:", {"PatientName!": "x"})


def test_nullify_tag_empties_listed_and_nested() -> None:
    """nullify-tag: empties keywords, hex tags and every item a nested path reaches."""
    ds = _file("CT_small.dcm")
    action = _action("nullify-tag:PatientName,00100030,OtherPatientIDsSequence.PatientID")
    changes = action.apply(ds, CTX)
    out = _roundtrip(ds)
    assert out.PatientName == ""
    assert all(item.PatientID == "" for item in out.OtherPatientIDsSequence)
    assert len(changes) >= 3
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        _action("nullify-tag:PatientNme")
    with pytest.raises(ValueError, match="no attribute"):
        _action("nullify-tag:")


def test_nullify_pixel_data_keeps_the_rest() -> None:
    """nullify-pixel-data: empties Pixel Data; every other attribute stays."""
    ds = _file("CT_small.dcm")
    before = len(ds)
    changes = _action("nullify-pixel-data:").apply(ds, CTX)
    out = _roundtrip(ds)
    assert not out.PixelData  # read back empty
    assert len(out) == before and out.PatientID == "1CT1"
    assert [hex(c.tag) for c in changes] == ["0x7fe00010"]
    for uri in ("nullify-pixel-data:all", "trim-ISO2022:x"):
        with pytest.raises(ValueError, match="takes nothing after the colon"):
            _action(uri)


def test_use_calling_aet_as_station_and_series() -> None:
    """The calling AE title goes into an absent Scheduled Station AE Title / private SendingAET."""
    query = Dataset()
    changes = _action("use-calling-aet-as:ScheduledStationAETitle").apply(query, CTX)
    step = query.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "MODALITY1"
    assert "Modality" in step and changes
    assert _action("use-calling-aet-as:ScheduledStationAETitle").apply(query, CTX) == []
    ds = _file("MR_small.dcm")
    _action("use-calling-aet-as:SendingApplicationEntityTitleOfSeries").apply(ds, CTX)
    block = _roundtrip(ds).private_block(0x7777, "DCM4CHEE Archive 5")
    assert block[0x37].value == "MODALITY1"
    with pytest.raises(ValueError, match="is not a target"):
        _action("use-calling-aet-as:StationName")


def test_change_charset_reencodes_and_refuses_unencodable() -> None:
    """change-charset: writes text in the target set; a value it cannot encode fails the rule."""
    ds = _file("CT_small.dcm")
    ds.PatientName = "Müller^Jörg"
    _action("change-charset:ISO_IR 192").apply(ds, CTX)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "Müller^Jörg".encode() in buffer.getvalue()  # UTF-8 bytes
    out = dcmread(io.BytesIO(buffer.getvalue()))
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.PatientName == "Müller^Jörg"
    latin = _file("CT_small.dcm")
    latin.PatientName = "Ωmega"
    with pytest.raises(RuleFailedError, match=r"\(0010,0010\) has characters") as caught:
        _action("change-charset:ISO_IR 100").apply(latin, CTX)
    assert "Ωmega" not in str(caught.value)
    with pytest.raises(ValueError, match="not a Specific Character Set term"):
        _action("change-charset:ISO_IR 999")


def test_trim_iso2022_single_term() -> None:
    """trim-ISO2022: a single ISO 2022 term becomes the plain one; multi-byte sets stay."""
    ds = _file("MR_small.dcm")
    ds.SpecificCharacterSet = "ISO 2022 IR 100"
    assert _action("trim-ISO2022:").apply(ds, CTX)
    assert _roundtrip(ds).SpecificCharacterSet == "ISO_IR 100"
    ds.SpecificCharacterSet = ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    _action("trim-ISO2022:").apply(ds, CTX)  # every value ASCII: the extension is unused
    assert ds.SpecificCharacterSet == ""
    jp = _file("MR_small.dcm")
    jp.SpecificCharacterSet = "ISO 2022 IR 87"
    assert _action("trim-ISO2022:").apply(jp, CTX) == []


def test_sup_from_dev_from_the_directory(tmp_path: Path) -> None:
    """sup-from-dev: fills absent attributes from the calling AE's device entry of the directory."""
    extra = remote_device("modality1", "MODALITY1", 11112).replace(
        "dicomInstalled: TRUE",
        "dicomInstalled: TRUE\ndicomInstitutionName: General Hospital\n"
        "dicomStationName: CT-7\ndicomManufacturer: Acme\n"
        "dicomInstitutionDepartmentName: Radiology\ndicomSoftwareVersion: 1.0\n"
        "dicomSoftwareVersion: 2.0",
    )
    # A sup-from-dev: rule without device= makes the node read every device (any may call).
    extra += (
        f"\ndn: cn=supplement,{DEVICE}\nobjectClass: coercionRule\ncn: supplement\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: sup-from-dev:\n"
        "dicomInstalled: TRUE\n"
    )
    source = EmbeddedDirectory(config_dir(tmp_path, extra=extra))
    env = ActionEnv(SECRET)
    configuration = build_configuration(source.entries(), source.origin, env, "coercion")
    assert configuration.env is env and env.peers is not None
    assert env.peers["MODALITY1"].name == "modality1"
    assert env.worklist_directory.endswith("/worklist")
    ds = _file("CT_small.dcm")
    del ds.InstitutionName
    del ds.StationName
    manufacturer = ds.Manufacturer
    action = build_action("sup-from-dev:", {}, env)
    changes = action.apply(ds, CTX)
    out = _roundtrip(ds)
    assert out.InstitutionName == "General Hospital"
    assert out.StationName == "CT-7"
    assert out.InstitutionalDepartmentName == "Radiology"
    assert (
        list(out.SoftwareVersions) == ["1.0", "2.0"] or out.SoftwareVersions == ds.SoftwareVersions
    )
    assert out.Manufacturer == manufacturer  # present: kept
    assert changes
    with pytest.raises(RuleFailedError, match="calling AE title"):
        action.apply(_file("CT_small.dcm"), EventContext(Dimse.C_STORE_RQ, Role.SCP, "OTHER"))
    with pytest.raises(ValueError, match="not a known remote device"):
        build_action("sup-from-dev:", {"device": "nosuch"}, env)


def test_sup_from_dev_named_device() -> None:
    """device=NAME (a converted dcmSupplementFromDeviceReference) picks the device by name."""
    env = ActionEnv(SECRET)
    env.peers = {"X": PeerDevice("storescu", {}, {"dicomInstitutionName": ("Clinic",)})}
    ds = _file("MR_small.dcm")
    del ds.InstitutionName
    build_action("sup-from-dev:", {"device": "storescu"}, env).apply(ds, CTX)
    assert ds.InstitutionName == "Clinic"


def test_sup_from_dev_reads_the_issuer_as_dcm4che_does() -> None:
    """An issuer LOCAL&UNIVERSAL&TYPE gives Issuer of Patient ID and its qualifiers (dcm4che)."""
    env = ActionEnv(SECRET)
    issuer = "Site A&1.2.40.0.13.1.1.999.111.1111&ISO"
    env.peers = {"X": PeerDevice("storescu", {}, {"dicomIssuerOfPatientID": (issuer,)})}
    ds = _file("MR_small.dcm")
    for keyword in ("IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence"):
        ds.pop(keyword, None)
    build_action("sup-from-dev:", {"device": "storescu"}, env).apply(ds, CTX)
    out = _roundtrip(ds)
    assert out.IssuerOfPatientID == "Site A"
    qualifiers = out.IssuerOfPatientIDQualifiersSequence[0]
    assert (qualifiers.UniversalEntityID, qualifiers.UniversalEntityIDType) == (
        "1.2.40.0.13.1.1.999.111.1111",
        "ISO",
    )
    plain = _file("MR_small.dcm")
    plain.pop("IssuerOfPatientID", None)
    env.peers["X"] = PeerDevice("storescu", {}, {"dicomIssuerOfPatientID": ("SITE",)})
    build_action("sup-from-dev:", {"device": "storescu"}, env).apply(plain, CTX)
    assert plain.IssuerOfPatientID == "SITE"
    assert "IssuerOfPatientIDQualifiersSequence" not in plain


SITE_A = "Site A&1.2.40.0.13.1.1.999.111.1111&ISO"
ISSUERS = {
    "dicomIssuerOfAccessionNumber": (SITE_A,),
    "dicomIssuerOfAdmissionID": ("ADM",),
    "dicomOrderPlacerIdentifier": ("&1.2.3&ISO",),
    "dicomInstitutionCode": ('(111.1111, 99DCM4CHEE;1, "Site A")',),
    "dicomInstitutionName": ("Site A",),
}


def _supplement(ds: Dataset, sop_class: str, **info: tuple[str, ...]) -> None:
    env = ActionEnv(SECRET)
    env.peers = {"X": PeerDevice("storescu", {}, {**ISSUERS, **info})}
    ctx = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", sop_class_uid=sop_class)
    build_action("sup-from-dev:", {"device": "storescu"}, env).apply(ds, ctx)


def test_sup_from_dev_issuers_and_institution_code_as_dcm4chee_arc() -> None:
    """dcm4che's issuer attributes give the issuer sequences of the identifiers the object has,
    in the object and its request items; dicomInstitutionCode the Institution Code Sequence."""
    ds = _file("CT_small.dcm")
    ds.AccessionNumber = "A-1"
    del ds.InstitutionName
    request = Dataset()
    request.AccessionNumber = "A-1"
    request.PlacerOrderNumberImagingServiceRequest = "P-1"
    ds.RequestAttributesSequence = [request]
    _supplement(ds, ds.SOPClassUID)
    out = _roundtrip(ds)
    issuer = out.IssuerOfAccessionNumberSequence[0]
    assert (issuer.LocalNamespaceEntityID, issuer.UniversalEntityID) == (
        "Site A",
        "1.2.40.0.13.1.1.999.111.1111",
    )
    assert issuer.UniversalEntityIDType == "ISO"
    assert "IssuerOfAdmissionIDSequence" not in out  # no Admission ID: nothing to qualify
    item = out.RequestAttributesSequence[0]
    assert item.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == "Site A"
    placer = item.OrderPlacerIdentifierSequence[0]
    assert "LocalNamespaceEntityID" not in placer and placer.UniversalEntityID == "1.2.3"
    code = out.InstitutionCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodingSchemeVersion) == (
        "111.1111",
        "99DCM4CHEE",
        "1",
    )
    assert code.CodeMeaning == "Site A" and out.InstitutionName == "Site A"


def test_sup_from_dev_worklist_and_mpps_get_issuers_only() -> None:
    """A worklist item gets its issuers at the top; MPPS in its scheduled step items; neither
    the institution (as dcm4chee-arc); an issuer already there is kept."""
    item = Dataset()
    item.AccessionNumber = "A-1"
    item.PlacerOrderNumberImagingServiceRequest = "P-1"
    item.AdmissionID = "V-1"
    kept = Dataset()
    kept.LocalNamespaceEntityID = "OTHER"
    item.IssuerOfAdmissionIDSequence = [kept]
    _supplement(item, "1.2.840.10008.5.1.4.31")
    assert item.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == "Site A"
    assert item.OrderPlacerIdentifierSequence[0].UniversalEntityID == "1.2.3"
    assert item.IssuerOfAdmissionIDSequence[0].LocalNamespaceEntityID == "OTHER"
    assert "InstitutionName" not in item and "InstitutionCodeSequence" not in item
    mpps = Dataset()
    step = Dataset()
    step.AccessionNumber = "A-2"
    mpps.ScheduledStepAttributesSequence = [step]
    _supplement(mpps, "1.2.840.10008.3.1.2.3.3")
    assert step.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == "Site A"
    assert "IssuerOfAccessionNumberSequence" not in mpps  # none at the top: no Accession Number


def test_sup_from_dev_refuses_an_institution_code_it_cannot_read() -> None:
    """A dicomInstitutionCode not (VALUE, SCHEME, "MEANING") fails the rule, naming it."""
    ds = _file("CT_small.dcm")
    with pytest.raises(RuleFailedError, match="dicomInstitutionCode"):
        _supplement(ds, ds.SOPClassUID, dicomInstitutionCode=("111.1111",))


NULLIFY_PN = f"""<?xml version="1.0" encoding="UTF-8"?>
{XSL_HEAD}
  <xsl:output method="xml"/>
  <xsl:param name="SendingApplicationEntityTitle"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <xsl:apply-templates select="DicomAttribute[@vr='PN']"/>
      <DicomAttribute tag="00081010" vr="SH">
        <Value number="1"><xsl:value-of select="$SendingApplicationEntityTitle"/></Value>
      </DicomAttribute>
      <xsl:if test="DicomAttribute[@tag='00100020']">
        <DicomAttribute tag="00101000" vr="LO">
          <xsl:copy-of select="DicomAttribute[@tag='00100020']/Value"/>
        </DicomAttribute>
      </xsl:if>
    </NativeDicomModel>
  </xsl:template>
  <xsl:template match="@*|node()">
    <xsl:copy>
      <xsl:apply-templates select="@*|node()[not(self::PersonName)]"/>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
"""


def test_xslt_dcm4chee_form(tmp_path: Path) -> None:
    """xslt: a stylesheet of dcm4chee's form empties names, copies values, reads parameters."""
    sheet = tmp_path / "nullify-pn.xsl"
    sheet.write_text(NULLIFY_PN, encoding="utf-8")
    ds = _file("CT_small.dcm")
    pixels = ds.PixelData
    action = _action(f"xslt:{sheet}", {"xsl-no-keyword": "true"})
    action.apply(ds, CTX)
    out = _roundtrip(ds)
    assert out.PatientName == ""
    assert out.StationName == "MODALITY1"
    assert out.OtherPatientIDs == "1CT1"
    assert out.PixelData == pixels and out.SpecificCharacterSet == ds.SpecificCharacterSet
    with pytest.raises(ValueError, match="system property"):
        _action("xslt:${jboss.server.temp.url}/dcm4chee-arc/nullify-pn.xsl")
    with pytest.raises(ValueError, match="cannot read"):
        _action(f"xslt:{tmp_path}/missing.xsl")
    with pytest.raises(ValueError, match="xsl-no-keyword= takes true or false"):
        _action(f"xslt:{sheet}", {"xsl-no-keyword": "yes"})


def test_native_xml_roundtrip_of_mr_small() -> None:
    """The PS3.19 XML of a real object reads back to the same values (pixel data left out)."""
    from coercion.coerce.nativexml import from_xml, to_xml

    ds = _file("MR_small.dcm")
    back = from_xml(to_xml(ds))
    for elem in ds:
        if elem.tag >> 16 == 0x7FE0:
            assert elem.tag not in back
            continue
        assert back[elem.tag].value == elem.value, elem.keyword


@pytest.mark.parametrize("scheme", ["leading-arc", "retrieve-as-received"])
def test_dcm4chee_only_schemes_say_why(scheme: str) -> None:
    """leading-arc: and retrieve-as-received: are refused with the reason and what to do."""
    with pytest.raises(ValueError, match="is not implemented here") as caught:
        _action(f"{scheme}:X")
    assert "dicomInstalled: FALSE" in str(caught.value)


GREEK = f"""{XSL_HEAD}
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <DicomAttribute tag="00081030" vr="LO"><Value number="1">Ωmega study</Value></DicomAttribute>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
"""


def test_xslt_value_outside_the_charset_moves_object_to_utf8(tmp_path: Path) -> None:
    """A stylesheet value the object's character set cannot hold switches it to ISO_IR 192."""
    sheet = tmp_path / "greek.xsl"
    sheet.write_text(GREEK, encoding="utf-8")
    ds = _file("MR_small.dcm")  # no Specific Character Set: the default repertoire
    _action(f"xslt:{sheet}").apply(ds, CTX)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "Ωmega".encode() in buffer.getvalue()
    out = dcmread(io.BytesIO(buffer.getvalue()))
    assert out.SpecificCharacterSet == "ISO_IR 192" and out.StudyDescription == "Ωmega study"


def test_merge_attrs_nested_item_uses_object_charset() -> None:
    """A new sequence item's text is written in the object's character set (here Latin-1)."""
    ds = _file("CT_small.dcm")  # ISO_IR 100
    _action(
        "merge-attrs:", {"RequestAttributesSequence.RequestedProcedureDescription": "Thorax é"}
    ).apply(ds, CTX)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "Thorax é".encode("latin-1") in buffer.getvalue()
    out = dcmread(io.BytesIO(buffer.getvalue()))
    assert out.RequestAttributesSequence[0].RequestedProcedureDescription == "Thorax é"


def test_merge_mwl_keys_as_dcm4chee_builds_them() -> None:
    """match-by keys: PatientID adds the accession when present; MPPS keys come from its
    Scheduled Step Attributes; the default asks for the step ID with the study."""
    from coercion.coerce.mwl import worklist_query

    ds = _file("CT_small.dcm")
    ds.AccessionNumber = "A1"
    ds.IssuerOfPatientID = "SITE"
    keys = worklist_query(ds, "PatientID", mpps=False)
    assert (keys.PatientID, keys.IssuerOfPatientID, keys.AccessionNumber) == ("1CT1", "SITE", "A1")
    ds.AccessionNumber = ""
    keys = worklist_query(ds, "AccessionNumber", mpps=False)
    assert "AccessionNumber" not in keys and keys.StudyInstanceUID == ds.StudyInstanceUID
    mpps = Dataset()
    step = Dataset()
    step.StudyInstanceUID = "1.2.3"
    step.ScheduledProcedureStepID = "S9"
    mpps.ScheduledStepAttributesSequence = [step]
    assert len(worklist_query(Dataset(), "PatientIDOnly", mpps=False)) == 0  # no key: no query
    keys = worklist_query(mpps, "ScheduledProcedureStepID", mpps=True)
    assert keys.StudyInstanceUID == "1.2.3"
    assert keys.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "S9"
