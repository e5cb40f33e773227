"""Rule conditions, with the meaning dcm4chee-arc's ``Conditions`` gives them.

A condition is ``KEY=VALUE`` (it holds when the value matches) or
``KEY!=VALUE`` (it holds when no value matches). KEY is one of the context
names (:data:`CONTEXT_CONDITIONS`) or an attribute: a keyword, a tag as
``gggg,eeee``/``(gggg,eeee)``/``ggggeeee``, or a sequence path
(``ProcedureCodeSequence.CodeValue``, ``00321034.00080100``), optionally with a
value position counted from 1 (``ImageType[3]``). VALUE is one of:

- a Java regular expression the whole value must match (:mod:`coercion.engine.javaregex`);
- codes ``(CV,CSD,"meaning")`` or ``(CV,CSD[CSV],"meaning")``, several joined by ``|``:
  the first item of the sequence KEY holds one of them (the meaning is not compared);
- ``§PATIENT_ID_EST`` (an Estonian personal code with a valid check digit) or
  ``§CURRENT_DATE`` (today as a DA value);
- nothing: ``KEY=`` holds when the attribute has no value, ``KEY!=`` when it has one.

As in dcm4chee-arc: an absent attribute (or context value) never matches,
so a positive condition on it is false and a negative one true; empty values
are skipped; through a sequence path, the condition holds when any item
matches; with a position beyond the attribute's last value the condition
holds as if the value matched; of two conditions with the same KEY (as
written), the later one counts.

``SendingHostname`` and ``ReceivingHostname`` compare both the address of the
peer and its name (:func:`coercion.engine.hostnames.host_names`).
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydicom.datadict import keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from coercion.dicom.elements import key, simple_codec, text_values, vr_of
from coercion.dicom.tags import tag_or_keyword
from coercion.engine.context import EventContext
from coercion.engine.hostnames import host_names
from coercion.engine.javaregex import compile_java

__all__ = ["CONTEXT_CONDITIONS", "Condition", "parse_condition", "parse_conditions"]

#: Conditions on the event context rather than on a DICOM attribute.
CONTEXT_CONDITIONS = (
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SendingHostname",
    "ReceivingHostname",
)
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
_HOSTNAMES = frozenset({"SendingHostname", "ReceivingHostname"})
_KEY_RE = re.compile(r"^(?P<path>[^\[\]!=]+?)(?:\[(?P<position>[0-9]+)\])?(?P<negate>!?)$")
_EST_RE = re.compile(r"[1-6]\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{4}", re.ASCII)
_CODE_VALUE, _LONG_CODE_VALUE, _URN_CODE_VALUE = 0x00080100, 0x00080119, 0x00080120
_DESIGNATOR, _VERSION = 0x00080102, 0x00080103
#: One code: value, designator, version (None when absent).
Code = tuple[str, str | None, str | None]
Matcher = Callable[[str], bool]


@dataclass(frozen=True)
class Condition:
    """One parsed condition; ``tag`` is the top-level tag it reads (None for context ones)."""

    text: str
    key: str  # the KEY as written (with ``!`` and position): a later condition replaces it
    negate: bool
    path: tuple[int, ...] = ()
    position: int = 0  # 1-based; 0: any value
    name: str = ""  # the context name, for a context condition
    matcher: Matcher | None = None  # None: a test for presence
    codes: tuple[Code, ...] = ()  # a code condition when not empty

    @property
    def tag(self) -> int | None:
        """The top-level tag the condition reads (None for a condition on the context)."""
        return self.path[0] if self.path else None

    def holds(self, ctx: EventContext, ds: Dataset) -> bool:
        """Whether the condition holds for *ctx* and *ds*."""
        if not self.path:
            return self._holds_on_context(ctx)
        return self._holds_in(ds, 0, self.negate)

    def _holds_on_context(self, ctx: EventContext) -> bool:
        value = _context_value(ctx, self.name)
        if not value:
            return self.negate
        values = host_names(value) if self.name in _HOSTNAMES else (value,)
        matched = self.matcher is None or any(self.matcher(v) for v in values)
        return matched != self.negate

    def _holds_in(self, ds: Dataset, level: int, negate: bool) -> bool:
        tag = self.path[level]
        if level < len(self.path) - 1:
            if any(self._holds_in(item, level + 1, False) for item in _items(ds, tag)):
                return not negate
            return negate
        if self.codes:
            items = _items(ds, tag)
            found = _code_of(items[0]) if items else None
            return (found is not None and found in self.codes) != negate
        if self.matcher is None:
            return bool(_items(ds, tag) or any(_values(ds, tag))) == negate
        values = _values(ds, tag)
        if self.position:
            if values and (
                self.position > len(values) or _matches(self.matcher, values[self.position - 1])
            ):
                return not negate
            return negate
        return any(_matches(self.matcher, v) for v in values) != negate


def _matches(matcher: Matcher, value: str | None) -> bool:
    return value is not None and matcher(value)


def _items(ds: Dataset, tag: int) -> list[Dataset]:
    """The items of the sequence *tag* of *ds* ([] when absent or not a sequence)."""
    elem = ds.get(key(tag))
    if elem is None or elem.VR != "SQ" or not elem.value:
        return []
    return list(elem.value)


def _values(ds: Dataset, tag: int) -> list[str | None]:
    """Every value of *tag* as text, empty ones as None (so that positions count as written)."""
    elem = ds._dict.get(key(tag))
    if elem is None:
        return []
    vr = vr_of(elem)
    if vr == "SQ":
        return []
    codec = simple_codec(ds) if isinstance(elem, RawDataElement) else None
    if vr in _TEXT_VRS and codec is not None and isinstance(elem.value, bytes):
        if not elem.value:
            return []
        text = elem.value.decode(codec, "replace")
        return [part.strip("\x00 ") or None for part in text.split("\\")]
    value = ds[key(tag)].value
    if value is None or value in ("", b""):
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [text or None for text in (str(v).strip() if v is not None else "" for v in items)]


def _code_of(item: Dataset) -> Code | None:
    tags = (_CODE_VALUE, _LONG_CODE_VALUE, _URN_CODE_VALUE)
    value = next((v[0] for t in tags if (v := text_values(item, t))), None)
    if value is None:
        return None
    designator = text_values(item, _DESIGNATOR)
    version = text_values(item, _VERSION)
    return _code(value, designator[0] if designator else None, version[0] if version else None)


def _code(value: str, designator: str | None, version: str | None) -> Code:
    """A code as compared: version 01 of DCM is the same as no version."""
    if designator == "DCM" and version == "01":
        version = None
    return value, designator, version


def _context_value(ctx: EventContext, name: str) -> str:
    if name == "SendingApplicationEntityTitle":
        return ctx.calling_ae
    if name == "ReceivingApplicationEntityTitle":
        return ctx.called_ae
    if name == "SendingHostname":
        return ctx.sending_hostname
    return ctx.receiving_hostname


def parse_condition(text: str) -> Condition:
    """Parse ``KEY=VALUE`` / ``KEY!=VALUE``; raise ValueError saying what is wrong."""
    name_part, sep, value = text.partition("=")
    found = _KEY_RE.match(name_part.strip())
    if not sep or found is None:
        raise ValueError("expected NAME=REGEX or NAME!=REGEX (NAME may be a path and [position])")
    path_text, negate = found["path"].strip(), bool(found["negate"])
    position = int(found["position"] or 0)
    if found["position"] is not None and position <= 0:
        raise ValueError("a value position counts from 1")
    codes: tuple[Code, ...] = ()
    if value.startswith("("):
        try:
            codes = _parse_codes(value)
        except ValueError:  # not codes: a regular expression, as in dcm4chee-arc
            codes = ()
    matcher = None if codes or not value else _matcher(value)
    if path_text in CONTEXT_CONDITIONS:
        if position:
            raise ValueError(f"{path_text} has one value: no position")
        if codes:
            raise ValueError(f"{path_text} is not a code sequence")
        if matcher is None:
            raise ValueError(
                f"{path_text} needs an expression to match (dcm4chee-arc fails on none)"
            )
        return Condition(text, name_part.strip(), negate, (), 0, path_text, matcher)
    path = tuple(_tag(part.strip()) for part in path_text.split("."))
    return Condition(text, name_part.strip(), negate, path, position, "", matcher, codes)


def parse_conditions(texts: Iterable[str]) -> tuple[Condition, ...]:
    """Parse every condition; of two with the same KEY, the later one counts (as dcm4chee-arc)."""
    by_key: dict[str, Condition] = {}
    for text in texts:
        condition = parse_condition(text)
        by_key.pop(condition.key, None)
        by_key[condition.key] = condition
    return tuple(by_key.values())


def _tag(name: str) -> int:
    tag = tag_or_keyword(name, short=True)
    if tag is None:
        known = [*CONTEXT_CONDITIONS, *keyword_dict]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"unknown condition name {name!r}: not one of "
            f"{', '.join(CONTEXT_CONDITIONS)}, a DICOM keyword, ggggeeee or (gggg,eeee){hint}"
        )
    return tag


def _matcher(value: str) -> Matcher:
    if value.startswith("§"):
        predicate = _PREDICATES.get(value[1:])
        if predicate is not None:
            return predicate
    return compile_java(value).fullmatch  # type: ignore[return-value]


def _parse_codes(value: str) -> tuple[Code, ...]:
    """``(CV,CSD,"meaning")|...``; ValueError when a part is not a code."""
    codes = []
    for part in value.split("|"):
        if len(part) < 9 or not part.startswith("(") or not part.endswith('")'):
            raise ValueError(f'not a code (CV,CSD,"meaning"): {part[:40]!r}')
        code_value, _, rest = part[1:].partition(",")
        designator, _, _meaning = rest.partition(",")
        code_value, designator = code_value.strip(), designator.strip()
        version = None
        if designator.endswith("]") and "[" in designator:
            designator, _, version = designator[:-1].partition("[")
            designator, version = designator.strip(), version.strip()
        if not code_value or (not designator and ":" not in code_value):
            raise ValueError(f'not a code (CV,CSD,"meaning"): {part[:40]!r}')
        codes.append(_code(code_value, designator or None, version))
    return tuple(codes)


def _estonian_id(value: str) -> bool:
    if not _EST_RE.fullmatch(value):
        return False
    digits = [int(c) for c in value]
    check = _weighted(digits, (1, 2, 3, 4, 5, 6, 7, 8, 9, 1))
    if check == 10:
        check = _weighted(digits, (3, 4, 5, 6, 7, 8, 9, 1, 2, 3))
        check = 0 if check == 10 else check
    return digits[10] == check


def _weighted(digits: list[int], weights: tuple[int, ...]) -> int:
    return sum(d * w for d, w in zip(digits, weights, strict=False)) % 11


def _today(value: str) -> bool:
    return value == datetime.date.today().strftime("%Y%m%d")


_PREDICATES: dict[str, Matcher] = {"PATIENT_ID_EST": _estonian_id, "CURRENT_DATE": _today}
