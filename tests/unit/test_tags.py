"""Tags are parsed and formatted in one place, in every form the configuration accepts."""

from __future__ import annotations

import pytest

from coercion.dicom.tags import (
    ITEM,
    ITEM_END,
    SEQUENCE_END,
    format_tag,
    format_tags,
    parse_hex,
    parse_tag,
    tag_or_keyword,
)


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("(0010,0010)", 0x00100010),
        ("( 7fe0 , 0010 )", 0x7FE00010),
        ("(0010,0010)\n", 0x00100010),
        ("0010,0010", None),
        ("(10,10)", None),
        ("(0010,00100)", None),
        ("(0010;0010)", None),
        ("PatientName", None),
    ],
)
def test_parse_tag_reads_gggg_eeee_in_parentheses(text: str, tag: int | None) -> None:
    """Four hex digits each, spaces inside allowed, parentheses required."""
    assert parse_tag(text) == tag


def test_parse_tag_without_parentheses_takes_them_or_not() -> None:
    """Conditions may write a tag with or without its parentheses."""
    assert parse_tag("0010,0020", parentheses=False) == 0x00100020
    assert parse_tag(" 0010 , 0020", parentheses=False) == 0x00100020
    assert parse_tag("(0010,0020)", parentheses=False) == 0x00100020
    assert parse_tag("0010,20", parentheses=False) is None


def test_parse_tag_compact_reads_short_hex_without_spaces() -> None:
    """The compact form: one to four digits each, parentheses, no spaces."""
    assert parse_tag("(10,10)", compact=True) == 0x00100010
    assert parse_tag("(0010,0010)", compact=True) == 0x00100010
    assert parse_tag("(10, 10)", compact=True) is None
    assert parse_tag("10,10", compact=True) is None


def test_format_tag_and_paths() -> None:
    """Tags print as (GGGG,EEEE) in capitals; paths join them with a slash."""
    assert format_tag(0x7FE00010) == "(7FE0,0010)"
    assert format_tag(0x00080005) == "(0008,0005)"
    assert format_tags([0x00400275, 0x00321060]) == "(0040,0275)/(0032,1060)"
    assert parse_tag(format_tag(0x0029A1B2)) == 0x0029A1B2


def test_item_and_delimiter_tags_are_plain_ints() -> None:
    """The item tags are pydicom's, as ints (compared in C by the parsers)."""
    assert (ITEM, ITEM_END, SEQUENCE_END) == (0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD)
    assert all(type(tag) is int for tag in (ITEM, ITEM_END, SEQUENCE_END))


@pytest.mark.parametrize(
    ("text", "options", "tag"),
    [
        ("00100010", {}, 0x00100010),
        ("10", {}, None),
        ("10", {"short": True}, 0x10),
        ("(00100010)", {}, None),
        ("(00100010)", {"parentheses": True}, 0x00100010),
        ("0010001G", {"short": True}, None),
        ("001000100", {"short": True}, None),
    ],
)
def test_parse_hex(text: str, options: dict[str, bool], tag: int | None) -> None:
    assert parse_hex(text, **options) == tag


@pytest.mark.parametrize(
    ("text", "options", "tag"),
    [
        ("PatientID", {}, 0x00100020),
        ("PatientId", {}, None),
        ("00100020", {}, 0x00100020),
        ("(0010,0020)", {}, 0x00100020),
        ("0010,0020", {}, 0x00100020),
        ("( 0010 , 0020 )", {}, 0x00100020),
        ("( 0010 , 0020 )", {"spaces": False}, None),
        ("(10,20)", {}, None),
        ("20", {}, None),
        ("20", {"short": True}, 0x20),
        ("(00100020)", {"parentheses": True}, 0x00100020),
    ],
)
def test_tag_or_keyword(text: str, options: dict[str, bool], tag: int | None) -> None:
    assert tag_or_keyword(text, **options) == tag
