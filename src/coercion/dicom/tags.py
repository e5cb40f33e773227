"""Tags as people write them, ``(gggg,eeee)``: parsed and formatted here and nowhere else.

Also the item and delimiter tags (pydicom's :data:`~pydicom.tag.ItemTag`,
:data:`~pydicom.tag.ItemDelimiterTag` and :data:`~pydicom.tag.SequenceDelimiterTag`)
as plain ints, which the parsers compare with a C ``==`` rather than
:class:`~pydicom.tag.BaseTag`'s Python one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.datadict import tag_for_keyword
from pydicom.tag import ItemDelimiterTag, ItemTag, SequenceDelimiterTag

__all__ = [
    "ITEM",
    "ITEM_END",
    "SEQUENCE_END",
    "format_tag",
    "format_tags",
    "parse_hex",
    "parse_tag",
    "tag_or_keyword",
]

#: (FFFE,E000): an item of a sequence, or a fragment of encapsulated pixel data.
ITEM = int(ItemTag)
#: (FFFE,E00D): the end of an item of undefined length.
ITEM_END = int(ItemDelimiterTag)
#: (FFFE,E0DD): the end of a sequence (or of fragments) of undefined length.
SEQUENCE_END = int(SequenceDelimiterTag)

# One grammar; parse_tag decides which of its parts a caller accepts.
_TAG = re.compile(
    r"^(?P<open>\()?(?P<s1>\s*)(?P<group>[0-9A-Fa-f]{1,4})(?P<s2>\s*),"
    r"(?P<s3>\s*)(?P<element>[0-9A-Fa-f]{1,4})(?P<s4>\s*)(?P<close>\))?$"
)
_HEX = re.compile(r"^(?P<open>\()?(?P<digits>[0-9A-Fa-f]{1,8})(?P<close>\))?$")


def parse_tag(text: str, *, parentheses: bool = True, compact: bool = False) -> int | None:
    """The tag *text* writes as ``(gggg,eeee)``; None when it writes none.

    By default four hex digits each, spaces allowed around them, and the
    parentheses required; without *parentheses* they may be left out.
    *compact* reads the form some peers accept instead: one to four digits
    each and no spaces, ``(10,10)``.
    """
    found = _TAG.match(text)
    if found is None:
        return None
    if (parentheses or compact) and not (found["open"] and found["close"]):
        return None
    if compact:
        if any(found[space] for space in ("s1", "s2", "s3", "s4")):
            return None
    elif len(found["group"]) != 4 or len(found["element"]) != 4:
        return None
    return int(found["group"], 16) << 16 | int(found["element"], 16)


def parse_hex(text: str, *, short: bool = False, parentheses: bool = False) -> int | None:
    """The tag *text* writes as eight hex digits, ``ggggeeee``; None when it writes none.

    *short* also reads one to seven digits (``10`` is (0000,0010)); *parentheses*
    lets either end carry one, ``(00100010)``.
    """
    found = _HEX.match(text)
    if found is None or (not short and len(found["digits"]) != 8):
        return None
    if not parentheses and (found["open"] or found["close"]):
        return None
    return int(found["digits"], 16)


def tag_or_keyword(
    text: str, *, short: bool = False, parentheses: bool = False, spaces: bool = True
) -> int | None:
    """The tag of a DICOM keyword, ``ggggeeee`` or ``gggg,eeee``; None when *text* is none of them.

    The comma form may have parentheses (either end, or none) and, with
    *spaces*, spaces around the digits; *short* and *parentheses* widen the
    bare hex form as :func:`parse_hex` does.
    """
    if not spaces and any(char.isspace() for char in text):
        return None
    tag = parse_tag(text, parentheses=False)
    if tag is None:
        tag = parse_hex(text, short=short, parentheses=parentheses)
    if tag is None:
        by_keyword = tag_for_keyword(text)
        tag = None if by_keyword is None else int(by_keyword)
    return tag


def format_tag(tag: int) -> str:
    """``(GGGG,EEEE)``: how messages, logs and scripts name a tag."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def format_tags(tags: Iterable[int], separator: str = "/") -> str:
    """Tags one after another, ``(0040,0275)/(0032,1060)``: a path into sequence items."""
    return separator.join(map(format_tag, tags))
