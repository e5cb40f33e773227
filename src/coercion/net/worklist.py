"""A local Modality Worklist: items in a folder, matched as PS3.4 C.2.2.2 describes.

Each ``*.dcm`` or ``*.wl`` file of the folder (as dcmtk's worklist SCP keeps
them) is one worklist item. A query's keys with a
value are matched (single value, ``*``/``?`` wildcards, date and time ranges,
UID lists, sequence matching on the first item); empty keys are return keys.
An answer holds the query's keys with the item's values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence

from coercion.dicom.wellformed import check_file
from coercion.errors import InputError
from coercion.net.paths import inside

__all__ = ["Worklist", "answer", "matches"]

log = logging.getLogger(__name__)

_RANGE_VRS = frozenset({"DA", "TM", "DT"})


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _match_value(vr: str, query: str, value: str) -> bool:
    if vr == "UI":
        return value in query.split("\\")
    if vr in _RANGE_VRS and "-" in query:
        low, _, high = query.partition("-")
        return (not low or value >= low) and (not high or value <= high)
    if vr == "PN" or "*" in query or "?" in query:
        return bool(_wildcard(query).fullmatch(value)) or (
            vr == "PN" and query.upper() == value.upper()
        )
    return query == value


def _constrains(query: Dataset) -> bool:
    """Whether *query* has a key with a value (else it only asks for return keys)."""
    for elem in query:
        if elem.VR == "SQ":
            if elem.value and _constrains(elem.value[0]):
                return True
        elif elem.tag != 0x00080005 and _text(elem.value) not in ("", "*"):
            return True
    return False


def matches(query: Dataset, item: Dataset) -> bool:
    """Whether *item* matches every key of *query* that has a value."""
    for elem in query:
        if elem.tag == 0x00080005:
            continue  # Specific Character Set is not a matching key
        if elem.VR == "SQ":
            template = elem.value[0] if elem.value else None
            if template is None or not _constrains(template):
                continue
            found = item.get(elem.tag)
            candidates = list(found.value) if found is not None and found.value else []
            if not any(matches(template, candidate) for candidate in candidates):
                return False
            continue
        wanted = _text(elem.value)
        if not wanted or wanted == "*":
            continue
        have = item.get(elem.tag)
        if have is None or not _match_value(elem.VR, wanted, _text(have.value)):
            return False
    return True


def answer(query: Dataset, item: Dataset) -> Dataset:
    """The answer: every key of *query*, with the value *item* has for it."""
    result = Dataset()
    for elem in query:
        if elem.VR == "SQ":
            found = item.get(elem.tag)
            items = list(found.value) if found is not None and found.value else []
            template = elem.value[0] if elem.value else Dataset()
            result.add_new(
                elem.tag,
                "SQ",
                Sequence([answer(template, i) for i in items if matches(template, i)]),
            )
            continue
        have = item.get(elem.tag)
        result.add_new(elem.tag, elem.VR, have.value if have is not None else None)
    charset = item.get("SpecificCharacterSet")
    if charset is not None:
        result.SpecificCharacterSet = charset
    return result


def _reason(exc: Exception) -> str:
    """Our errors say what is wrong (without values); others are named by class only."""
    return str(exc) if isinstance(exc, InputError) else exc.__class__.__name__


class Worklist:
    """The items of a worklist folder (read per query, so edits show at once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def items(self) -> Iterator[Dataset]:
        """Every readable item; any other file is skipped with one log line (its name, no value).

        A file is read only when it lies in the folder (a symbolic link may not lead out of
        it) and its structure is whole to its last byte; an empty data set is no item.
        """
        if not self.folder.is_dir():
            return
        for path in sorted([*self.folder.glob("*.dcm"), *self.folder.glob("*.wl")]):
            try:
                item = self._read(path)
            except (InputError, InvalidDicomError, OSError, ValueError) as exc:
                log.warning("worklist item %s skipped: %s", path.name, _reason(exc))
                continue
            yield item

    def _read(self, path: Path) -> Dataset:
        if not inside(self.folder, path):
            raise InputError(f"{path.name}: lies outside the worklist folder")
        check_file(path.read_bytes(), path.name)
        item = dcmread(path, force=True)  # with or without a file meta header
        if len(item) == 0:
            raise InputError(f"{path.name}: no data set")
        return item

    def find(self, query: Dataset) -> Iterator[Dataset]:
        """The answers to *query*."""
        for item in self.items():
            if matches(query, item):
                yield answer(query, item)
