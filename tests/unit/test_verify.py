"""Leak verification: a source's identifying values found in output bytes, with boundaries."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from coercion.profile import Option, compile_profile
from coercion.profile.identifiers import collect_identifiers
from coercion.profile.verify import find_leaks
from tests.helpers import make_dataset

BASIC = compile_profile()


def source() -> Dataset:
    """A synthetic source whose identifying values are distinctive."""
    ds = make_dataset(patient="KOWALSKA^AGNIESZKA^MARIA", patient_id="PID-55231")
    ds.PatientBirthDate = "19580921"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.7.31"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.7.32"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.7.33"
    return ds


def leaks(data: bytes, ds: Dataset | None = None, *options: Option) -> list[str]:
    """The keywords of *ds* (default: :func:`source`) whose values occur in *data*."""
    ds = source() if ds is None else ds
    return find_leaks(data, collect_identifiers(ds), compile_profile(options))


def padded(text: str) -> bytes:
    """*text* as it sits among other element bytes in a file."""
    return b"\x08\x00\x70\x00LO\x10\x00" + text.encode("latin-1") + b" \x10\x00\x20\x00"


def test_clean_bytes_have_no_leaks() -> None:
    """Bytes without any source value report nothing."""
    assert leaks(padded("ANON3F2A9C^TOKEN 2.25.1234 19000101")) == []


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("PID-55231", "PatientID"),
        ("KOWALSKA^AGNIESZKA^MARIA", "PatientName"),
        ("kowalska^agnieszka^maria", "PatientName"),
        ("Scan of Agnieszka", "PatientName"),
        ("KOWALSKA", "PatientName"),
        ("19580921", "PatientBirthDate"),
        ("1.2.826.0.1.3680043.99.7.31", "SOPInstanceUID"),
        ("1.2.826.0.1.3680043.99.7.32", "StudyInstanceUID"),
        ("1.2.826.0.1.3680043.99.7.33", "SeriesInstanceUID"),
        ("ACC-0815", "AccessionNumber"),
    ],
)
def test_identifying_value_is_found(text: str, keyword: str) -> None:
    """Each kind of identifying value is found and reported by its keyword."""
    assert leaks(padded(text)) == [keyword]


def test_several_leaks_are_sorted_keywords_without_values() -> None:
    """Several leaks come back as sorted keywords, never as the values."""
    found = leaks(padded("PID-55231") + padded("19580921") + padded("MARIA"))
    assert found == ["PatientBirthDate", "PatientID", "PatientName"]
    assert not any("55231" in keyword or "MARIA" in keyword for keyword in found)


@pytest.mark.parametrize(
    "text",
    [
        "1.2.826.0.1.3680043.99.7.311",
        "1.2.826.0.1.3680043.99.7.31.5",
        "21.2.826.0.1.3680043.99.7.31",
        "1.1.2.826.0.1.3680043.99.7.31",
    ],
    ids=["longer-last-part", "more-parts", "digit-before", "uid-before"],
)
def test_uid_inside_a_longer_uid_is_not_a_leak(text: str) -> None:
    """A UID that is only part of a longer UID does not count as found."""
    assert leaks(padded(text)) == []


def test_uid_between_separators_is_a_leak() -> None:
    """A UID in a multi-valued element (backslash separated) is found."""
    assert leaks(padded("1.2.3\\1.2.826.0.1.3680043.99.7.31\\4.5")) == ["SOPInstanceUID"]


@pytest.mark.parametrize(
    "text", ["KOWALSKAS", "Agnieszkaville", "XMARIA", "PID-552310", "195809210"]
)
def test_value_inside_a_longer_word_is_not_a_leak(text: str) -> None:
    """Names, ids and dates count only as whole words, not inside longer ones."""
    assert leaks(padded(text)) == []


def test_retained_uids_are_not_looked_for() -> None:
    """Under RetainUIDsOption the source's UIDs may stay, but its ids may not."""
    data = padded("1.2.826.0.1.3680043.99.7.31") + padded("1.2.826.0.1.3680043.99.7.32")
    assert leaks(data, None, Option.RetainUIDsOption) == []
    assert leaks(data) == ["SOPInstanceUID", "StudyInstanceUID"]
    assert leaks(data + padded("PID-55231"), None, Option.RetainUIDsOption) == ["PatientID"]


def test_dates_are_still_looked_for_when_other_dates_are_kept() -> None:
    """Keeping study dates (full dates option) does not excuse the birth date."""
    data = padded("19580921")
    option = Option.RetainLongitudinalTemporalInformationFullDatesOption
    assert leaks(data, None, option) == ["PatientBirthDate"]


def test_name_part_that_is_a_dictionary_word_is_only_found_in_the_whole_name() -> None:
    """A name component like 'White' (an attribute-name word) is not looked for alone."""
    ds = source()
    ds.PatientName = "WHITE^ZBIGNIEW"
    assert leaks(padded("White Point"), ds) == []
    assert leaks(padded("WHITE^ZBIGNIEW"), ds) == ["PatientName"]
    assert leaks(padded("Zbigniew"), ds) == ["PatientName"]


def test_short_values_are_not_looked_for() -> None:
    """Values shorter than three characters are too common to search for."""
    ds = source()
    ds.PatientName = "LI^WU"
    ds.PatientID = "7"
    assert leaks(padded("LI") + padded("WU") + padded("7"), ds) == []


def test_non_ascii_name_is_found_in_the_files_encoding() -> None:
    """A name with accents is found when encoded in the data set's character set."""
    ds = source()
    ds.PatientName = "MÜLLER^JÜRGEN"
    data = padded("Müller")
    assert find_leaks(data, collect_identifiers(ds), BASIC, ["ascii", "latin-1"]) == ["PatientName"]
    utf8 = "Jürgen".encode()
    assert find_leaks(utf8, collect_identifiers(ds), BASIC, ["utf-8"]) == ["PatientName"]


def test_other_identifying_attributes_are_looked_for() -> None:
    """Other patient names and ids of the source are looked for as well."""
    ds = source()
    ds.OtherPatientIDs = ["OLD-ID-77123"]
    ds.PatientMotherBirthName = "NOWAK^HALINA"
    assert leaks(padded("OLD-ID-77123"), ds) == ["OtherPatientIDs"]
    assert leaks(padded("Halina"), ds) == ["PatientMotherBirthName"]


@pytest.mark.parametrize("codec", ["latin-1", "utf-8"])
def test_verification_finds_a_non_ascii_name_in_another_case(codec: str) -> None:
    """find_leaks reports a patient name written in capitals, umlauts included."""
    ds = make_dataset(patient="Müller^Jörg")
    identifiers = collect_identifiers(ds)
    assert find_leaks("Kontrolle MÜLLER".encode(codec), identifiers, BASIC, [codec]) == [
        "PatientName"
    ]
    assert find_leaks("Kontrolle Müllerova".encode(codec), identifiers, BASIC, [codec]) == []
