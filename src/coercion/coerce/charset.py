"""``change-charset:`` (re-encode text in another character set) and ``trim-ISO2022:``.

``change-charset:ISO_IR 192`` sets Specific Character Set to the given
term(s) (several separated by ``\\`` or ``:``, as dcm4chee-arc writes them)
and writes every text value (SH, LO, ST, LT, UT, UC, PN, in every item) in
it. A value the target cannot encode fails the rule, naming the attribute:
nothing is written with replacement characters.

``trim-ISO2022:`` drops ISO 2022 code extensions nobody uses: a single
``ISO 2022 IR n`` term becomes ``ISO_IR n`` (``ISO 2022 IR 6`` the default
repertoire), as dcm4chee-arc does; with several terms, when no text value
holds an escape sequence, only the first term is kept, trimmed the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pydicom.charset import convert_encodings, python_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from coercion.dicom.elements import vr_of
from coercion.dicom.tags import format_tag
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_fixed_scheme, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import RuleFailedError
from coercion.profile import Action, Change

__all__ = ["ChangeCharsetAction", "TrimISO2022Action", "adopt_character_set"]

#: The VRs whose values are written in the Specific Character Set.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
_SPECIFIC_CHARACTER_SET = 0x00080005
_ESC = 0x1B
#: ISO 2022 terms with no single-byte equivalent (multi-byte sets).
_NO_PLAIN_FORM = frozenset(
    {"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58"}
)

Where = tuple[tuple[int, int], ...]


def _text_elements(
    ds: Dataset, where: Where = ()
) -> Iterator[tuple[Where, Dataset, int, RawDataElement | object]]:
    """Every text element of *ds* and its items: (item path, dataset, tag, raw or element)."""
    for key in list(ds._dict):
        elem = ds._dict[key]
        vr = vr_of(elem)
        if vr == "SQ":
            seq = ds[key].value or []
            for number, item in enumerate(seq):
                yield from _text_elements(item, (*where, (int(key), number)))
        elif vr in TEXT_VRS:
            yield where, ds, int(key), elem


def _items(ds: Dataset) -> Iterator[Dataset]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield item
                yield from _items(item)


def _encodable(text: str, codecs: list[str]) -> bool:
    if len(codecs) == 1:
        try:
            text.encode(codecs[0])
        except UnicodeEncodeError:
            return False
        return True
    for char in text:  # ISO 2022: each character in any of the sets
        for codec in codecs:
            try:
                char.encode(codec)
                break
            except UnicodeEncodeError:
                continue
        else:
            return False
    return True


def _label(where: Where, tag: int) -> str:
    return "".join(f"{format_tag(t)}[{i}]." for t, i in where) + format_tag(tag)


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple | MultiValue) else [value]


def _first_unencodable(ds: Dataset, codecs: list[str]) -> tuple[Where, int] | None:
    """The first text element with a value *codecs* cannot encode (decoding every one)."""
    for where, item, tag, _elem in list(_text_elements(ds)):
        for text in _values(item[tag].value):
            if text is not None and not _encodable(str(text), codecs):
                return where, tag
    return None


def _adopt(ds: Dataset, codecs: list[str]) -> None:
    """Every item of *ds* encodes its text in *codecs* (unless it names its own set)."""
    for item in _items(ds):
        item._parent_encoding = codecs


def adopt_character_set(ds: Dataset) -> list[Change]:
    """After values came from elsewhere (a stylesheet, a worklist item): make *ds* encodable.

    Items get the object's character set; when a text value does not fit it,
    the object moves to UTF-8 (ISO_IR 192), as dcm4che unifies the character
    sets of merged data.
    """
    found = ds._character_set
    codecs = [found] if isinstance(found, str) else list(found)
    _adopt(ds, codecs)
    if _first_unencodable(ds, codecs) is None:
        return []
    return ChangeCharsetAction(["ISO_IR 192"]).change(ds)


class ChangeCharsetAction:
    """The action of ``change-charset:``."""

    def __init__(self, terms: list[str]) -> None:
        self.terms = terms
        self.codecs = convert_encodings(terms)
        self.target = "\\".join(terms)

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Decode every text value, check it fits the target, then switch the character set."""
        found = _first_unencodable(ds, self.codecs)
        if found is not None:
            raise RuleFailedError(
                f"change-charset: {_label(*found)} has characters that "
                f"{self.target} cannot encode; choose a character set that can (ISO_IR 192 "
                "holds every character)",
                kind="value not encodable in target charset",
            )
        return self.change(ds)

    def change(self, ds: Dataset) -> list[Change]:
        """Switch *ds* to the target set (every value is known to fit)."""
        elements = list(_text_elements(ds))
        _adopt(ds, self.codecs)
        old = ds.get(_SPECIFIC_CHARACTER_SET)
        ds.SpecificCharacterSet = self.terms if len(self.terms) > 1 else self.terms[0]
        same = old is not None and [t.strip() for t in _terms(old.value)] == self.terms
        changes = [] if same else [Change((), _SPECIFIC_CHARACTER_SET, Action.D)]
        recoded = [
            Change(where, tag, Action.C)
            for where, item, tag, _e in elements
            if not all(str(v).isascii() for v in _values(item[tag].value) if v is not None)
        ]  # ASCII is written the same in every set
        return changes + recoded


def _terms(value: object) -> list[str]:
    if value is None:
        return [""]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[attr-defined]


def _trimmed(term: str) -> str | None:
    """The term without code extensions; None when there is none."""
    if not term.startswith("ISO 2022 ") or term in _NO_PLAIN_FORM:
        return None
    return "" if term == "ISO 2022 IR 6" else term.replace("ISO 2022 ", "ISO_", 1)


class TrimISO2022Action:
    """The action of ``trim-ISO2022:``."""

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Replace unused ISO 2022 code extensions by the plain character set."""
        elem = ds.get(_SPECIFIC_CHARACTER_SET)
        if elem is None:
            return []
        terms = [t.strip() for t in _terms(elem.value)]
        if len(terms) > 1 and any(_escapes(e) for _w, _d, _t, e in _text_elements(ds)):
            return []
        plain = _trimmed(terms[0]) if terms[0] else ("" if len(terms) > 1 else None)
        if plain is None:
            return []
        _adopt(ds, convert_encodings([plain]))
        ds.SpecificCharacterSet = plain
        return [Change((), _SPECIFIC_CHARACTER_SET, Action.D)]


def _escapes(elem: object) -> bool:
    if isinstance(elem, RawDataElement):
        return elem.value is not None and _ESC in elem.value
    value = getattr(elem, "value", None)
    text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value or "")
    return not text.isascii()


def _change_charset(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    if params:
        raise ValueError(
            f"change-charset: unknown parameter {', '.join(sorted(params))}; it takes none"
        )
    terms = [t.strip() for t in spec.replace(":", "\\").split("\\")]
    if not any(terms):
        raise ValueError("change-charset: name the target, e.g. change-charset:ISO_IR 192")
    for position, term in enumerate(terms):
        if (term or position) and term not in python_encoding:
            raise ValueError(
                f"change-charset: {term!r} is not a Specific Character Set term "
                "(e.g. ISO_IR 100, ISO_IR 192, ISO 2022 IR 87)"
            )
    return ChangeCharsetAction(terms)


register_scheme("change-charset", _change_charset)
register_fixed_scheme("trim-ISO2022", TrimISO2022Action)
