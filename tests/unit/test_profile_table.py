"""Every row of PS3.15 Table E.1-1, under the Basic Profile and under each option.

The expected action of each row is read from the standard's JSON table in
standard/ps3.15 (not from the generated module), resolved with the choice
for compound codes that README.md documents, and checked against what the
de-identifier does to a real element carrying an identifying value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.dicom.tags import format_tag
from coercion.profile import EDITION, Deidentifier, Option, compile_profile
from coercion.profile._table import OPTION_COLUMNS
from coercion.profile.compiled import PatternRow
from tests.helpers import SECRET

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "standard" / "ps3.15" / "confidentiality-profile.json"
ROWS = json.loads(TABLE.read_text(encoding="utf-8"))
FIELDS = [column[0] for column in OPTION_COLUMNS]  # the JSON field of each option
#: The documented choice for compound codes (README: "Compound action codes").
COMPOUND = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
PATIENT = "ROWTEST^PATIENT"
MARKER = "ROWTEST"
PATTERNS = {p.value for p in PatternRow}
BINARY = ("OB", "OW", "OD", "OF", "OL", "OV", "UN")


def expected(row: dict[str, object], option: Option | None) -> str:
    """The action for *row* under the Basic Profile plus *option*, from the JSON table."""
    code = str(row["basic"])
    if option is not None and row[FIELDS[option.value]]:
        code = str(row[FIELDS[option.value]])
    return COMPOUND.get(code, code)


def vr_for(tag: int) -> str:
    """The dictionary VR, or LO for the rows newer than pydicom's dictionary."""
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "LO"


def identifying_value(vr: str) -> object:
    """A non-empty value of *vr* that a de-identifier must not keep by accident."""
    text = {
        "PN": PATIENT,
        "DA": "20240301",
        "DT": "20240301101500",
        "TM": "101500",
        "UI": "1.2.826.0.1.3680043.99.7.7",
        "AS": "054Y",
        "CS": MARKER,
        "AE": MARKER,
        "DS": "72.5",
        "IS": "42",
        "UR": f"http://example.org/{MARKER}",
    }
    if vr in text:
        return text[vr]
    if vr in ("US", "UL", "SS", "SL", "SV", "UV", "AT"):
        return 7
    if vr in ("FL", "FD"):
        return 7.5
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return MARKER.encode() + b"\x00\x00"
    return f"{MARKER} note about {PATIENT}"


def host(tag: int, vr: str) -> Dataset:
    """A dataset with the patient's identity and one element *tag* of *vr*."""
    ds = Dataset()
    ds.PatientName = PATIENT
    ds.PatientID = "ROW-PID-1"
    if vr == "SQ":
        item = Dataset()
        item.PatientID = "ROW-PID-1"
        item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.7.8"
        ds.add(DataElement(tag, "SQ", Sequence([item])))
    elif tag not in ds:
        ds.add(DataElement(tag, vr, identifying_value(vr)))
    return ds


def check(
    action: str, tag: int, vr: str, before: object, ds: Dataset, option: Option | None
) -> None:
    """Assert that element *tag* of *ds* shows the effect of *action*."""
    label = f"{format_tag(tag)} {vr} {action} under {option}"
    if action == "X" or (action == "C" and vr in BINARY):
        # README: a binary value cannot be cleaned, so C removes it.
        assert tag not in ds, label
        return
    assert tag in ds, label
    after = ds[tag].value
    if action == "Z":
        assert after in ("", None, b"") or (vr == "SQ" and len(after) == 0), label
    elif vr == "SQ":
        # K, C, D, U on a sequence: the items stay and are de-identified in turn.
        assert len(after) == 1, label
        item = after[0]
        assert item.get("PatientID") != "ROW-PID-1", label
        if option is Option.RetainUIDsOption:
            assert item.ReferencedSOPInstanceUID == "1.2.826.0.1.3680043.99.7.8", label
        else:
            assert item.ReferencedSOPInstanceUID.startswith("2.25."), label
    elif action == "K":
        assert after == before, label
    elif action == "U":
        assert str(after).startswith("2.25.") and after != before, label
    elif action == "D":
        assert after not in ("", None, b""), label
        if vr not in ("US", "UL", "SS", "SL", "SV", "UV", "FL", "FD", "DS", "IS", "AT"):
            assert after != before, label
    elif action == "C":
        check_clean(vr, before, after, label, option)


def check_clean(vr: str, before: object, after: object, label: str, option: Option | None) -> None:
    """C keeps a value of similar meaning without the identity in it."""
    if vr in ("DA", "DT"):
        assert option is Option.RetainLongitudinalTemporalInformationModifiedDatesOption
        assert after != before and len(str(after)) == len(str(before)), label
    elif vr in ("LO", "LT", "ST", "SH", "UT", "UC", "AE", "CS", "UR"):
        assert MARKER not in str(after), label
    elif vr == "PN":
        assert str(after) != PATIENT, label


ROW_OPTIONS: list[Option | None] = [None, *Option]


@pytest.mark.parametrize("option", ROW_OPTIONS, ids=lambda o: "Basic" if o is None else o.name)
def test_every_listed_tag(option: Option | None) -> None:
    """Each of the exact-tag rows is applied as the table says, for this option."""
    deidentifier = Deidentifier(compile_profile({option} if option else set()), SECRET)
    checked = 0
    for row in ROWS:
        if row["tag"] in PATTERNS:
            continue
        group, element = str(row["tag"]).strip("()").split(",")
        tag = int(group, 16) << 16 | int(element, 16)
        vr = vr_for(tag)
        ds = host(tag, vr)
        before = ds[tag].value
        action = expected(row, option)
        deidentifier.apply(ds)
        if tag in (0x00100010, 0x00100020) and action in ("Z", "D"):
            checked += 1  # the host's own identity rows: checked by the generic rule below
        check(action, tag, vr, before, ds, option)
        checked += 1
    assert checked >= len(ROWS) - len(PATTERNS)


def _private(ds: Dataset) -> None:
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "DS", "1.5")  # safe: (7053,xx00)
    ds.add_new(0x70531099, "LO", MARKER)  # not in Table E.3.10-1
    ds.add_new(0x00090010, "LO", "ROWTEST CREATOR")
    ds.add_new(0x00091001, "LO", PATIENT)


@pytest.mark.parametrize("option", ROW_OPTIONS, ids=lambda o: "Basic" if o is None else o.name)
def test_pattern_rows(option: Option | None) -> None:
    """Curves, overlay data and comments, and private attributes follow their pattern rows."""
    ds = host(0x00100010, "PN")
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions
    ds.add_new(0x50003000, "OW", b"\x01\x02")  # Curve Data
    ds.add_new(0x60000010, "US", 2)  # Overlay Rows
    ds.add_new(0x60003000, "OW", b"\xff\xff")  # Overlay Data
    ds.add_new(0x60004000, "LT", f"drawn by {PATIENT}")  # Overlay Comments
    _private(ds)
    Deidentifier(compile_profile({option} if option else set()), SECRET).apply(ds)
    rows = {row["tag"]: row for row in ROWS if row["tag"] in PATTERNS}
    curve = expected(rows["(50xx,xxxx)"], option)
    overlay = expected(rows["(60xx,3000)"], option)
    comments = expected(rows["(60xx,4000)"], option)
    private = expected(rows["(gggg,eeee) where gggg is odd"], option)
    if curve == "X":
        assert 0x50000005 not in ds and 0x50003000 not in ds
    else:
        assert ds[0x50000005].value == 1 and 0x50003000 not in ds  # binary: removed
    if overlay == "X":
        assert 0x60003000 not in ds and 0x60000010 not in ds  # the whole plane goes
    else:
        assert 0x60003000 not in ds and ds[0x60000010].value == 2
    if comments == "X":
        assert 0x60004000 not in ds
    else:
        assert PATIENT not in ds[0x60004000].value and "drawn by" in ds[0x60004000].value
    assert 0x00091001 not in ds and 0x00090010 not in ds and 0x70531099 not in ds
    if private == "X":
        assert 0x70531000 not in ds and 0x70530010 not in ds
    else:
        assert ds[0x70531000].value == "1.5"
        assert ds[0x70530010].value == "Philips PET Private Group"


def test_safe_private_matched_by_creator_group_and_offset() -> None:
    """A safe element offset under another creator, or another block, is still removed."""
    ds = Dataset()
    ds.add_new(0x70530011, "LO", "Philips PET Private Group")  # block 0x11
    ds.add_new(0x70531100, "DS", "2.5")  # safe: creator and offset match
    ds.add_new(0x70530012, "LO", "SOMEONE ELSE")
    ds.add_new(0x70531200, "DS", "3.5")  # same offset, wrong creator
    Deidentifier(compile_profile({Option.RetainSafePrivateOption}), SECRET).apply(ds)
    assert ds[0x70531100].value == "2.5"
    assert 0x70531200 not in ds and 0x70530012 not in ds


def test_generated_table_is_current() -> None:
    """The committed module is exactly what the generator makes of the tables."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_profile.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert EDITION == "2026d"


def test_table_counts_match_the_standard() -> None:
    """The compiled Basic Profile covers all 653 exact tags and the 4 pattern rows."""
    profile = compile_profile()
    assert len(profile.actions) + len(profile.patterns) == len(ROWS) == 657
    assert len(compile_profile({Option.RetainSafePrivateOption}).safe_private) == 479
