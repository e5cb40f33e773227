"""coercion.profile.conformance: the rows of the conformance statement and the notes on C."""

from __future__ import annotations

from coercion.profile import Option
from coercion.profile.conformance import ConformanceRow, clean_note, conformance_rows

MODIFIED = Option.RetainLongitudinalTemporalInformationModifiedDatesOption


def by_tag(*options: Option) -> dict[str, ConformanceRow]:
    """The conformance rows under *options*, by tag as printed."""
    return {row.tag: row for row in conformance_rows(options)}


def test_basic_profile_rows_in_table_order_patterns_last() -> None:
    """657 rows, the four pattern rows at the end, every one from the Basic column."""
    rows = conformance_rows()
    assert len(rows) == 657
    assert [row.name for row in rows[-4:]] == [
        "Curve Data",
        "Overlay Comments",
        "Overlay Data",
        "Private Attributes",
    ]
    assert {row.column for row in rows} == {"Basic"}
    assert not any(row.action == "C" for row in rows)


def test_compound_codes_resolved_with_a_reason() -> None:
    """X/Z/U* becomes U and X/Z/D becomes D, each with a note saying why."""
    rows = by_tag()
    referenced = rows["(0008,1140)"]  # Referenced Image Sequence
    assert (referenced.standard, referenced.action) == ("X/Z/U*", "U")
    assert "UIDs in its items" in referenced.note
    acquisition = rows["(0008,002A)"]  # Acquisition DateTime
    assert (acquisition.standard, acquisition.action) == ("X/Z/D", "D")
    assert "Type 1" in acquisition.note


def test_options_override_the_basic_column() -> None:
    """Under the Modified Dates option a date row shows that column's C and the shift."""
    row = by_tag(MODIFIED)["(0008,0020)"]  # Study Date
    assert (row.column, row.standard, row.action) == (MODIFIED.name, "C", "C")
    assert "shifted" in row.note


def test_clean_notes_per_vr() -> None:
    """C is described by the attribute's VR: tokens, scrubbed text, kept numbers, removed bytes."""
    chosen = frozenset({MODIFIED})
    assert "keyed token" in clean_note("AE", chosen)
    assert "keyed token" in clean_note("PN", chosen)
    assert "E.3.5" in clean_note("LO", chosen) and "e-mail" in clean_note("UT", chosen)
    assert "kept" in clean_note("DS", chosen)
    assert "removed" in clean_note("OB", chosen)
    assert "shifted" in clean_note("DA", chosen)
    assert "shifted" not in clean_note("DA", frozenset())
    assert "shifted" in clean_note("TM", chosen) and "together" in clean_note("TM", chosen)
    assert "item" in clean_note("SQ", chosen)


def test_pattern_rows_under_their_options() -> None:
    """Clean Graphics cleans curves and overlays; Retain Safe Private keeps Table E.3.10-1."""
    rows = by_tag(Option.CleanGraphicsOption, Option.RetainSafePrivateOption)
    assert rows["(60xx,3000)"].action == "C" and "bitmap removed" in rows["(60xx,3000)"].note
    assert rows["(50xx,xxxx)"].action == "C"
    private = rows["(gggg,eeee) where gggg is odd"]
    assert private.column == Option.RetainSafePrivateOption.name
    assert "479 attributes of Table E.3.10-1" in private.note
    assert by_tag()["(gggg,eeee) where gggg is odd"].action == "X"
