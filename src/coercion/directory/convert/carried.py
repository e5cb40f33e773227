"""What a dcm4chee-arc rule names outside itself, carried over with it: stylesheets, devices.

dcm4chee-arc names its stylesheets by system properties
(``${jboss.server.temp.url}/dcm4chee-arc/mwl2series.xsl``); here a rule names a
file. :func:`resolve_stylesheet` finds the file in the folder the administrator
copied dcm4chee-arc's stylesheets into and checks that it is an XSLT 1.0
stylesheet. :func:`carry_device` turns a device of the export (the one a
``sup-from-dev:`` rule supplements from) into a remote device of our directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from lxml import etree

from coercion.directory.config import DCM4CHE_DEVICE_INFO, DEVICE_INFO
from coercion.directory.ldifio import DnKey, Entry, dn_key, escape_rdn_value, parent_dn

__all__ = [
    "DEVICE_ATTRIBUTES",
    "carry_device",
    "devices_of",
    "resolve_stylesheet",
]

_PROPERTY = re.compile(r"^\$\{([^}]+)\}/*(.*)$")
#: The folder below the property dcm4chee-arc extracts its stylesheets into.
_ARC_FOLDER = "dcm4chee-arc/"
_XSLT_NS = "http://www.w3.org/1999/XSL/Transform"

#: The attributes a carried device keeps, by object class (PS3.15 H.4.1 to H.4.3 and dcm4che's
#: issuers and institution code, as our schema defines them); dcm4che's other extensions
#: (dcmDevice, dcmNetworkAE...) have no use here and are left out.
DEVICE_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "dicomDevice": (
        "dicomDeviceName",
        "dicomInstalled",
        "dicomDescription",
        *DEVICE_INFO,
        "dicomPrimaryDeviceType",
    ),
    "dicomNetworkConnection": (
        "cn",
        "dicomHostname",
        "dicomPort",
        "dicomTLSCipherSuite",
        "dicomInstalled",
    ),
    "dicomNetworkAE": (
        "dicomAETitle",
        "dicomDescription",
        "dicomAssociationInitiator",
        "dicomAssociationAcceptor",
        "dicomInstalled",
    ),
}
#: dcm4che's additions to dicomDevice; a device with one of them gets this auxiliary class.
_ISSUER_CLASS = "coercionDeviceIssuers"
_RDN = {"dicomDevice": "dicomDeviceName", "dicomNetworkConnection": "cn"}


def resolve_stylesheet(spec: str, folder: Path | None) -> str:
    """The path in *folder* of the stylesheet *spec* names by a system property.

    ValueError, saying what to do, when there is no folder, no such file, or the
    file is not an XSLT 1.0 stylesheet.
    """
    found = _PROPERTY.match(spec.strip())
    if found is None:
        raise ValueError(f"the stylesheet {spec} (a system property inside the URL)")
    name = found[2]
    if folder is None:
        raise ValueError(
            f"the stylesheet {name} (${{{found[1]}}} is dcm4chee-arc's; pass --stylesheets "
            "with the folder holding a copy of dcm4chee-arc's stylesheets)"
        )
    base = folder.resolve()
    names = [name, name.removeprefix(_ARC_FOLDER)] if name.startswith(_ARC_FOLDER) else [name]
    for candidate in names:
        path = (base / candidate).resolve()
        if path.is_relative_to(base) and path.is_file():
            _check_xslt1(path)
            return str(path)
    raise ValueError(f"the stylesheet {name} (not in {base}; copy dcm4chee-arc's file there)")


def _check_xslt1(path: Path) -> None:
    try:
        root = etree.parse(str(path)).getroot()
        etree.XSLT(root)
    except (OSError, etree.XMLSyntaxError, etree.XSLTParseError) as exc:
        raise ValueError(f"the stylesheet {path} (not an XSLT stylesheet: {exc})") from None
    if etree.QName(root).namespace != _XSLT_NS or root.get("version") != "1.0":
        raise ValueError(f"the stylesheet {path} (not XSLT 1.0, which is what runs here)")


def devices_of(entries: list[Entry]) -> dict[str, list[Entry]]:
    """The devices of *entries* by name: each device's entry, then its connections and AEs."""
    devices: dict[str, list[Entry]] = {}
    by_parent: dict[DnKey | None, list[Entry]] = {}
    for dn, attrs in entries:
        classes = _classes(attrs)
        if "dicomdevice" in classes:
            name = _first(attrs, "dicomDeviceName")
            devices.setdefault(name, []).insert(0, (dn, attrs))
        elif classes & {"dicomnetworkconnection", "dicomnetworkae"}:
            by_parent.setdefault(_key(parent_dn(dn)), []).append((dn, attrs))
    for found in devices.values():
        children = by_parent.get(_key(found[0][0]), [])
        found.extend(sorted(children, key=lambda e: "dicomnetworkae" in _classes(e[1])))
    return devices


def carry_device(entries: list[Entry], devices_dn: str) -> tuple[list[Entry], list[str]]:
    """The device *entries* (:func:`devices_of`) as entries of our directory under *devices_dn*,
    and one line for each connection or network AE left behind (its DN and why)."""
    device_dn = ""
    moved: dict[DnKey | None, str] = {}
    carried: list[Entry] = []
    left: list[str] = []
    for dn, attrs in entries:
        kind = _kind(attrs)
        kept = {
            name: values
            for name in DEVICE_ATTRIBUTES[kind]
            if (values := [str(v) for v in _all(attrs, name)])
        }
        rdn = _RDN.get(kind, "dicomAETitle")
        new_dn = f"{rdn}={escape_rdn_value(kept[rdn][0])},{device_dn or devices_dn}"
        if kind == "dicomDevice":
            device_dn = new_dn
            kept.setdefault("dicomInstalled", ["TRUE"])
        elif kind == "dicomNetworkConnection" and "dicomHostname" not in kept:
            # PS3.15 H.4.3 requires a host; without one nothing can reach it
            left.append(f"{dn}: not carried over (a connection without dicomHostname)")
            continue
        elif kind == "dicomNetworkAE":
            references = [
                moved.get(_key(r)) for r in _all(attrs, "dicomNetworkConnectionReference")
            ]
            kept["dicomNetworkConnectionReference"] = [r for r in references if r]
            if not kept["dicomNetworkConnectionReference"]:
                left.append(f"{dn}: not carried over (none of its connections was carried)")
                continue
        moved[_key(dn)] = new_dn
        classes = [kind, _ISSUER_CLASS] if set(kept) & set(DCM4CHE_DEVICE_INFO) else [kind]
        carried.append((new_dn, {"objectClass": classes, **kept}))
    return carried, left


def _kind(attrs: Mapping[str, list[str]]) -> str:
    classes = _classes(attrs)
    return next(kind for kind in DEVICE_ATTRIBUTES if kind.lower() in classes)


def _classes(attrs: Mapping[str, list[str]]) -> set[str]:
    return {str(c).lower() for c in _all(attrs, "objectClass")}


def _all(attrs: Mapping[str, list[str]], name: str) -> list[str]:
    return next((list(v) for k, v in attrs.items() if k.lower() == name.lower()), [])


def _first(attrs: Mapping[str, list[str]], name: str) -> str:
    return next(iter(_all(attrs, name)), "")


def _key(dn: str) -> DnKey | None:
    try:
        return dn_key(dn)
    except ValueError:
        return None
