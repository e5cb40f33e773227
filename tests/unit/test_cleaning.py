"""Action C: cleaned text keeps its words and loses every identifying value; AE title tokens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from coercion import batch
from coercion.profile import Deidentifier, Option, compile_profile
from coercion.profile.cleaning import Scrubber
from tests.helpers import SECRET, make_dataset

#: Short phrases, each valid in an LO (64 characters), that together name everything.
PIECES = [
    "Follow-up of Jane DOE for Dr Gregory House",
    "seen with Dr Kildare, ids PID-4711 ACC-0815",
    "born 19700213 1970-02-13 13/02/1970",
    "again 13.02.1970 02/13/1970 stable",
    "call +41 44 123 45 67 or 555-123-4567 planned",
    "jane.doe@example.org https://example.org/p/4711 contrast",
]
FULL = "; ".join(PIECES)
SHORT = "Jane Doe, Dr House, 13.02.1970, stable"
#: What must be gone from every cleaned value (compared without regard to case).
GONE = [
    "jane",
    "doe",
    "gregory",
    "house",
    "kildare",
    "pid-4711",
    "acc-0815",
    "19700213",
    "1970-02-13",
    "13/02/1970",
    "13.02.1970",
    "02/13/1970",
    "+41 44",
    "123 45 67",
    "555-123-4567",
    "@",
    "example.org",
    "https",
]
FULL_CLEANED = (
    "Follow-up of for Dr ; seen with Dr , ids ; born ; again stable; call or planned; contrast"
)

#: Per option: the cleaned elements planted, (tag, VR, value) — every one C under that option.
PLANTED: dict[Option, list[tuple[int, str, str | list[str]]]] = {
    Option.CleanDescriptorsOption: [
        (0x00081030, "LO", SHORT),  # Study Description
        (0x0008103E, "LO", SHORT),  # Series Description
        (0x00204000, "LT", FULL),  # Image Comments
        (0x001021B0, "LT", FULL),  # Additional Patient History
    ],
    Option.RetainPatientCharacteristicsOption: [
        (0x00102110, "LO", PIECES),  # Allergies (1-n)
        (0x00400012, "LO", SHORT),  # Pre-Medication
        (0x00380500, "LO", SHORT),  # Patient State
    ],
    Option.CleanGraphicsOption: [
        (0x60004000, "LT", FULL),  # Overlay Comments, first plane
        (0x60024000, "LT", FULL),  # and the second
    ],
}


def _plant(ds: Dataset, elements: list[tuple[int, str, str | list[str]]]) -> None:
    for tag, vr, value in elements:
        ds.add_new(tag, vr, value)


def planted(option: Option) -> Dataset:
    """A CT object naming patient, physicians, ids, dates and contacts at three depths.

    The second physician's name is only in the innermost item: names are
    collected at every depth.
    """
    ds = make_dataset(patient="DOE^JANE^Q")
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    inner = Dataset()
    inner.PerformingPhysicianName = "KILDARE^JAMES"
    middle = Dataset()
    middle.ReferencedSeriesSequence = [inner]
    ds.ReferencedSeriesSequence = [middle]
    for level in (ds, middle, inner):
        _plant(level, PLANTED[option])
    return ds


def levels(ds: Dataset) -> list[Dataset]:
    """The top level, the item and the nested item of :func:`planted`."""
    middle = ds.ReferencedSeriesSequence[0]
    return [ds, middle, middle.ReferencedSeriesSequence[0]]


def values(ds: Dataset, tag: int) -> list[str]:
    """The text values of *tag* in *ds*."""
    value = ds[tag].value
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


def run_batch(tmp_path: Path, ds: Dataset, options: set[Option], verify: bool) -> bytes:
    """De-identify *ds* as ``coercion deidentify`` does; the output's bytes (it must be written)."""
    src = tmp_path / "src" / "in.dcm"
    src.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(src, ds, enforce_file_format=True)
    dst = tmp_path / ("checked" if verify else "unchecked")
    settings = batch.BatchSettings(frozenset(options), SECRET, dst, verify=verify)
    summary = batch.run(batch.plan([src.parent], dst), settings, workers=1)
    assert [r.status for r in summary.results] == ["written"], [r.reason for r in summary.results]
    return (dst / "in.dcm").read_bytes()


@pytest.mark.parametrize("option", list(PLANTED), ids=lambda o: o.name)
def test_cleaning_removes_identity_at_every_depth_verified_or_not(
    tmp_path: Path, option: Option
) -> None:
    """Names, ids, dates, phones, e-mail, URLs go, other words stay; verify on = verify off."""
    checked = run_batch(tmp_path, planted(option), {option}, verify=True)
    unchecked = run_batch(tmp_path, planted(option), {option}, verify=False)
    assert checked == unchecked
    out = dcmread(tmp_path / "checked" / "in.dcm")
    for level in levels(out):
        for tag, vr, _value in PLANTED[option]:
            cleaned = values(level, tag)
            text = " ".join(cleaned).lower()
            assert not [gone for gone in GONE if gone in text], f"({tag:08X}) {vr}"
            assert "stable" in text
            if vr == "LT":
                assert cleaned == [FULL_CLEANED]
    assert levels(out)[0].PatientName != "DOE^JANE^Q"


def test_without_the_option_the_descriptions_go() -> None:
    """Under the Basic Profile alone the same descriptions are removed (X), not cleaned."""
    ds = planted(Option.CleanDescriptorsOption)
    Deidentifier(compile_profile(), SECRET).apply(ds)
    assert all(0x00204000 not in level and 0x00081030 not in level for level in levels(ds))


def test_values_the_profile_keeps_are_not_scrubbed() -> None:
    """An institution name kept by its option stays in a cleaned description; removed, it goes."""
    options = (Option.CleanDescriptorsOption, Option.RetainInstitutionIdentityOption)
    kept = make_dataset()
    kept.ImageComments = "Scanned at Saint Example Hospital today"
    Deidentifier(compile_profile(options), SECRET).apply(kept)
    removed = make_dataset()
    removed.ImageComments = "Scanned at Saint Example Hospital today"
    Deidentifier(compile_profile(options[:1]), SECRET).apply(removed)
    assert kept.ImageComments == "Scanned at Saint Example Hospital today"
    assert removed.ImageComments == "Scanned at today"


def test_structured_content_text_is_cleaned_in_nested_items() -> None:
    """Under Clean Structured Content a TextValue two items down loses names, keeps words."""
    ds = make_dataset()
    ds.add_new(0x00091010, "LO", "CREATOR")
    ds.add_new(0x00091011, "PN", "NIGHTINGALE^FLORENCE")  # a private name is still a name
    text = Dataset()
    text.ValueType = "TEXT"
    text.TextValue = "Jane Doe reviewed by Florence Nightingale on 01.03.2024: no change"
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = [text]
    ds.ContentSequence = [container]
    Deidentifier(compile_profile([Option.CleanStructuredContentOption]), SECRET).apply(ds)
    cleaned = ds.ContentSequence[0].ContentSequence[0].TextValue
    assert cleaned == "reviewed by on : no change"


def test_kept_uids_stay_in_cleaned_text_verified_or_not(tmp_path: Path) -> None:
    """Under Retain UIDs a UID in a description stays, with verification on as off."""
    ds = make_dataset()
    ds.ImageComments = f"Prior study {ds.StudyInstanceUID} reviewed"
    options = {Option.CleanDescriptorsOption, Option.RetainUIDsOption}
    assert run_batch(tmp_path, ds, options, verify=True) == run_batch(
        tmp_path, ds, options, verify=False
    )
    assert dcmread(tmp_path / "checked" / "in.dcm").ImageComments == ds.ImageComments


def test_ae_titles_removed_anywhere_go_from_cleaned_text() -> None:
    """AE titles of the dataset, an item and the file meta (all removed) go from descriptions."""
    ds = make_dataset()
    ds.file_meta.SourceApplicationEntityTitle = "SENDER_AE"
    ds.StationAETitle = "STATION_AE"
    step = Dataset()
    step.ScheduledStationAETitle = "SCHEDULED_AE"
    ds.ScheduledProcedureStepSequence = [step]
    ds.ImageComments = "From sender_ae via STATION_AE for SCHEDULED_AE, unchanged"
    Deidentifier(compile_profile([Option.CleanDescriptorsOption]), SECRET).apply(ds)
    assert ds.ImageComments == "From via for , unchanged"


@pytest.mark.parametrize(
    ("charset", "name", "text", "cleaned"),
    [
        (
            "ISO_IR 100",
            "Müller^Jörg",
            "Kontrolle MÜLLER, JÖRG: unauffällig",
            "Kontrolle , : unauffällig",
        ),
        (
            "ISO_IR 192",
            "Иванов^Пётр",
            "ИВАНОВ пётр: контроль без изменений",
            ": контроль без изменений",
        ),
    ],
    ids=["latin-1", "utf-8"],
)
def test_non_ascii_names_are_scrubbed_in_any_case(
    tmp_path: Path, charset: str, name: str, text: str, cleaned: str
) -> None:
    """A name in another letter case goes from Latin-1 and UTF-8 text, verification on or off."""
    ds = make_dataset(patient=name)
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = text
    item = Dataset()
    item.ImageComments = text
    ds.ReferencedSeriesSequence = [item]
    options = {Option.CleanDescriptorsOption}
    assert run_batch(tmp_path, ds, options, verify=True) == run_batch(
        tmp_path, ds, options, verify=False
    )
    out = dcmread(tmp_path / "checked" / "in.dcm")
    assert out.StudyDescription == cleaned
    assert out.ReferencedSeriesSequence[0].ImageComments == cleaned


def test_japanese_name_is_scrubbed_from_iso_2022_text(tmp_path: Path) -> None:
    """In pydicom's ISO 2022 IR 87 file, the ideographic name goes from text without spaces."""
    ds = dcmread(get_charset_files("chrH31.dcm")[0])
    ideographic = str(ds.PatientName).split("=")[1]  # 山田^太郎
    family, given = ideographic.split("^")
    ds.StudyDescription = f"{family}{given}さんの検査 CT"
    ds.ImageComments = f"Yamada {family}さん"
    options = {Option.CleanDescriptorsOption}
    assert run_batch(tmp_path, ds, options, verify=True) == run_batch(
        tmp_path, ds, options, verify=False
    )
    out = dcmread(tmp_path / "checked" / "in.dcm")
    assert out.StudyDescription == "さんの検査 CT"
    assert out.ImageComments == "さん"


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Matrix 512 512 256, 120 kVp, 0.5 mm, series 5 10 15", None),
        ("UID 1.2.840.10008.5.1.4.1.1.2 of version 3.11.2", None),
        ("Mülleriana and Doeling stay", None),
        ("seen 2024/03/01 and 1/2/2024, Tel. 0301234567", "seen and ,"),
        ("Doe\r\nJane  was here", "was here"),
    ],
)
def test_scrubber_keeps_ordinary_text(text: str, cleaned: str | None) -> None:
    """Numbers, UIDs and longer words stay; dates, phones go; untouched text keeps its spacing."""
    scrubber = Scrubber(["Doe", "Jane", "Müller"])
    assert scrubber.scrub(text) == (text if cleaned is None else cleaned)


@pytest.mark.parametrize(
    "planted",
    [
        "19700213",
        "1970-02-13",
        "13/02/1970",
        "13.02.1970",
        "02/13/1970",
        "+41 44 123 45 67",
        "0041 44 123 45 67",
        "+1 (555) 123-4567",
        "(030) 1234 5678",
        "555.123.4567",
        "030 12345678",
        "020 7946 0958",
        "fax: 1234 5678",
        "j.doe+ct@mail.example.org",
        "http://pacs.example.org/viewer?study=1.2.3",
        "www.example.org/jane",
    ],
)
def test_scrubber_removes_dates_phones_mail_and_urls(planted: str) -> None:
    """Each written form of a date, phone number, e-mail address or URL goes; the words stay."""
    assert Scrubber([]).scrub(f"Before {planted} after") == "Before after"


# -- AE titles under the Retain Device Identity Option ----------------------------------

DEVICE = Option.RetainDeviceIdentityOption
AE_CHARACTERS = re.compile(r"^[\x20-\x5B\x5D-\x7E]{1,16}$")  # default repertoire, no backslash


def with_ae_titles(station: str, other: str) -> Dataset:
    """An object with AE titles at the top level, in an item and in a nested item."""
    ds = make_dataset()
    ds.StationAETitle = station
    ds.RetrieveAETitle = [other, station]
    step = Dataset()
    step.ScheduledStationAETitle = station
    nested = Dataset()
    nested.RetrieveAETitle = other
    step.ReferencedSeriesSequence = [nested]
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def ae_tokens(ds: Dataset) -> tuple[str, list[str], str, str]:
    """StationAETitle, RetrieveAETitle, the item's and the nested item's AE titles."""
    step = ds.ScheduledProcedureStepSequence[0]
    return (
        ds.StationAETitle,
        list(ds.RetrieveAETitle),
        step.ScheduledStationAETitle,
        step.ReferencedSeriesSequence[0].RetrieveAETitle,
    )


def deidentify(ds: Dataset, secret: bytes = SECRET) -> Dataset:
    """De-identify *ds* under Retain Device Identity and return it."""
    Deidentifier(compile_profile([DEVICE]), secret).apply(ds)
    return ds


def test_ae_titles_become_one_valid_keyed_token_per_title() -> None:
    """Same AE title, same token at every depth and attribute; another title, another token."""
    station, retrieve, scheduled, nested = ae_tokens(
        deidentify(with_ae_titles("CT_SCANNER_01", "ARCHIVE"))
    )
    assert retrieve == [nested, station] and scheduled == station
    assert station != nested
    for token in (station, nested):
        assert AE_CHARACTERS.match(token) and token.strip() == token
        assert token not in ("CT_SCANNER_01", "ARCHIVE")


def test_ae_title_tokens_agree_across_objects_and_differ_by_key() -> None:
    """Two objects give one title one token; another key gives another."""
    first = ae_tokens(deidentify(with_ae_titles("CT_SCANNER_01", "ARCHIVE")))
    second = ae_tokens(deidentify(with_ae_titles("ARCHIVE", "CT_SCANNER_01")))
    other_key = ae_tokens(deidentify(with_ae_titles("CT_SCANNER_01", "ARCHIVE"), bytes(32)))
    assert first[0] == second[3] and first[3] == second[0]
    assert other_key[0] != first[0]


def test_without_device_identity_ae_titles_are_removed() -> None:
    """Under the Basic Profile alone AE titles are removed (X)."""
    ds = with_ae_titles("CT_SCANNER_01", "ARCHIVE")
    Deidentifier(compile_profile(), SECRET).apply(ds)
    assert "StationAETitle" not in ds and "RetrieveAETitle" not in ds
