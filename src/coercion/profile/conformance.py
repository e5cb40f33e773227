"""The conformance statement: every row of Table E.1-1 with what coercion does for an option set.

Plain data for ``coercion profile show``: per row the cell of the standard that
applies (the Basic Profile's, or the last chosen option column that has one),
the single action coercion takes for it, and a note where that action needs
words: a compound code's choice, and what C (clean) does for the attribute's VR.
Nothing here reads or prints an element value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coercion.dicom.elements import BINARY_VRS, NUMBER_SIZE, dictionary_vr
from coercion.dicom.tags import parse_tag
from coercion.profile._table import OPTION_COLUMNS, PROFILE_ROWS
from coercion.profile.compiled import Action, PatternRow, compile_profile, resolve
from coercion.profile.options import Option

__all__ = ["ConformanceRow", "clean_note", "conformance_rows", "option_header"]

#: Why each compound code resolves as it does (see compiled.py).
COMPOUND_NOTES = {
    "X/Z": "compound: Z, so that a Type 2 attribute stays present",
    "X/D": "compound: D, so that a Type 1 attribute keeps a value",
    "Z/D": "compound: D, so that a Type 1 attribute keeps a value",
    "X/Z/D": "compound: D, so that a Type 1 attribute keeps a value",
    "X/Z/U*": "compound: U, the sequence stays and the UIDs in its items are replaced",
}

_SCRUBBED_TEXT = frozenset({"CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
#: Per pattern row: the note when the row removes (X), and when it cleans (C).
_PATTERN_NOTES = {
    PatternRow.CURVE: (
        "every element of the groups 50xx",
        "clean: the curve's numbers kept, its text cleaned, the curve data removed (binary)",
    ),
    PatternRow.OVERLAY_DATA: (
        "removing an overlay's data removes the whole plane (the rest of group 60xx)",
        "clean: the overlay bitmap removed (binary), the plane's other attributes kept",
    ),
    PatternRow.OVERLAY_COMMENTS: ("", ""),
    PatternRow.PRIVATE: ("every private creator and private data element", ""),
}


@dataclass(frozen=True)
class ConformanceRow:
    """One row of Table E.1-1 under an option set.

    ``column`` is the Table E.1-1 column whose cell applies (``Basic`` or the
    option's keyword); ``standard`` is that cell as printed; ``action`` is the
    one action coercion takes (a compound code resolved); ``note`` says why or how.
    """

    tag: str
    keyword: str
    name: str
    vr: str
    retired: bool
    column: str
    standard: str
    action: str
    note: str


def clean_note(vr: str, options: frozenset[Option]) -> str:
    """What C (clean) does to an element of *vr* under *options* (PS3.15 E.1.1, E.3.5)."""
    if vr == "SQ":
        return "clean: every item de-identified in turn with the same profile"
    if vr in ("DA", "DT", "TM"):
        if Option.RetainLongitudinalTemporalInformationModifiedDatesOption in options:
            return (
                "clean: shifted by the patient's keyed offset (whole seconds); a date and its "
                "time move together, so intervals are kept (E.3.6)"
            )
        return "clean: kept"
    if vr == "PN":
        return "clean: replaced by a keyed token (one person, one token)"
    if vr == "AE":
        return "clean: replaced by a keyed token (one AE title, one token)"
    if vr in _SCRUBBED_TEXT:
        return (
            "clean: text kept minus identifying values (E.3.5): every value the profile "
            "removes, empties or replaces (names and their parts, IDs, UIDs, AE titles, dates), "
            "dates in common forms, phone numbers, e-mail addresses, URLs"
        )
    if vr in BINARY_VRS:
        return "clean: removed (a binary value cannot be cleaned)"
    if vr in NUMBER_SIZE or vr in ("DS", "IS", "AS"):
        return "clean: kept (a number)"
    if vr == "UI":
        return "clean: replaced by a keyed UID"
    return "clean: by the element's own VR (not in the dictionary)"


def _column(basic: str, cells: tuple[str, ...], options: frozenset[Option]) -> tuple[str, str]:
    """The column whose cell applies and that cell: the last chosen option with one wins."""
    column, code = "Basic", basic
    for option in sorted(options, key=lambda o: o.value):
        if cells[option.value]:
            column, code = option.name, cells[option.value]
    return column, code


def _pattern_note(pattern: PatternRow, action: Action, options: frozenset[Option]) -> str:
    removed, cleaned = _PATTERN_NOTES[pattern]
    if action is Action.X:
        return removed
    if pattern is PatternRow.PRIVATE:
        kept = len(compile_profile(options).safe_private)
        return (
            f"clean: the {kept} attributes of Table E.3.10-1 kept (matched by private creator, "
            "group and element offset) with their creator; all others removed"
        )
    return cleaned or clean_note("LT", options)


def conformance_rows(options: Iterable[Option] = ()) -> list[ConformanceRow]:
    """Every Table E.1-1 row under *options*: the exact tags in table order, then the patterns."""
    chosen = frozenset(options)
    patterns = {row.value: row for row in PatternRow}
    exact: list[ConformanceRow] = []
    pattern_rows: list[ConformanceRow] = []
    for tag_text, keyword, name, basic, cells, retired, _in_iod in PROFILE_ROWS:
        column, code = _column(basic, cells, chosen)
        action = resolve(code)
        pattern = patterns.get(tag_text)
        if pattern is not None:
            vr, note = "", _pattern_note(pattern, action, chosen)
        else:
            tag = parse_tag(tag_text)
            vr = "" if tag is None else dictionary_vr(tag, "")
            note = clean_note(vr, chosen) if action is Action.C else COMPOUND_NOTES.get(code, "")
        row = ConformanceRow(
            tag_text, keyword or "", name, vr, retired, column, code, action.value, note
        )
        (pattern_rows if pattern is not None else exact).append(row)
    return exact + pattern_rows


def option_header(option: Option) -> str:
    """The Table E.1-1 column header of *option* (``Rtn. UIDs Opt.``)."""
    return OPTION_COLUMNS[option.value][4]
