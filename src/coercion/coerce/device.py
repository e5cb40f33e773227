"""``sup-from-dev:``: supplement the object from the sending device's entry in the directory.

The device is the one with the calling AE title among the devices the
directory knows (or the one named by the ``device=NAME`` parameter, which a
converted dcm4chee-arc rule's ``dcmSupplementFromDeviceReference`` becomes).
Attributes without a value get the device's (PS3.15 H.4.1):

=================================  ==============================
Manufacturer                       dicomManufacturer
ManufacturerModelName              dicomManufacturerModelName
StationName                        dicomStationName
DeviceSerialNumber                 dicomDeviceSerialNumber
SoftwareVersions                   dicomSoftwareVersion (all values)
InstitutionName                    dicomInstitutionName (the first)
InstitutionalDepartmentName        dicomInstitutionDepartmentName
InstitutionAddress                 dicomInstitutionAddress
IssuerOfPatientID                  dicomIssuerOfPatientID (with a Patient ID,
                                   when neither issuer attribute is there)
=================================  ==============================

The issuer is read as dcm4che reads it, as an HL7 v2 HD
``LOCAL&UNIVERSAL&TYPE`` (``Site A&1.2.40.0.13.1.1&ISO``): LOCAL becomes the
Issuer of Patient ID, UNIVERSAL and TYPE the Universal Entity ID and its type
of an Issuer of Patient ID Qualifiers Sequence item; a value without ``&`` is
the Issuer of Patient ID itself.

dcm4che's additions to the device (``00-dcm4che-device-schema.ldif``) are read
as dcm4chee-arc reads them: ``dicomInstitutionCode`` (``(VALUE, SCHEME,
"MEANING")``) gives the Institution Code Sequence; each issuer attribute (an
HD, as above) gives the issuer sequence of its identifier when the object has
the identifier and not the sequence: Accession Number, Admission ID, Service
Episode ID, Container Identifier, Specimen Identifier, and in each Request
Attributes Sequence item (Scheduled Step Attributes Sequence for MPPS) the
Accession Number and the placer and filler order numbers.

As in dcm4chee-arc, worklist items, MPPS and queries get the issuers only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import, unseen by mypy
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from coercion.dicom.elements import dictionary_vr, put_value, text_values
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, PeerDevice, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import RuleFailedError
from coercion.profile import Action, Change

__all__ = ["SupplementFromDeviceAction"]

#: Attribute keyword and tag <- device attribute, and whether every value is taken.
_INSTANCE = (
    ("Manufacturer", 0x00080070, "dicomManufacturer", False),
    ("ManufacturerModelName", 0x00081090, "dicomManufacturerModelName", False),
    ("StationName", 0x00081010, "dicomStationName", False),
    ("DeviceSerialNumber", 0x00181000, "dicomDeviceSerialNumber", False),
    ("SoftwareVersions", 0x00181020, "dicomSoftwareVersion", True),
    ("InstitutionName", 0x00080080, "dicomInstitutionName", False),
    ("InstitutionalDepartmentName", 0x00081040, "dicomInstitutionDepartmentName", False),
    ("InstitutionAddress", 0x00080081, "dicomInstitutionAddress", False),
)
_PATIENT_ID = 0x00100020
_ISSUER = 0x00100021
_ISSUER_QUALIFIERS = 0x00100024
_LOCAL_NAMESPACE_ENTITY_ID = 0x00400031
_UNIVERSAL_ENTITY_ID = 0x00400032
_UNIVERSAL_ENTITY_ID_TYPE = 0x00400033
_INSTITUTION_CODE = 0x00080082
_REQUEST_ATTRIBUTES = 0x00400275
_SCHEDULED_STEP_ATTRIBUTES = 0x00400270
#: Device attribute, the identifier it is the issuer of, and that identifier's issuer sequence.
_ISSUERS = (
    ("dicomIssuerOfAccessionNumber", 0x00080050, 0x00080051),
    ("dicomIssuerOfAdmissionID", 0x00380010, 0x00380014),
    ("dicomIssuerOfServiceEpisodeID", 0x00380060, 0x00380064),
    ("dicomIssuerOfContainerIdentifier", 0x00400512, 0x00400513),
    ("dicomIssuerOfSpecimenIdentifier", 0x00400551, 0x00400562),
)
#: The same for the identifiers of a request (Request Attributes Sequence items).
_REQUEST_ISSUERS = (
    ("dicomIssuerOfAccessionNumber", 0x00080050, 0x00080051),
    ("dicomOrderPlacerIdentifier", 0x00402016, 0x00400026),
    ("dicomOrderFillerIdentifier", 0x00402017, 0x00400027),
)
_MWL = ModalityWorklistInformationFind
_MPPS = ModalityPerformedProcedureStep
_QUERIES = frozenset(
    {
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        PatientStudyOnlyQueryRetrieveInformationModelFind,
    }
)
#: A code as dcm4che writes one: (VALUE, SCHEME[;VERSION], "MEANING").
_CODE = re.compile(r'^\(\s*([^,]+?)\s*,\s*([^,;]+?)\s*(?:;\s*([^,]+?)\s*)?,\s*"(.*)"\s*\)$')


class SupplementFromDeviceAction:
    """The action of ``sup-from-dev:``."""

    def __init__(self, env: ActionEnv, device: str | None) -> None:
        self.env = env
        self.device = device

    def peer(self, ctx: EventContext) -> PeerDevice:
        """The device to supplement from: the named one, else the calling AE title's."""
        peers = self.env.peers or {}
        if self.device is not None:
            for peer in peers.values():
                if peer.name == self.device:
                    return peer
        else:
            found = peers.get(ctx.calling_ae)
            if found is not None:
                return found
        raise RuleFailedError(
            f"sup-from-dev: no device of the directory has the calling AE title "
            f"{ctx.calling_ae!r}; add the sending device to the directory or a condition "
            "on SendingApplicationEntityTitle",
            kind="sending device unknown",
        )

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Give the attributes without a value the device's values (by SOP class, as
        dcm4chee-arc: worklist, MPPS and queries get the issuers only)."""
        info = self.peer(ctx).info
        sop_class = ctx.sop_class_uid
        changes = []
        if sop_class == _MWL:
            changes += _issuers(ds, info) + _request_issuers(ds, info, ())
            return changes
        if sop_class not in _QUERIES and sop_class != _MPPS:
            changes += _instance(ds, info)
        changes += _issuers(ds, info)
        seq_tag = _SCHEDULED_STEP_ATTRIBUTES if sop_class == _MPPS else _REQUEST_ATTRIBUTES
        elem = ds.get(seq_tag)
        for index, item in enumerate(elem.value if elem is not None and elem.VR == "SQ" else []):
            changes += _request_issuers(item, info, ((seq_tag, index),))
        return changes


def _instance(ds: Dataset, info: Mapping[str, tuple[str, ...]]) -> list[Change]:
    """The descriptive attributes and the institution code of a composite object."""
    changes = []
    for _keyword, tag, name, every in _INSTANCE:
        values = info.get(name, ())
        if values and not text_values(ds, tag):
            put_value(ds, tag, dictionary_vr(tag), list(values if every else values[:1]))
            changes.append(Change((), tag, Action.D))
    codes = info.get("dicomInstitutionCode", ())
    if codes and not _has_items(ds, _INSTITUTION_CODE):
        found = _CODE.match(codes[0])
        if found is None:
            raise RuleFailedError(
                "sup-from-dev: the device's dicomInstitutionCode is not (VALUE, SCHEME, "
                '"MEANING"); correct it in the directory',
                kind="device attribute invalid",
            )
        item = _item(ds)
        put_value(item, 0x00080100, "SH", [found[1]])
        put_value(item, 0x00080102, "SH", [found[2]])
        if found[3]:
            put_value(item, 0x00080103, "SH", [found[3]])
        put_value(item, 0x00080104, "LO", [found[4]])
        ds[_INSTITUTION_CODE] = DataElement(_INSTITUTION_CODE, "SQ", Sequence([item]))
        changes.append(Change((), _INSTITUTION_CODE, Action.D))
    return changes


def _issuers(ds: Dataset, info: Mapping[str, tuple[str, ...]]) -> list[Change]:
    """The issuer of the Patient ID and of the other identifiers the object has."""
    changes = []
    issuer = info.get("dicomIssuerOfPatientID", ())
    if (
        issuer
        and text_values(ds, _PATIENT_ID)
        and not text_values(ds, _ISSUER)
        and not _has_items(ds, _ISSUER_QUALIFIERS)
    ):
        changes += _put_issuer(ds, issuer[0])
    return changes + _issuer_sequences(ds, info, _ISSUERS, ())


def _request_issuers(
    ds: Dataset, info: Mapping[str, tuple[str, ...]], path: tuple[tuple[int, int], ...]
) -> list[Change]:
    """The issuers of a request's identifiers (Accession Number, placer and filler numbers)."""
    return _issuer_sequences(ds, info, _REQUEST_ISSUERS, path)


def _issuer_sequences(
    ds: Dataset,
    info: Mapping[str, tuple[str, ...]],
    issuers: tuple[tuple[str, int, int], ...],
    path: tuple[tuple[int, int], ...],
) -> list[Change]:
    changes = []
    for name, id_tag, seq_tag in issuers:
        issuer = info.get(name, ())
        if not issuer or not text_values(ds, id_tag) or _has_items(ds, seq_tag):
            continue
        local, universal, kind = _hd(issuer[0])
        item = _item(ds)
        if local:
            put_value(item, _LOCAL_NAMESPACE_ENTITY_ID, "UT", [local])
        if universal:
            put_value(item, _UNIVERSAL_ENTITY_ID, "UT", [universal])
            put_value(item, _UNIVERSAL_ENTITY_ID_TYPE, "CS", [kind])
        ds[seq_tag] = DataElement(seq_tag, "SQ", Sequence([item]))
        changes.append(Change(path, seq_tag, Action.D))
    return changes


def _put_issuer(ds: Dataset, issuer: str) -> list[Change]:
    """Issuer of Patient ID and its qualifiers from *issuer* read as an HL7 v2 HD."""
    local, universal, kind = _hd(issuer)
    changes = []
    if local:
        put_value(ds, _ISSUER, "LO", [local])
        changes.append(Change((), _ISSUER, Action.D))
    if universal:
        item = _item(ds)
        put_value(item, _UNIVERSAL_ENTITY_ID, "UT", [universal])
        put_value(item, _UNIVERSAL_ENTITY_ID_TYPE, "CS", [kind])
        ds[_ISSUER_QUALIFIERS] = DataElement(_ISSUER_QUALIFIERS, "SQ", Sequence([item]))
        changes.append(Change((), _ISSUER_QUALIFIERS, Action.D))
    return changes


def _hd(value: str) -> tuple[str, str, str]:
    """An HL7 v2 HD ``LOCAL&UNIVERSAL&TYPE`` (parts may be empty or absent)."""
    local, _sep, rest = value.partition("&")
    universal, _sep, kind = rest.partition("&")
    return local, universal, kind.partition("&")[0]


def _has_items(ds: Dataset, tag: int) -> bool:
    elem = ds.get(tag)
    return bool(elem is not None and elem.value)


def _item(ds: Dataset) -> Dataset:
    """A new sequence item of *ds*, its text in *ds*'s character set."""
    item = Dataset()
    item._parent_encoding = ds._character_set
    return item


def _sup_from_dev(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    unknown = sorted(set(params) - {"device"})
    if unknown or spec.strip():
        raise ValueError(
            "sup-from-dev: takes nothing after the colon and only the parameter device=NAME "
            "(a device of the directory; default: the one with the calling AE title)"
        )
    device = params.get("device")
    if device is not None and env.peers is not None:  # None: devices unknown (URI check only)
        names = sorted({peer.name for peer in env.peers.values()})
        if device not in names:
            raise ValueError(
                f"sup-from-dev: device={device!r} is not a known remote device with an AE title "
                f"(known: {', '.join(names) or 'none'})"
            )
    return SupplementFromDeviceAction(env, device)


register_scheme("sup-from-dev", _sup_from_dev)
