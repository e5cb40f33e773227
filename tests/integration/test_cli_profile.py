"""``coercion profile show`` as a user runs it: every Table E.1-1 row, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coercion.dicom.tags import parse_tag
from coercion.profile import Option, compile_profile
from coercion.profile.conformance import clean_note
from tests.helpers import coercion

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TABLE = json.loads(
    (ROOT / "standard" / "ps3.15" / "confidentiality-profile.json").read_text(encoding="utf-8")
)


def test_json_gives_every_row_with_the_cell_that_applies() -> None:
    """JSON: 657 rows; each cell is the standard's for the options, each action the engine's."""
    result = coercion(
        "profile",
        "show",
        "--option",
        "RetainUIDsOption",
        "--option",
        "cleandescriptorsoption",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["edition"] == "2026d"
    assert [o["code"] for o in document["options"]] == ["113110", "113105"]
    rows = {row["tag"]: row for row in document["rows"]}
    assert len(document["rows"]) == len(rows) == len(TABLE) == 657
    compiled = compile_profile({Option.RetainUIDsOption, Option.CleanDescriptorsOption})
    for source in TABLE:
        row = rows[source["tag"]]
        cell = source["clean_descriptors"] or source["retain_uids"] or source["basic"]
        assert row["standard"] == cell, source["tag"]
        if not source["tag"].startswith("(gggg") and "xx" not in source["tag"]:
            tag = parse_tag(source["tag"])
            assert tag is not None, source["tag"]
            assert row["action"] == compiled.actions[tag].value
    assert rows["(0020,000D)"]["column"] == "RetainUIDsOption"
    assert rows["(0020,000D)"]["action"] == "K"
    assert rows["(0008,1030)"]["action"] == "C"  # Study Description, cleaned
    assert "E.3.5" in rows["(0008,1030)"]["note"]
    assert rows["(0008,0022)"]["standard"] == "X/Z" and rows["(0008,0022)"]["action"] == "Z"


def test_table_keeps_full_rows_when_piped() -> None:
    """Piped, the table has one unwrapped line per row, notes whole, and names the options."""
    result = coercion(
        "profile",
        "show",
        "--option",
        "RetainDeviceIdentityOption",
        "--option",
        "CleanDescriptorsOption",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "RetainDeviceIdentityOption (113109), CleanDescriptorsOption (113105)" in lines[0]
    station = [line for line in lines if "(0008,0055)" in line]  # Station AE Title
    assert len(station) == 1
    cells = [cell.strip() for cell in station[0].split("│")]
    assert cells[1:7] == [
        "(0008,0055)",
        "StationAETitle",
        "AE",
        "RetainDeviceIdentityOption",
        "C",
        "C",
    ]
    assert "keyed token" in cells[7]
    body = [line for line in lines if line.startswith("│ (")]
    assert len(body) == 657
    study = [line for line in body if "(0008,1030)" in line]  # Study Description
    assert len(study) == 1 and clean_note("LO", frozenset()) in study[0]
    assert max(len(line) for line in body) > 250  # wider than COLUMNS: nothing was cut to fit


def test_unknown_option_fails_with_a_suggestion() -> None:
    """A misspelt option exits 2 with a did-you-mean and prints no table."""
    result = coercion("profile", "show", "--option", "RetainUIDOption")
    assert result.returncode == 2
    assert "did you mean 'RetainUIDsOption'?" in result.stderr
    assert result.stdout == ""
