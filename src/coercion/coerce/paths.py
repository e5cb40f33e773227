"""Attribute paths as dcm4chee writes them: ``Keyword``, ``0020000D``, ``Seq[2].Keyword``.

A path is a chain of names joined by dots: every name but the last is a
sequence, optionally with the 1-based number of its item in brackets (the
first item when none is given); a name is a DICOM keyword, eight hex digits
or ``(gggg,eeee)``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.datadict import keyword_dict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.dicom.elements import dictionary_vr
from coercion.dicom.tags import tag_or_keyword

__all__ = ["TagPath", "parse_path", "tag_for_name"]

_ITEM = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<number>\d+)\])?$")


def tag_for_name(name: str) -> int:
    """The tag of a keyword, ``ggggeeee`` or ``(gggg,eeee)``; ValueError saying what is wrong."""
    name = name.strip()
    tag = tag_or_keyword(name, parentheses=True, spaces=False)
    if tag is None:
        close = difflib.get_close_matches(name, list(keyword_dict), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"{name!r} is not a DICOM keyword or a tag like 00100020{hint}")
    return tag


@dataclass(frozen=True)
class TagPath:
    """The sequences (tag, 0-based item index or None for every item) leading to ``tag``."""

    text: str
    items: tuple[tuple[int, int | None], ...]
    tag: int

    def item(self, ds: Dataset) -> Dataset | None:
        """The dataset holding ``tag`` (the given or first items), or None when one is missing."""
        for seq_tag, index in self.items:
            elem = ds.get(seq_tag)
            seq = elem.value if elem is not None and elem.VR == "SQ" else None
            position = index or 0
            if not seq or position >= len(seq):
                return None
            ds = seq[position]
        return ds

    def ensure_item(self, ds: Dataset) -> Dataset:
        """The dataset holding ``tag``, making the sequences and items on the way."""
        for seq_tag, index in self.items:
            elem = ds.get(seq_tag)
            if elem is None or elem.VR != "SQ" or elem.value is None:
                ds[seq_tag] = _sequence_element(seq_tag)
                elem = ds[seq_tag]
            seq = elem.value
            position = index or 0
            while len(seq) <= position:
                item = Dataset()
                item._parent_encoding = ds._character_set  # its text in the object's set
                seq.append(item)
            ds = seq[position]
        return ds

    def items_of(
        self, ds: Dataset, where: tuple[tuple[int, int], ...] = ()
    ) -> Iterator[tuple[tuple[tuple[int, int], ...], Dataset]]:
        """Every dataset holding ``tag`` with its item path; a step without index: every item."""
        if len(where) == len(self.items):
            yield where, ds
            return
        seq_tag, index = self.items[len(where)]
        elem = ds.get(seq_tag)
        seq = elem.value if elem is not None and elem.VR == "SQ" and elem.value else []
        numbers = range(len(seq)) if index is None else [index] if index < len(seq) else []
        for number in numbers:
            yield from self.items_of(seq[number], (*where, (seq_tag, number)))


def _sequence_element(tag: int) -> DataElement:
    return DataElement(tag, "SQ", Sequence())


def parse_path(text: str, *, every_item: bool = False) -> TagPath:
    """Parse ``Seq[n].Name``; with *every_item*, a sequence without ``[n]`` means every item."""
    names = text.strip().split(".")
    steps: list[tuple[int, int | None]] = []
    for position, part in enumerate(names):
        found = _ITEM.match(part.strip())
        if found is None:
            raise ValueError(f"{text!r}: {part!r} is not NAME or NAME[n]")
        tag = tag_for_name(found["name"])
        number = found["number"]
        if position == len(names) - 1:
            if number is not None:
                raise ValueError(f"{text!r}: [n] numbers items of a sequence, not {part!r}")
            return TagPath(text.strip(), tuple(steps), tag)
        if dictionary_vr(tag) not in ("SQ", "UN"):
            raise ValueError(f"{text!r}: {found['name']} is not a sequence")
        if number is not None and int(number) < 1:
            raise ValueError(f"{text!r}: items are numbered from 1")
        steps.append((tag, int(number) - 1 if number is not None else (None if every_item else 0)))
    raise ValueError(f"{text!r}: an empty path")  # pragma: no cover - split gives one name
