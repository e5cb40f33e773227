"""The identifying values of an object: what cleaning scrubs and verification looks for."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from coercion.elements import text_values

__all__ = ["MIN_NEEDLE", "Identifiers", "collect_identifiers"]

#: Values shorter than this are not searched for: too many false matches.
MIN_NEEDLE = 3

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

    def text_needles(self) -> list[str]:
        """Names, ids and dates, longest first (for scrubbing text)."""
        needles = {value for _kw, _tag, kind, value in self.values if kind != "uid"}
        return sorted(needles, key=lambda s: (-len(s), s))


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
