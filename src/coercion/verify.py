"""Verify that a de-identified output holds none of its source's identifying values.

The check scans the bytes of the output (every element except pixel data,
which the profile does not address) for the source's patient names and their
components, patient ids, accession number, birth date and instance UIDs.
Values the chosen options retain on purpose are not looked for. Matches are
bounded (a name must not be part of a longer word, a UID not part of a longer
UID), so the check costs a few regular-expression scans of a few kilobytes:
cheap enough to leave on.

A name component that is also a word of the DICOM data dictionary's
attribute names ("Name", "Test", "White") is looked for only as part of the
whole name: alone it would match code meanings and descriptions that carry
no identity.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from pydicom._dicom_dict import DicomDictionary

from coercion.profile import Action, CompiledProfile
from coercion.profile.identifiers import Identifiers

__all__ = ["find_leaks"]

_WORD = rb"A-Za-z0-9"
_UID = rb"0-9."


@functools.lru_cache(maxsize=1)
def _dictionary_words() -> frozenset[str]:
    """Lower-cased words of every attribute name in pydicom's data dictionary."""
    words: set[str] = set()
    for entry in DicomDictionary.values():
        words.update(w.lower() for w in re.findall(r"[A-Za-z]+", entry[2]))
    return frozenset(words)


def _pattern(value: str, kind: str, encodings: Iterable[str]) -> re.Pattern[bytes] | None:
    alternatives = set()
    for encoding in encodings:
        try:
            alternatives.add(re.escape(value.encode(encoding)))
        except (UnicodeEncodeError, LookupError):
            continue
    if not alternatives:
        return None
    body = b"|".join(sorted(alternatives))
    edge = _UID if kind == "uid" else _WORD
    flags = re.IGNORECASE if kind in ("name", "name_part") else 0
    return re.compile(rb"(?<![" + edge + rb"])(?:" + body + rb")(?![" + edge + rb"])", flags)


def find_leaks(
    data: bytes,
    identifiers: Identifiers,
    profile: CompiledProfile,
    encodings: Iterable[str] = ("ascii", "utf-8", "latin-1"),
) -> list[str]:
    """Return the keywords whose source values occur in *data* (sorted, no values)."""
    found = set()
    codecs = tuple(encodings)
    for keyword, tag, kind, value in identifiers.values:
        if keyword in found or profile.action_for(tag) is Action.K:
            continue
        if kind == "name_part" and value.lower() in _dictionary_words():
            continue
        pattern = _pattern(value, kind, codecs)
        if pattern is not None and pattern.search(data):
            found.add(keyword)
    return sorted(found)
