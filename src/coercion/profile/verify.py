"""Verify that a de-identified output holds none of its source's identifying values.

The check scans the bytes of the output (every element except pixel data,
which the profile does not address) for the source's patient names and their
components, patient ids, accession number, birth date and instance UIDs.
Values the chosen options retain on purpose are not looked for. Matches are
bounded (a name must not be part of a longer word, a UID not part of a longer
UID), and the scan is a handful of substring searches over a few kilobytes:
cheap enough to leave on.

Names are matched without regard to case, non-ASCII letters included
(``MÜLLER`` for ``Müller``, in each of the object's character sets).

A name component that is also a word of the DICOM data dictionary's
attribute names ("Name", "Test", "White") is looked for only as part of the
whole name: alone it would match code meanings and descriptions that carry
no identity.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Protocol

from pydicom._dicom_dict import DicomDictionary

from coercion.profile import Action
from coercion.profile.identifiers import Identifiers

__all__ = ["Retention", "find_leaks"]


class Retention(Protocol):
    """What a de-identification keeps: K for a tag whose original value is kept on purpose.

    A :class:`~coercion.profile.CompiledProfile` is one; so is a tag script's assignment.
    """

    def action_for(self, tag: int) -> Action | None:
        """The action for *tag*; values of tags given K are not looked for."""
        ...


_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_UID = frozenset(b"0123456789.")


@functools.lru_cache(maxsize=1)
def _dictionary_words() -> frozenset[str]:
    """Lower-cased words of every attribute name in pydicom's data dictionary."""
    names = "\n".join(entry[2] for entry in DicomDictionary.values()).lower()
    return frozenset(re.findall(r"[a-z]+", names))


def _bounded_find(data: bytes, needle: bytes, edge: frozenset[int]) -> bool:
    """True when *needle* occurs in *data* not flanked by a byte of *edge*."""
    start = data.find(needle)
    end = len(data)
    while start >= 0:
        after = start + len(needle)
        if (start == 0 or data[start - 1] not in edge) and (
            after == end or data[after] not in edge
        ):
            return True
        start = data.find(needle, start + 1)
    return False


def _any_case(value: str, codec: str) -> re.Pattern[bytes] | None:
    """A bounded pattern for *value* in *codec* in any letter case.

    None when *value* cannot be encoded, or *codec* encodes characters with
    state (ISO 2022 escapes), so that a character's bytes depend on its neighbours.
    """
    if not _encodes(value, codec) or value.encode(codec) != b"".join(
        c.encode(codec) for c in value
    ):
        return None
    parts = []
    for char in value:
        variants = {
            v.encode(codec) for v in {char, char.lower(), char.upper()} if _encodes(v, codec)
        }
        if not variants:
            return None
        parts.append(b"(?:" + b"|".join(map(re.escape, sorted(variants))) + b")")
    return re.compile(rb"(?<![0-9A-Za-z])" + b"".join(parts) + rb"(?![0-9A-Za-z])", re.IGNORECASE)


def _encodes(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def find_leaks(
    data: bytes,
    identifiers: Identifiers,
    profile: Retention,
    encodings: Iterable[str] = ("ascii", "utf-8", "latin-1"),
) -> list[str]:
    """Return the keywords whose source values occur in *data* (sorted, no values)."""
    found = set()
    codecs = tuple(dict.fromkeys(encodings))
    folded: bytes | None = None
    for keyword, tag, kind, value in identifiers.values:
        if keyword in found or profile.action_for(tag) is Action.K:
            continue
        is_name = kind in ("name", "name_part")
        if kind == "name_part" and value.lower() in _dictionary_words():
            continue
        if is_name and folded is None:
            folded = data.lower()
        haystack = folded if is_name and folded is not None else data
        edge = _UID if kind == "uid" else _WORD
        for codec in codecs:
            pattern = _any_case(value, codec) if is_name and not value.isascii() else None
            if pattern is not None:
                if pattern.search(data):
                    found.add(keyword)
                    break
                continue
            try:
                needle = (value.lower() if is_name else value).encode(codec)
            except (UnicodeEncodeError, LookupError):
                continue
            if _bounded_find(haystack, needle, edge):
                found.add(keyword)
                break
    return sorted(found)
