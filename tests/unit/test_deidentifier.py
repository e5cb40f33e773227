"""The de-identifier's behaviour beyond single rows: depth, UIDs, dates, marks, options."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from coercion.errors import ConfigError
from coercion.profile import Deidentifier, Option, compile_profile, parse_options
from coercion.profile.keys import KeyScope
from coercion.profile.uids import UIDRemapper
from tests.helpers import SECRET, make_dataset

MODIFIED = Option.RetainLongitudinalTemporalInformationModifiedDatesOption
FULL = Option.RetainLongitudinalTemporalInformationFullDatesOption


def deidentify(ds: Dataset, *options: Option, secret: bytes = SECRET) -> Dataset:
    """De-identify *ds* in place and return it."""
    Deidentifier(compile_profile(options), secret).apply(ds)
    return ds


def nested(depth: int, uid: str) -> Dataset:
    """A chain of ReferencedSeriesSequence items *depth* deep, PHI at every level."""
    item = Dataset()
    item.ReferencedSOPInstanceUID = uid
    item.PatientID = "PID-4711"
    item.add_new(0x00090010, "LO", "NESTED CREATOR")
    item.add_new(0x00091001, "LO", "DOE^JANE")
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedSeriesSequence = [item]
        outer.AccessionNumber = "ACC-0815"
        item = outer
    return item


def test_sequences_three_levels_deep() -> None:
    """UIDs, ids and private elements are handled in items three levels down."""
    ds = make_dataset()
    ds.ReferencedSeriesSequence = [nested(3, ds.SOPInstanceUID)]
    deidentify(ds)
    level1 = ds.ReferencedSeriesSequence[0]
    level3 = level1.ReferencedSeriesSequence[0].ReferencedSeriesSequence[0]
    assert level3.ReferencedSOPInstanceUID == ds.SOPInstanceUID  # same original, same new UID
    assert ds.SOPInstanceUID.startswith("2.25.")
    assert level3.PatientID != "PID-4711"
    assert 0x00091001 not in level3 and 0x00090010 not in level3
    assert level1.AccessionNumber == ""


def test_uid_consistency_between_meta_dataset_and_references() -> None:
    """File meta, the dataset and references map one original to one new UID."""
    first = make_dataset()
    second = make_dataset()
    second.SOPInstanceUID = "1.2.826.0.1.3680043.99.1.1.2"
    item = Dataset()
    item.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = [item]
    second.add_new(0x00081155, "UI", [first.SOPInstanceUID, second.SOPInstanceUID])
    deidentify(first)
    deidentify(second)
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert list(second[0x00081155].value) == [first.SOPInstanceUID, second.SOPInstanceUID]
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.StudyInstanceUID != make_dataset().StudyInstanceUID


def test_new_uid_is_a_valid_uuid_derived_uid() -> None:
    """New UIDs are 2.25.<128-bit UUIDv8 integer>, at most 64 characters."""
    uid = UIDRemapper(KeyScope(SECRET, "deidentify/default").uid).remap("1.2.3.4")
    value = int(uid.removeprefix("2.25."))
    assert len(uid) <= 64 and value < 2**128
    assert (value >> 76) & 0xF == 8 and (value >> 62) & 0x3 == 0x2


def test_same_key_same_output_other_key_other_uids() -> None:
    """De-identification is repeatable under one key and differs under another."""
    a, b = deidentify(make_dataset()), deidentify(make_dataset())
    c = deidentify(make_dataset(), secret=bytes(32))
    assert a == b
    assert a.SOPInstanceUID != c.SOPInstanceUID and a.PatientID != c.PatientID


def test_patient_id_dummy_is_keyed_per_patient() -> None:
    """The dummy Patient ID is stable for one patient and differs between patients."""
    one = deidentify(make_dataset(patient_id="P1")).PatientID
    again = deidentify(make_dataset(patient_id="P1")).PatientID
    other = deidentify(make_dataset(patient_id="P2")).PatientID
    assert one == again != other
    assert one.startswith("ANON") and len(one) <= 16


def test_modified_dates_shift_every_date_and_time_by_one_patient_offset() -> None:
    """Date/time pairs and DT move by one offset in seconds; a DA alone by its day part."""
    ds = make_dataset()
    ds.ContentDate = "20240305"  # no ContentTime: moves by whole days
    ds.add_new(0x00181200, "DA", ["20240101", "20240201"])  # Date of Last Calibration
    deidentifier = Deidentifier(compile_profile([MODIFIED]), SECRET)
    record = deidentifier.apply(ds)
    offset = record.date_offset_seconds
    assert offset is not None and offset <= -86400
    assert offset == deidentifier.date_offset("PID-4711")  # the patient's keyed offset
    study = dt.datetime.strptime(ds.StudyDate + ds.StudyTime, "%Y%m%d%H%M%S")
    acquisition = dt.datetime.strptime(ds.AcquisitionDateTime, "%Y%m%d%H%M%S.%f")
    assert study - dt.datetime(2024, 3, 1, 10, 15) == dt.timedelta(seconds=offset)
    assert acquisition - study == dt.timedelta(minutes=5)  # the interval survives
    days = -(-offset // 86400)  # toward zero
    content = dt.datetime.strptime(ds.ContentDate, "%Y%m%d")
    assert (content - dt.datetime(2024, 3, 5)).days == days
    assert [dt.datetime.strptime(v, "%Y%m%d") for v in ds[0x00181200].value] == [
        dt.datetime(2024, 1, 1) + dt.timedelta(days=days),
        dt.datetime(2024, 2, 1) + dt.timedelta(days=days),
    ]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert deidentify(make_dataset(), MODIFIED).StudyTime == ds.StudyTime
    other = make_dataset(patient_id="SOMEONE-ELSE")
    other_offset = deidentifier.apply(other).date_offset_seconds
    assert other_offset == deidentifier.date_offset("SOMEONE-ELSE") != offset
    other_study = dt.datetime.strptime(other.StudyDate + other.StudyTime, "%Y%m%d%H%M%S")
    assert other_study - dt.datetime(2024, 3, 1, 10, 15) == dt.timedelta(seconds=other_offset)


def test_dates_removed_or_kept_by_option() -> None:
    """Without a date option dates go; with Full Dates they stay as they were."""
    basic = deidentify(make_dataset())
    full = deidentify(make_dataset(), FULL)
    assert basic.StudyDate == "" and basic.LongitudinalTemporalInformationModified == "REMOVED"
    assert (
        full.StudyDate == "20240301"
        and full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    )


def test_marks_what_was_done() -> None:
    """PatientIdentityRemoved, the method and the CID 7050 codes of profile and options."""
    ds = deidentify(make_dataset(), Option.RetainUIDsOption, Option.CleanDescriptorsOption)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113105"]
    assert {item.CodingSchemeDesignator for item in ds.DeidentificationMethodCodeSequence} == {
        "DCM"
    }
    assert "Retain UIDs Option" in list(ds.DeidentificationMethod)


def test_clean_descriptors_scrubs_the_patient_out_of_descriptions() -> None:
    """Clean Descriptors keeps a description but not the patient's name in it."""
    ds = deidentify(make_dataset(), Option.CleanDescriptorsOption)
    assert ds.StudyDescription == "CT head for"
    assert "DOE" not in ds.StudyDescription


def test_retain_options_keep_what_they_name() -> None:
    """Institution and UIDs stay under their options and go without them."""
    kept = deidentify(
        make_dataset(), Option.RetainInstitutionIdentityOption, Option.RetainUIDsOption
    )
    gone = deidentify(make_dataset())
    assert kept.InstitutionName == "Saint Example Hospital"
    assert kept.SOPInstanceUID == make_dataset().SOPInstanceUID
    assert gone.get("InstitutionName") != "Saint Example Hospital"


def test_pixel_data_is_not_read(tmp_path: Path) -> None:
    """A deferred PixelData element is still unread after de-identification."""
    ds = make_dataset()
    ds.Rows = ds.Columns = 128
    ds.PixelData = bytes(128 * 128 * 2)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    read = dcmread(path, defer_size=1024)
    deidentify(read)
    raw = read.get_item(0x7FE00010, keep_deferred=True)
    assert isinstance(raw, RawDataElement) and raw.value is None


def test_record_lists_tags_and_actions_without_values() -> None:
    """The record names tags and action letters, and holds no value."""
    ds = make_dataset()
    record = Deidentifier(compile_profile(), SECRET).apply(ds)
    text = " ".join(str(change) for change in record.changes)
    assert "(0010,0010) Z" in text and "(0008,0018) U" in text
    assert "DOE" not in text and "PID-4711" not in text
    assert record.counts["U"] >= 4


def test_unknown_option_is_named_with_a_suggestion() -> None:
    """An unknown option name fails with a did-you-mean."""
    with pytest.raises(ConfigError, match="did you mean 'RetainUIDsOption'"):
        parse_options(["RetainUIDOption"])
    with pytest.raises(ConfigError, match="valid options are"):
        parse_options(["Nonsense"])


def test_full_and_modified_dates_exclude_each_other() -> None:
    """The two longitudinal date options cannot be combined."""
    with pytest.raises(ConfigError, match="exclude each other"):
        parse_options([FULL.name, MODIFIED.name])


def test_option_names_ignore_case() -> None:
    """Option names are matched without regard to case."""
    assert parse_options(["retainuidsoption"]) == {Option.RetainUIDsOption}


def test_compiled_profile_is_cached() -> None:
    """The same option set compiles once."""
    assert compile_profile({Option.RetainUIDsOption}) is compile_profile([Option.RetainUIDsOption])
