"""Action C on text (PS3.15 E.3.5): keep the words, remove what identifies.

A :class:`Scrubber` is built for one object from the values the profile
removes, empties or replaces in it (:func:`~coercion.profile.identifiers.removed_values`,
collected before any of them is changed). Cleaning a text then removes, case
insensitively and never inside a longer word or number:

- each of those values (every component of a person name, ids, accession
  numbers, other removed text, UIDs, dates as stored);
- dates in the common written forms (YYYYMMDD, YYYY-MM-DD, DD/MM/YYYY,
  DD.MM.YYYY, MM/DD/YYYY, with ``-``, ``/`` or ``.``);
- telephone numbers (7 to 15 digits, written with a ``+`` or ``00`` country
  code, an area code in parentheses, a leading trunk ``0`` and groups,
  ``555-123-4567``, or after "tel", "phone", "fax", "mobile"), e-mail
  addresses and URLs.

Every other word stays: that is what distinguishes C from X. Text is
matched as decoded from the object's character set, so ``MÜLLER`` in a
Latin-1 or UTF-8 description is removed for a name ``Müller``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = ["Scrubber"]

#: A match never starts or ends inside an ASCII word or number. Non-ASCII
#: letters do not count as word characters, so a name inside CJK text (no
#: spaces between words) is found too.
_BEFORE = r"(?<![0-9A-Za-z])"
_AFTER = r"(?![0-9A-Za-z])"

_URL = r"(?:\b[A-Za-z][A-Za-z0-9+.-]{1,15}://|\bwww\.)[^\s<>\"\\]+"
_EMAIL = r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+"
_MONTH = r"(?:0?[1-9]|1[0-2])"
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
_DATES = (
    # YYYYMMDD (years 1800-2099, so that other 8-digit numbers stay)
    r"(?<![0-9])(?:1[89]|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])(?![0-9])",
    # YYYY-MM-DD (and / or . as separator)
    rf"(?<![0-9])[0-9]{{4}}(?P<ymd>[-/.]){_MONTH}(?P=ymd){_DAY}(?![0-9])",
    # DD/MM/YYYY, MM/DD/YYYY, DD.MM.YYYY (and -)
    r"(?<![0-9])[0-9]{1,2}(?P<dmy>[-/.])[0-9]{1,2}(?P=dmy)[0-9]{4}(?![0-9])",
)
_SEP = r"[ ./-]"
_PHONES = (
    # +41 44 123 45 67, 0041 44 1234567, +1 (555) 123-4567
    rf"(?:\+|\b00)[0-9]{{1,3}}{_SEP}?(?:\([0-9]{{1,4}}\){_SEP}?)?[0-9]{{1,5}}"
    rf"(?:{_SEP}?[0-9]{{1,5}}){{1,5}}",
    # (555) 123-4567, (030) 1234 5678
    rf"\([0-9]{{2,5}}\){_SEP}?[0-9]{{2,5}}(?:{_SEP}?[0-9]{{2,5}}){{1,3}}",
    # 555-123-4567, 555.123.4567
    r"\b[0-9]{3}(?P<nanp>[.-])[0-9]{3}(?P=nanp)[0-9]{4}\b",
    # 030 12345678, 01 23 45 67 89, 020 7946 0958: a trunk prefix and groups
    r"\b0[0-9]{1,4}(?:[ /-][0-9]{2,8}){1,4}\b",
    # tel: 1234 5678, Phone 12345678
    r"\b(?:tel|phone|fax|mobile)\b[.:]?\s*\+?[0-9][0-9 ()./-]{5,}[0-9]",
)
#: Telephone numbers have between 7 and 15 digits (ITU-T E.164: at most 15).
_PHONE_DIGITS = range(7, 16)

_GENERIC = re.compile(
    "|".join(f"(?:{p})" for p in (_URL, _EMAIL, *_DATES)),
    re.IGNORECASE,
)
_PHONE = re.compile("|".join(f"(?:{p})" for p in _PHONES), re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")


def _drop_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return " " if digits in _PHONE_DIGITS else text


def _needle_pattern(needle: str) -> str:
    """*needle* as a regular expression; any run of white space matches any other."""
    return r"\s+".join(map(re.escape, needle.split()))


@functools.lru_cache(maxsize=256)
def _values_pattern(needles: tuple[str, ...]) -> re.Pattern[str]:
    """One bounded, case-insensitive pattern for *needles* (longest first)."""
    alternatives = "|".join(_needle_pattern(n) for n in needles)
    return re.compile(f"{_BEFORE}(?:{alternatives}){_AFTER}", re.IGNORECASE)


class Scrubber:
    """Removes one object's identifying values, dates, phones, e-mails and URLs from text.

    Most texts hold none of the values: each value is first looked for by its
    longest word as a plain substring of the case-folded text, and a pattern
    is compiled only for the values that may be there.
    """

    __slots__ = ("_by_word",)

    def __init__(self, needles: Iterable[str]) -> None:
        self._by_word: dict[str, list[str]] = {}
        for needle in {n.strip() for n in needles}:
            if needle:
                word = max(needle.split(), key=len).casefold()
                self._by_word.setdefault(word, []).append(needle)

    def _values(self, text: str) -> re.Pattern[str] | None:
        """The pattern of the values that may occur in *text*; None when none can."""
        folded = text.casefold()
        hits = [n for word, ns in self._by_word.items() if word in folded for n in ns]
        if not hits:
            return None
        return _values_pattern(tuple(sorted(hits, key=lambda s: (-len(s), s))))

    def scrub(self, text: str) -> str:
        """*text* without the identifying parts; unchanged (spacing too) when none is found."""
        if not text:
            return text
        text, changed = _GENERIC.subn(" ", text)
        values = self._values(text)
        if values is not None:
            text, count = values.subn(" ", text)
            changed += count
        scrubbed = _PHONE.sub(_drop_phone, text)
        if not changed and scrubbed == text:
            return text
        return _SPACES.sub(" ", scrubbed).strip()
