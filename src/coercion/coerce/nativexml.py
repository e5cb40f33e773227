"""A data set as PS3.19 Native DICOM Model XML and back (what dcm4chee's stylesheets read).

``NativeDicomModel`` holds one ``DicomAttribute`` per element (``tag``,
``vr`` and, unless left out, ``keyword``), its values as numbered ``Value``,
``PersonName`` (``Alphabetic``/``Ideographic``/``Phonetic`` with their
components) or ``Item`` children, binary values as ``InlineBinary``
(base64). Pixel data (group 7FE0) is left out: stylesheets do not touch it
and it stays in the object.
"""

from __future__ import annotations

import base64
from typing import Any

from lxml import etree
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from coercion.dicom.elements import BINARY_VRS, dictionary_vr
from coercion.dicom.tags import parse_hex

__all__ = ["from_xml", "to_xml"]

_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_INTEGER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})


def to_xml(ds: Dataset, keywords: bool = True) -> etree._Element:
    """*ds* as a ``NativeDicomModel`` element."""
    root = etree.Element("NativeDicomModel")
    root.set("{http://www.w3.org/XML/1998/namespace}space", "preserve")
    _attributes(root, ds, keywords)
    return root


def _attributes(parent: etree._Element, ds: Dataset, keywords: bool) -> None:
    for elem in ds:
        tag = int(elem.tag)
        if tag >> 16 == 0x7FE0:
            continue
        node = etree.SubElement(parent, "DicomAttribute")
        node.set("tag", f"{tag:08X}")
        vr = str(elem.VR) if elem.VR and " or " not in str(elem.VR) else dictionary_vr(tag)
        node.set("vr", vr)
        keyword = keyword_for_tag(tag)
        if keywords and keyword:
            node.set("keyword", keyword)
        _values(node, elem, vr, keywords)


def _values(node: etree._Element, elem: DataElement, vr: str, keywords: bool) -> None:
    value = elem.value
    if value is None or (isinstance(value, str | bytes) and not value):
        return
    if vr == "SQ":
        for number, item in enumerate(value, 1):
            child = etree.SubElement(node, "Item", number=str(number))
            _attributes(child, item, keywords)
        return
    if vr in BINARY_VRS or isinstance(value, bytes):
        binary = etree.SubElement(node, "InlineBinary")
        binary.text = base64.b64encode(bytes(value)).decode("ascii")
        return
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    for number, one in enumerate(values, 1):
        if vr == "PN":
            _person_name(node, number, str(one))
        else:
            child = etree.SubElement(node, "Value", number=str(number))
            child.text = _text(one, vr)


def _text(value: object, vr: str) -> str:
    if vr == "AT":
        return f"{int(value):08X}"  # type: ignore[call-overload]
    return str(value)


def _person_name(node: etree._Element, number: int, text: str) -> None:
    child = etree.SubElement(node, "PersonName", number=str(number))
    for group, part in zip(_GROUPS, text.split("="), strict=False):
        if not part:
            continue
        group_node = etree.SubElement(child, group)
        for component, piece in zip(_COMPONENTS, part.split("^"), strict=False):
            if piece:
                etree.SubElement(group_node, component).text = piece


def from_xml(root: etree._Element) -> Dataset:
    """The data set of a ``NativeDicomModel`` element; ValueError naming a bad attribute."""
    ds = Dataset()
    for node in root.iterchildren("DicomAttribute"):
        tag_text = node.get("tag", "")
        tag = parse_hex(tag_text.strip(), short=True)
        if tag is None:
            raise ValueError(f"DicomAttribute with tag {tag_text!r}: not 8 hex digits")
        vr = node.get("vr") or dictionary_vr(tag)
        ds.add(DataElement(tag, vr, _value_of(node, vr, tag)))
    return ds


def _value_of(node: etree._Element, vr: str, tag: int) -> Any:
    if vr == "SQ":
        items = sorted(node.iterchildren("Item"), key=lambda n: int(n.get("number", "0") or 0))
        return Sequence([from_xml(item) for item in items])
    binary = node.find("InlineBinary")
    if binary is not None:
        return base64.b64decode((binary.text or "").strip())
    if vr == "PN":
        names = [_name_of(child) for child in _numbered(node, "PersonName")]
        return names if len(names) > 1 else (names[0] if names else "")
    texts = [child.text or "" for child in _numbered(node, "Value")]
    try:
        values: list[Any] = [_convert(text, vr) for text in texts]
    except ValueError:
        raise ValueError(f"DicomAttribute {tag:08X}: a value is not a valid {vr}") from None
    if not values:
        return None if vr in _INTEGER_VRS | _FLOAT_VRS | {"AT", "DS", "IS"} else ""
    return values if len(values) > 1 else values[0]


def _numbered(node: etree._Element, name: str) -> list[etree._Element]:
    return sorted(node.iterchildren(name), key=lambda n: int(n.get("number", "0") or 0))


def _convert(text: str, vr: str) -> Any:
    if vr in _INTEGER_VRS:
        return int(text)
    if vr in _FLOAT_VRS:
        return float(text)
    if vr == "AT":
        tag = parse_hex(text.strip(), short=True)
        if tag is None:
            raise ValueError(text)
        return tag
    return text


def _name_of(node: etree._Element) -> PersonName:
    groups = []
    for group in _GROUPS:
        found = node.find(group)
        parts = [] if found is None else [(found.findtext(c) or "") for c in _COMPONENTS]
        groups.append("^".join(parts).rstrip("^"))
    return PersonName("=".join(groups).rstrip("="))
