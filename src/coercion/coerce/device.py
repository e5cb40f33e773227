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

For worklist and MPPS traffic only the issuer is supplemented, as in dcm4chee-arc.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

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
#: SOP classes that get the issuer only: worklist find, MPPS, queries.
_ISSUER_ONLY = frozenset(
    {
        "1.2.840.10008.5.1.4.31",
        "1.2.840.10008.3.1.2.3.3",
        "1.2.840.10008.5.1.4.1.2.1.1",
        "1.2.840.10008.5.1.4.1.2.2.1",
        "1.2.840.10008.5.1.4.1.2.3.1",
    }
)


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
        """Give the attributes without a value the device's values."""
        peer = self.peer(ctx)
        changes = []
        if ctx.sop_class_uid not in _ISSUER_ONLY:
            for _keyword, tag, name, every in _INSTANCE:
                values = peer.info.get(name, ())
                if values and not text_values(ds, tag):
                    put_value(ds, tag, dictionary_vr(tag), list(values if every else values[:1]))
                    changes.append(Change((), tag, Action.D))
        issuer = peer.info.get("dicomIssuerOfPatientID", ())
        if (
            issuer
            and text_values(ds, _PATIENT_ID)
            and not text_values(ds, _ISSUER)
            and not (ds.get(_ISSUER_QUALIFIERS) and ds[_ISSUER_QUALIFIERS].value)
        ):
            put_value(ds, _ISSUER, "LO", [issuer[0]])
            changes.append(Change((), _ISSUER, Action.D))
        return changes


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
