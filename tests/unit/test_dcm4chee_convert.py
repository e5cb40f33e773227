"""Converting dcm4chee-arc coercion entries: nothing widened, every rule in its place, every
item not carried over reported and the rule written inactive."""

from __future__ import annotations

from pathlib import Path

import pytest

from coercion.directory.convert.dcm4chee import Conversion, Placement, convert_dcm4chee, settle
from coercion.directory.ldifio import Entry, read_ldif_update
from coercion.engine import schemes
from coercion.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "dcm4chee"
ARC = "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org"
OURS = "dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,dc=coercion,dc=local"
AES = ("DCM4CHEE", "WORKLIST", "AS_RECEIVED", "IOCM_REGULAR_USE")
PLACEMENT = Placement(OURS, {title: f"dicomAETitle={title},{OURS}" for title in AES})


def convert(*entries: Entry, placement: Placement = PLACEMENT) -> Conversion:
    return convert_dcm4chee(list(entries), placement)


def v2(
    cn: str, parent: str = ARC, given: dict[str, list[str]] | None = None, **attrs: list[str]
) -> Entry:
    values = {
        "objectClass": ["dcmArchiveAttributeCoercion2"],
        "cn": [cn],
        "dcmDIMSE": ["C_STORE_RQ"],
        "dicomTransferRole": ["SCU"],
        "dcmURI": ["deidentify:RetainUIDsOption"],
    }
    values.update(given or {})
    values.update(attrs)
    return f"cn={cn},{parent}", values


def by_cn(conversion: Conversion) -> dict[str, tuple[str, dict[str, list[str]]]]:
    return {attrs["cn"][0]: (dn, attrs) for dn, attrs in conversion.entries}


def test_shipped_sample_config_keeps_places_and_widens_nothing() -> None:
    """The 17 rules of sample-config.ldif: each written, under its AE, active only if exact."""
    entries, changes = read_ldif_update(DATA / "sample-config.ldif")
    conversion = convert_dcm4chee(entries, PLACEMENT, changes)
    assert len(conversion.entries) == 17
    dns = [dn for dn, _attrs in conversion.entries]
    assert len(set(dns)) == 17  # the same cn under two AEs: two entries
    assert f"cn=SupplementIssuerOfPatientIDOnMPPS,dicomAETitle=WORKLIST,{OURS}" in dns
    assert f"cn=SupplementIssuerOfPatientIDOnMPPS,dicomAETitle=DCM4CHEE,{OURS}" in dns
    assert f"cn=Merge MWL,{OURS}" in dns
    for _dn, attrs in conversion.entries:
        scheme = attrs["coercionURI"][0].partition(":")[0]
        if scheme not in schemes():
            assert attrs["dicomInstalled"] == ["FALSE"]
            assert f"the URI scheme {scheme}: (not implemented here)" in attrs["description"][0]
    assert conversion.not_carried_over == sum(
        1 for _dn, attrs in conversion.entries if "dicomInstalled" in attrs
    )
    supplement = by_cn(conversion)["SupplementIssuerOfPatientID"][1]
    assert supplement["coercionCondition"] == ["IssuerOfPatientID!=.+"]  # never dropped
    assert supplement["dicomTransferRole"] == ["SCP"]  # the peer's SCU is our SCP
    assert supplement["coercionParam"] == [
        "IssuerOfPatientID=DCM4CHEE.{PatientName,hash}.{PatientBirthDate,hash}"
    ]
    removal = by_cn(conversion)["RemoveEncapsulatedPixelDataValueTotalLength"][1]
    assert removal["coercionParam"] == ["EncapsulatedPixelDataValueTotalLength!="]
    assert by_cn(conversion)["Supplement MPPS"][1]["coercionParam"] == ["device=mppsscu"]
    merge = by_cn(conversion)["Merge MWL MPPS"][1]
    assert merge["coercionParam"] == [
        "mwl-entity-to-merge=mpps",
        "xsl-no-keyword=true",
        "match-by=AccessionNumber",
    ]


def test_a_rule_under_an_ae_we_lack_is_inactive_and_kept_apart() -> None:
    """No network AE of that title here: inactive under the device, its AE in cn and reason."""
    conversion = convert(
        v2("anon", f"dicomAETitle=OTHER,{ARC}"), v2("anon"), placement=Placement(OURS)
    )
    assert not conversion.complete
    rules = by_cn(conversion)
    dn, attrs = rules["anon (OTHER)"]
    assert dn == f"cn=anon (OTHER),{OURS}"
    assert attrs["dicomInstalled"] == ["FALSE"]
    assert "its network AE OTHER (none here by that title)" in attrs["description"][0]
    assert "dicomInstalled" not in rules["anon"][1]


def test_deidentify_basic_profile_params_and_description_map() -> None:
    """BasicApplicationConfidentialityProfile is the Basic Profile; dcmCoercionParam ignored."""
    conversion = convert(
        v2(
            "anon",
            dcmURI=["deidentify:BasicApplicationConfidentialityProfile,RetainUIDsOption"],
            dcmCoercionParam=["xsl-no-keyword=true"],
            dcmAttributeUpdatePolicy=["OVERWRITE"],
            dicomDescription=["De-identify for research"],
            dcmRulePriority=["3"],
            dcmCoercionSufficient=["TRUE"],
            dcmProperty=["SendingApplicationEntityTitle=MOD.*", "ImageType[3]=LOCALIZER"],
        )
    )
    assert conversion.complete, conversion.report
    [(dn, attrs)] = conversion.entries
    assert dn == f"cn=anon,{OURS}"
    assert attrs["coercionURI"] == ["deidentify:RetainUIDsOption"]
    assert "coercionParam" not in attrs
    assert attrs["description"] == ["De-identify for research"]
    assert attrs["coercionCondition"] == [
        "SendingApplicationEntityTitle=MOD.*",
        "ImageType[3]=LOCALIZER",
    ]
    assert (attrs["coercionPriority"], attrs["coercionSufficient"]) == (["3"], ["TRUE"])
    report = " ".join(conversion.report)
    assert "dcmCoercionParam: dcm4chee-arc ignores it for deidentify:" in report
    assert "dcmAttributeUpdatePolicy: dcm4chee-arc ignores it for deidentify:" in report


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"dcmProperty": [r"PatientName=\p{L}+"]}, r"dcmProperty 'PatientName=\p{L}+'"),
        ({"dcmProperty": ["Modalty=CT"]}, "unknown condition name 'Modalty'"),
        ({"dcmURI": ["deidentify:RetainUIDOption"]}, "coercionURI 'deidentify:RetainUIDOption'"),
        ({"dicomDeviceName": ["other"]}, "dicomDeviceName (no equivalent here)"),
        ({"dcmDIMSE": ["C_STORE_RQ", "C_GET_RQ"]}, "dcmDIMSE C_GET_RQ (no such event here)"),
        (
            {"dcmURI": ["xslt:/x.xsl"]} if "xslt" not in schemes() else {"dcmURI": ["no-such:"]},
            "the URI scheme",
        ),
    ],
)
def test_what_cannot_be_carried_over_makes_the_rule_inactive(
    attrs: dict[str, list[str]], reason: str
) -> None:
    """A condition, URI, attribute or DIMSE that cannot be carried over: inactive, reported."""
    conversion = convert(v2("anon", given=attrs))
    assert not conversion.complete
    [(_dn, written)] = conversion.entries
    assert written["dicomInstalled"] == ["FALSE"]
    assert reason in written["description"][0]
    assert any(reason in line for line in conversion.report)
    for prop in attrs.get("dcmProperty", []):
        assert prop in written["coercionCondition"]  # kept on the inactive entry, never dropped


def test_a_rule_with_no_dimse_here_is_reported_and_not_written() -> None:
    """Only DIMSE values we have no event for: nothing can be written; reported, counted."""
    conversion = convert(v2("get", dcmDIMSE=["C_GET_RQ"]))
    assert conversion.entries == []
    assert conversion.not_carried_over == 1
    assert any("not written" in line for line in conversion.report)


def legacy(cn: str, **attrs: list[str]) -> Entry:
    values = {
        "objectClass": ["dcmArchiveAttributeCoercion"],
        "cn": [cn],
        "dcmDIMSE": ["C_STORE_RQ"],
        "dicomTransferRole": ["SCU"],
    }
    values.update(attrs)
    return f"cn={cn},dicomAETitle=DCM4CHEE,{ARC}", values


def test_legacy_entries_convert_where_they_map() -> None:
    """dcmDeIdentification becomes deidentify:; unmapped attributes and extra operations not."""
    conversion = convert(
        legacy("anon", dcmDeIdentification=["BasicApplicationConfidentialityProfile"]),
        legacy(
            "issuer",
            dcmDeIdentification=["RetainUIDsOption"],
            dcmNullifyIssuerOfPatientID=["ALWAYS"],
        ),
        legacy(
            "two", dcmDeIdentification=["RetainUIDsOption"], dcmTrimISO2022CharacterSet=["TRUE"]
        ),
        legacy("nothing", dcmRetrieveAsReceived=["FALSE"]),
    )
    rules = by_cn(conversion)
    dn, anon = rules["anon"]
    assert dn == f"cn=anon,dicomAETitle=DCM4CHEE,{OURS}"
    assert anon["coercionURI"] == ["deidentify:"]
    assert "dicomInstalled" not in anon
    assert (
        "dcmNullifyIssuerOfPatientID (no equivalent here)" in rules["issuer"][1]["description"][0]
    )
    assert "all but one of its operations" in rules["two"][1]["description"][0]
    assert "nothing" not in rules
    assert any("does nothing" in line for line in conversion.report)
    assert conversion.not_carried_over == 2


def test_update_files_add_records_convert_and_modifications_are_reported(tmp_path: Path) -> None:
    """dcm4chee-arc's update files: added entries convert; a modified coercion is reported."""
    update = tmp_path / "update.ldif"
    update.write_text(
        "version: 1\n\n"
        f"dn: cn=anon,dicomAETitle=DCM4CHEE,{ARC}\nchangetype: add\n"
        "objectClass: dcmArchiveAttributeCoercion2\ncn: anon\ndcmDIMSE: C_STORE_RQ\n"
        "dicomTransferRole: SCU\ndcmURI: deidentify:RetainUIDsOption\n\n"
        f"dn: cn=other,dicomAETitle=DCM4CHEE,{ARC}\nchangetype: modify\n"
        "add: dcmCoercionParam\ndcmCoercionParam: a=b\n-\n\n"
        f"dn: cn=anon,dicomAETitle=DCM4CHEE,{ARC}\nchangetype: modify\n"
        "add: dcmProperty\ndcmProperty: Modality=CT\n-\n\n"
        f"dn: dcmStorageID=fs1,{ARC}\nchangetype: modify\nreplace: dcmURI\ndcmURI: file:/x\n-\n\n"
        f"dn: {ARC}\nchangetype: modify\nreplace: dcmQidoMaxNumberOfResults\n"
        "dcmQidoMaxNumberOfResults: 10\n-\n",
        encoding="utf-8",
    )
    entries, changes = read_ldif_update(update)
    conversion = convert_dcm4chee(entries, PLACEMENT, changes)
    [(dn, attrs)] = conversion.entries
    assert dn == f"cn=anon,dicomAETitle=DCM4CHEE,{OURS}" and "changetype" not in attrs
    assert conversion.report == [
        f"cn=other,dicomAETitle=DCM4CHEE,{ARC}: a modify record of a coercion entry; not applied",
        f"cn=anon,dicomAETitle=DCM4CHEE,{ARC}: a modify record of a coercion entry; not applied",
    ]  # a storage's dcmURI is no coercion's
    assert conversion.not_carried_over == 2


def test_same_key_twice_is_written_as_given() -> None:
    """Two dcmProperty values with one key: both written, the later counts when loaded."""
    conversion = convert(v2("anon", dcmProperty=["Modality=MR", "Modality=CT"]))
    assert conversion.complete
    assert conversion.entries[0][1]["coercionCondition"] == ["Modality=MR", "Modality=CT"]


def test_rules_the_directory_would_refuse_are_made_inactive() -> None:
    """An active rule the load refuses becomes inactive; a fault of the directory is raised."""
    conversion = convert(v2("a"), v2("b"))
    refused = f"cn=b,{OURS}"

    def load(entries: list[Entry]) -> None:
        active = [dn for dn, attrs in entries if "dicomInstalled" not in attrs]
        if refused in active:
            raise ConfigError(f"ldif {refused}: attribute coercionURI: wrong here")

    settle(conversion, load)
    rules = by_cn(conversion)
    assert "dicomInstalled" not in rules["a"][1]
    assert rules["b"][1]["dicomInstalled"] == ["FALSE"]
    assert "attribute coercionURI: wrong here" in rules["b"][1]["description"][0]
    assert conversion.not_carried_over == 1

    def broken(_entries: list[Entry]) -> None:
        raise ConfigError(f"ldif cn=x,{OURS}: attribute cn: wrong")

    with pytest.raises(ConfigError, match="cn=x"):
        settle(convert(v2("a")), broken)


def test_a_device_we_do_not_know_is_reported() -> None:
    """sup-from-dev's device must be a device of the directory."""
    reference = f"dicomDeviceName=storescu,{ARC.split(',', 1)[1]}"
    entry = v2("sup", dcmURI=["sup-from-dev:"], dcmSupplementFromDeviceReference=[reference])
    known = Placement(OURS, {}, frozenset({"storescu"}))
    assert by_cn(convert(entry, placement=known))["sup"][1]["coercionParam"] == ["device=storescu"]
    unknown = convert(entry, placement=Placement(OURS, {}, frozenset({"coercion"})))
    description = by_cn(unknown)["sup"][1]["description"][0]
    assert "the device storescu (neither here nor in the export)" in description
    assert not unknown.devices


XSL = DATA / "xsl"
DEVICES = ARC.split(",", 1)[1]
OUR_DEVICES = OURS.split(",", 1)[1]


def test_shipped_sample_config_with_stylesheets_leaves_only_dcm4chee_services_off() -> None:
    """With the stylesheets' folder every rule but leading-arc: and retrieve-as-received: is
    active: stylesheets resolved, sup-from-dev:'s devices carried over."""
    entries, changes = read_ldif_update(DATA / "sample-config.ldif")
    placement = Placement(OURS, PLACEMENT.ae_dns, stylesheets=XSL)
    conversion = convert_dcm4chee(entries, placement, changes)
    inactive = {cn for cn, (_dn, attrs) in by_cn(conversion).items() if "dicomInstalled" in attrs}
    assert inactive == {"Leading DCMQRSCP FIND", "Leading DCMQRSCP STORE", "RetrieveAsReceived"}
    uri = by_cn(conversion)["Merge MWL"][1]["coercionURI"][0]
    assert uri == f"merge-mwl:{(XSL / 'dcm4chee-arc' / 'mwl2series.xsl').resolve()}"
    assert by_cn(conversion)["Correct VR"][1]["coercionURI"][0].endswith("/correct-vr.xsl")
    carried = dict(conversion.devices)
    device = carried[f"dicomDeviceName=storescu,{OUR_DEVICES}"]
    site_a = ["Site A&1.2.40.0.13.1.1.999.111.1111&ISO"]
    assert device == {
        "objectClass": ["dicomDevice", "coercionDeviceIssuers"],
        "dicomDeviceName": ["storescu"],
        "dicomInstalled": ["TRUE"],
        "dicomInstitutionName": ["Site A"],
        "dicomIssuerOfPatientID": site_a,
        "dicomIssuerOfAccessionNumber": site_a,
        "dicomIssuerOfAdmissionID": site_a,
        "dicomInstitutionCode": ['(111.1111, 99DCM4CHEE, "Site A")'],
        "dicomPrimaryDeviceType": ["CT"],
    }  # dcm4che's other extensions (dcmDevice and its attributes) left out
    ae = carried[f"dicomAETitle=STORESCU,dicomDeviceName=storescu,{OUR_DEVICES}"]
    assert ae["dicomNetworkConnectionReference"] == [
        f"cn=dicom,dicomDeviceName=storescu,{OUR_DEVICES}",
        f"cn=dicom-tls,dicomDeviceName=storescu,{OUR_DEVICES}",
    ]
    assert f"cn=dicom-tls,dicomDeviceName=mppsscu,{OUR_DEVICES}" in carried
    assert sum(1 for line in conversion.report if "device carried over" in line) == 2


def device_entries(name: str, **extra: list[str]) -> list[Entry]:
    """A device of a dcm4chee-arc export with one connection and one network AE (and a
    connection without a host, and an AE with only that one, which are not carried: reported)."""
    dn = f"dicomDeviceName={name},{DEVICES}"
    return [
        (dn, {"objectClass": ["dicomDevice", "dcmDevice"], "dicomDeviceName": [name], **extra}),
        (
            f"cn=dicom,{dn}",
            {"objectClass": ["dicomNetworkConnection"], "cn": ["dicom"], "dicomHostname": ["h"]},
        ),
        (f"cn=nohost,{dn}", {"objectClass": ["dicomNetworkConnection"], "cn": ["nohost"]}),
        (
            f"dicomAETitle=UNREACHABLE,{dn}",
            {
                "objectClass": ["dicomNetworkAE"],
                "dicomAETitle": ["UNREACHABLE"],
                "dicomNetworkConnectionReference": [f"cn=nohost,{dn}"],
                "dicomAssociationInitiator": ["TRUE"],
                "dicomAssociationAcceptor": ["FALSE"],
            },
        ),
        (
            f"dicomAETitle={name.upper()},{dn}",
            {
                "objectClass": ["dicomNetworkAE", "dcmNetworkAE"],
                "dicomAETitle": [name.upper()],
                "dicomNetworkConnectionReference": [f"cn=dicom,{dn}"],
                "dicomAssociationInitiator": ["TRUE"],
                "dicomAssociationAcceptor": ["FALSE"],
                "dcmAcceptedUserRole": ["user"],
            },
        ),
    ]


def test_a_referenced_device_of_the_export_is_carried_over_and_the_rule_active() -> None:
    """sup-from-dev's device from the export: written under our devices, once, rules active."""
    reference = f"dicomDeviceName=modality,{DEVICES}"
    rules = [
        v2(cn, dcmURI=["sup-from-dev:"], dcmSupplementFromDeviceReference=[reference])
        for cn in ("sup", "sup again")
    ]
    device = device_entries("modality", dicomStationName=["CT-7"], dcmKeyStorePin=["x"])
    conversion = convert(*device, *rules)
    assert conversion.complete
    assert by_cn(conversion)["sup"][1]["coercionParam"] == ["device=modality"]
    assert [dn for dn, _attrs in conversion.devices] == [
        f"dicomDeviceName=modality,{OUR_DEVICES}",
        f"cn=dicom,dicomDeviceName=modality,{OUR_DEVICES}",
        f"dicomAETitle=MODALITY,dicomDeviceName=modality,{OUR_DEVICES}",
    ]
    assert conversion.devices[0][1]["dicomStationName"] == ["CT-7"]
    assert conversion.devices[0][1]["objectClass"] == ["dicomDevice"]  # no dcm4che issuer
    assert "dcmKeyStorePin" not in conversion.devices[0][1]
    assert "dcmAcceptedUserRole" not in conversion.devices[2][1]
    assert conversion.report == [
        f"{reference}: device carried over as dicomDeviceName=modality,{OUR_DEVICES} "
        "(2 network AEs and connections), for sup-from-dev:",
        f"cn=nohost,{reference}: not carried over (a connection without dicomHostname)",
        f"dicomAETitle=UNREACHABLE,{reference}: not carried over "
        "(none of its connections was carried)",
    ]
    known = convert(*device, *rules, placement=Placement(OURS, {}, frozenset({"modality"})))
    assert not known.devices and known.complete  # the directory's own device is used


def test_stylesheets_named_by_system_properties_need_the_folder(tmp_path: Path) -> None:
    """No folder, a file not there or not XSLT 1.0: inactive, saying what to do; else resolved."""
    rule = v2("vr", dcmURI=["xslt:${jboss.server.temp.url}/dcm4chee-arc/correct-vr.xsl"])
    without = by_cn(convert(rule))["vr"][1]
    assert without["dicomInstalled"] == ["FALSE"]
    assert "pass --stylesheets" in without["description"][0]
    assert without["coercionURI"] == rule[1]["dcmURI"]  # kept as given, to be corrected
    found = convert(rule, placement=Placement(OURS, stylesheets=XSL))
    assert found.complete
    assert by_cn(found)["vr"][1]["coercionURI"] == [
        f"xslt:{(XSL / 'dcm4chee-arc' / 'correct-vr.xsl').resolve()}"
    ]
    flat = tmp_path / "flat"  # the stylesheets copied without dcm4chee-arc's subfolder
    flat.mkdir()
    (flat / "correct-vr.xsl").write_bytes((XSL / "dcm4chee-arc" / "correct-vr.xsl").read_bytes())
    assert convert(rule, placement=Placement(OURS, stylesheets=flat)).complete
    missing = by_cn(convert(rule, placement=Placement(OURS, stylesheets=tmp_path)))["vr"][1]
    assert "the stylesheet dcm4chee-arc/correct-vr.xsl (not in" in missing["description"][0]
    (flat / "correct-vr.xsl").write_text(
        '<xsl:stylesheet version="2.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"/>'
    )
    newer = by_cn(convert(rule, placement=Placement(OURS, stylesheets=flat)))["vr"][1]
    assert "not XSLT 1.0" in newer["description"][0]
    (flat / "correct-vr.xsl").write_text("<not-xml")
    broken = by_cn(convert(rule, placement=Placement(OURS, stylesheets=flat)))["vr"][1]
    assert "not an XSLT stylesheet" in broken["description"][0]
    escape = v2("up", dcmURI=["xslt:${jboss.server.temp.url}/../../etc/passwd"])
    outside = by_cn(convert(escape, placement=Placement(OURS, stylesheets=flat)))["up"][1]
    assert outside["dicomInstalled"] == ["FALSE"]
