"""The identifying values of an object: what cleaning scrubs and verification looks for.

Verification looks for the patient's own identifiers at the top level
(:func:`collect_identifiers`); cleaning removes more, everything the profile
removes at any depth (:func:`removed_values`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from coercion.dicom.elements import dictionary_vr, text_values, vr_of
from coercion.profile.compiled import Action, CompiledProfile, compile_profile
from coercion.profile.options import Option

__all__ = ["MIN_NEEDLE", "Identifiers", "collect_identifiers", "name_needles", "removed_values"]

#: Values shorter than this are not searched for: too many false matches.
MIN_NEEDLE = 3

#: A name component this long is looked for on its own when cleaning ("Li", "Wu").
MIN_NAME_COMPONENT = 2

#: VRs whose removed values are looked for when cleaning text. Coded strings,
#: numbers and times are left out: they are not identifying on their own and
#: would take ordinary words and figures with them.
_SCRUBBED_VRS = frozenset(
    {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UI", "UR", "UT"}
)
#: C replaces a person name or an AE title by a token: their values go too.
_REPLACED_BY_C = frozenset({"AE", "PN"})
_GONE = frozenset({Action.X, Action.Z, Action.D, Action.U})
#: Source, Sending and Receiving Application Entity Title of the file meta information.
_FILE_META_AE_TITLES = (0x00020016, 0x00020017, 0x00020018)

#: (keyword, tag, kind) of the attributes whose values identify the patient.
IDENTIFYING: tuple[tuple[str, int, str], ...] = (
    ("PatientName", 0x00100010, "name"),
    ("OtherPatientNames", 0x00101001, "name"),
    ("PatientBirthName", 0x00101005, "name"),
    ("PatientMotherBirthName", 0x00101060, "name"),
    ("PatientID", 0x00100020, "id"),
    ("OtherPatientIDs", 0x00101000, "id"),
    ("AccessionNumber", 0x00080050, "id"),
    ("MedicalRecordLocator", 0x00101090, "id"),
    ("PatientBirthDate", 0x00100030, "date"),
    ("StudyInstanceUID", 0x0020000D, "uid"),
    ("SeriesInstanceUID", 0x0020000E, "uid"),
    ("SOPInstanceUID", 0x00080018, "uid"),
    ("FrameOfReferenceUID", 0x00200052, "uid"),
)


@dataclass
class Identifiers:
    """Identifying strings of one object: (keyword, tag, kind, value) tuples.

    ``kind`` is name, name_part, id, date or uid: names contribute the whole
    name and each component (``name_part``); values shorter than
    :data:`MIN_NEEDLE` characters are left out.
    """

    values: list[tuple[str, int, str, str]] = field(default_factory=list)


def _name_parts(name: str) -> set[str]:
    parts = set()
    for group in name.split("="):
        parts.add(group.strip())
        for part in group.split("^"):
            parts.add(part.strip())
            parts.update(part.split())
    return parts


def collect_identifiers(ds: Dataset) -> Identifiers:
    """Collect patient names, ids, birth date and instance UIDs from the top level of *ds*."""
    found = Identifiers()
    seen: set[tuple[int, str]] = set()
    for keyword, tag, kind in IDENTIFYING:
        for value in text_values(ds, tag):
            candidates = [(kind, value)]
            if kind == "name":
                candidates += [("name_part", part) for part in sorted(_name_parts(value) - {value})]
            for candidate_kind, candidate in candidates:
                if len(candidate) >= MIN_NEEDLE and (tag, candidate) not in seen:
                    seen.add((tag, candidate))
                    found.values.append((keyword, tag, candidate_kind, candidate))
    return found


def name_needles(name: str) -> set[str]:
    """What of person name *name* cleaning removes: the name, its groups and components, words.

    Components (``^``-separated) count from :data:`MIN_NAME_COMPONENT`
    characters, the space-separated words inside them from :data:`MIN_NEEDLE`.
    """
    needles = {part for part in _name_parts(name) if len(part) >= MIN_NEEDLE}
    for group in name.split("="):
        needles.update(c.strip() for c in group.split("^") if len(c.strip()) >= MIN_NAME_COMPONENT)
    return needles


def removed_values(ds: Dataset, profile: CompiledProfile) -> set[str]:
    """The values *profile* removes, empties or replaces in *ds*, at every depth.

    Every text, person name, AE title, date and UID value whose attribute
    Table E.1-1 gives X, Z, D or U (and C, for person names and AE titles),
    with person names split by :func:`name_needles`; of private elements,
    those that say they hold a person name (explicit VR PN); the AE titles
    of the file meta information. Values the profile keeps (K, or not
    listed) are not collected. Collect before the object is changed.
    """
    found: set[str] = set()
    _collect(ds, _collected_tags(profile.options), found)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:  # the file meta AE titles are dropped
        for tag in _FILE_META_AE_TITLES:
            _add(found, "AE", text_values(meta, tag))
    return found


@functools.lru_cache(maxsize=64)
def _collected_tags(options: frozenset[Option]) -> frozenset[int]:
    """The public tags whose values :func:`removed_values` collects under *options*."""
    return frozenset(
        tag
        for tag, action in compile_profile(options).actions.items()
        if (vr := dictionary_vr(tag)) in _SCRUBBED_VRS
        and (action in _GONE or (action is Action.C and vr in _REPLACED_BY_C))
    )


def _collect(ds: Dataset, wanted: frozenset[int], found: set[str]) -> None:
    for key, elem in list(ds._dict.items()):
        tag = int(key)
        if tag in wanted:
            vr = vr_of(elem)
            if vr in _SCRUBBED_VRS:
                _add(found, vr, text_values(ds, tag))
            continue
        vr = elem.VR or dictionary_vr(tag)
        if vr == "SQ":
            for item in ds[key].value or ():
                _collect(item, wanted, found)
        elif tag & 0x10000 and vr == "PN":
            _add(found, vr, text_values(ds, tag))


def _add(found: set[str], vr: str, values: list[str]) -> None:
    for value in values:
        if vr == "PN":
            found.update(name_needles(value))
        elif len(value) >= MIN_NEEDLE:
            found.add(value)
