"""Date and time shifting (PS3.15 E.3.6): pairs, TM alone, DT, ranges, precision, reversal."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from coercion.profile import Deidentifier, Option, compile_profile
from coercion.profile.dates import (
    DATE_TIME_PAIRS,
    day_offset,
    offset_seconds,
    shift_da,
    shift_dt,
    shift_tm,
    shift_values,
)
from tests.helpers import SECRET, make_dataset

MODIFIED = Option.RetainLongitudinalTemporalInformationModifiedDatesOption
#: 100 days and 3 hours into the past.
OFFSET = -(100 * 86400 + 3 * 3600)


def moment(date: str, time: str) -> dt.datetime:
    """A DA and a full TM (fraction allowed) as one datetime."""
    full = time if "." in time else time + ".0"
    return dt.datetime.strptime(date + full, "%Y%m%d%H%M%S.%f")


def tag(keyword: str) -> int:
    """The tag of a dictionary keyword."""
    found = tag_for_keyword(keyword)
    assert found is not None
    return found


def test_pair_crossing_midnight_keeps_the_interval() -> None:
    """A date/time pair moves as one moment: an interval across midnight is the same after."""
    start = ("20240301", "233000")
    end = ("20240302", "004500")
    moved = [(shift_da(d, OFFSET, t), shift_tm(t, OFFSET)) for d, t in (start, end)]
    assert moved == [("20231122", "203000"), ("20231122", "214500")]
    before = moment(*end) - moment(*start)
    after = moment(*moved[1]) - moment(*moved[0])
    assert before == after == dt.timedelta(minutes=75)
    assert moment(*moved[0]) - moment(*start) == dt.timedelta(seconds=OFFSET)


def test_time_alone_moves_by_the_offset_modulo_a_day() -> None:
    """A TM without its date moves by the offset modulo a day and keeps its form."""
    assert shift_tm("101500", OFFSET) == "071500"
    assert shift_tm("013000", OFFSET) == "223000"  # wraps around midnight
    assert shift_tm("101500.123456", OFFSET) == "071500.123456"  # fraction kept
    assert shift_tm("101500.1", OFFSET) == "071500.1"


def test_shortened_times_keep_their_precision() -> None:
    """HH and HHMM stay HH and HHMM, moved by the offset truncated to an hour or minute."""
    odd = -(3 * 3600 + 25 * 60 + 7)
    assert shift_tm("10", odd) == "07"
    assert shift_tm("1015", odd) == "0650"
    assert shift_tm("101500", odd) == "064953"
    assert shift_da("20240301", odd, "01") == "20240229"  # 01h - 3h: the day before


def test_acr_nema_forms_are_read_and_written_in_the_dicom_form() -> None:
    """HH:MM:SS and YYYY.MM.DD (accepted by readers) come out as valid DICOM values."""
    assert shift_tm("10:15:00.5", OFFSET) == "071500.5"
    assert shift_tm("10:15", OFFSET) == "0715"
    assert shift_da("2024.03.01", OFFSET, "01:30:00") == "20231121"


def test_date_alone_moves_by_the_day_part() -> None:
    """A DA with no partner moves by whole days: the offset's day part."""
    assert day_offset(OFFSET) == -100
    assert shift_da("20240301", OFFSET) == "20231122"
    assert shift_da("20240301", OFFSET, "not a time") == "20231122"  # a bad partner is ignored


def test_dt_moves_whole_and_keeps_its_utc_offset() -> None:
    """A DT moves by the whole offset; its UTC offset and fraction stay."""
    assert shift_dt("20240301013000.123456+0100", OFFSET) == "20231121223000.123456+0100"
    assert shift_dt("20240301120000-0500", OFFSET) == "20231122090000-0500"
    assert shift_dt("2024030101", OFFSET) == "2023112122"  # hour precision
    assert shift_dt("20240301", OFFSET) == "20231122"  # day precision: the day part
    assert shift_dt("202403", OFFSET) == "202311" and shift_dt("2024", OFFSET) == "2023"


def test_ranges_move_part_by_part() -> None:
    """Query ranges of DA, TM and DT move side by side; open sides stay open."""
    assert shift_da("20240301-20240302", OFFSET, "0100-0500") == "20231121-20231123"
    assert shift_da("-20240301", OFFSET) == "-20231122"
    assert shift_da("20240301-", OFFSET) == "20231122-"
    assert shift_tm("1000-1100", OFFSET) == "0700-0800"
    assert shift_tm("-1100", OFFSET) == "-0800"
    assert shift_dt("20240301-20240401", OFFSET) == "20231122-20231223"
    assert shift_dt("20240301120000+0100-", OFFSET) == "20231122090000+0100-"


def test_multi_valued_values_move_element_by_element() -> None:
    """Each value of a multi-valued DA moves with the TM value at the same position."""
    dates = shift_values("DA", ["20240101", "20240201"], OFFSET, ["010000", "120000"])
    times = shift_values("TM", ["010000", "120000"], OFFSET)
    assert dates == ["20230922", "20231024"] and times == ["220000", "090000"]
    assert shift_values("DT", ["2024", "20240301"], OFFSET) == ["2023", "20231122"]


@pytest.mark.parametrize(
    ("vr", "value"),
    [
        ("DA", "20240230"),
        ("DA", "2024-03-01x"),
        ("TM", "2500"),
        ("TM", "10:15:00:00"),
        ("TM", "1015.5"),
        ("DT", "2024030"),
        ("DT", "20240301256000"),
        ("DA", "00010101"),
    ],
)
def test_invalid_values_raise(vr: str, value: str) -> None:
    """A value that is not valid (or would leave the calendar) is refused, never emitted."""
    with pytest.raises(ValueError):
        shift_values(vr, [value], OFFSET)


def test_shifting_back_restores_every_value_exactly() -> None:
    """Shifting by -offset gives back dates and times of every precision."""
    odd = -(37 * 86400 + 5 * 3600 + 25 * 60 + 7)
    for date, time in [("20240301", "001500"), ("20240301", "23"), ("20000229", "2359")]:
        there = (shift_da(date, odd, time), shift_tm(time, odd))
        assert (shift_da(there[0], -odd, there[1]), shift_tm(there[1], -odd)) == (date, time)
    for value in ["20240301013000.123456+0100", "2024030101", "20240301", "-20240401"]:
        assert shift_dt(shift_dt(value, odd), -odd) == value
    assert shift_da(shift_da("20240301", odd), -odd) == "20240301"


def test_offset_has_a_day_part_in_range_and_a_part_below_a_day() -> None:
    """Offsets keep the drawn day as their day part; the rest is below a day, same direction."""
    digest = bytes(range(16))
    for low, high in [(-3650, -1), (-400, -10), (5, 9), (0, 0)]:
        seconds = offset_seconds(digest, low, high)
        assert low <= day_offset(seconds) <= high
        assert abs(seconds - day_offset(seconds) * 86400) < 86400
    assert offset_seconds(digest, -3650, -1) % 86400 != 0  # times move too
    assert offset_seconds(digest, 0, 0) == 0  # a range of 0..0 shifts nothing
    with pytest.raises(ValueError):
        offset_seconds(digest, 1, 0)


def test_pairs_are_generated_from_the_dictionary() -> None:
    """Every Date/Time keyword pair of the dictionary is known, Date-first spellings included."""
    expected = [
        ("StudyDate", "StudyTime"),
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("DateOfLastCalibration", "TimeOfLastCalibration"),
        ("InstanceCreationDate", "InstanceCreationTime"),
    ]
    for date, time in expected:
        assert DATE_TIME_PAIRS[tag(date)] == tag(time)
    assert tag("AcquisitionDateTime") not in DATE_TIME_PAIRS
    assert len(DATE_TIME_PAIRS) > 40


def apply(ds: Dataset, scope: str = "deidentify/default") -> int:
    """De-identify *ds* with Modified Dates in *scope*; return the offset used."""
    record = Deidentifier(compile_profile([MODIFIED]), SECRET, scope).apply(ds)
    assert record.date_offset_seconds is not None
    return record.date_offset_seconds


def test_deidentifier_shifts_pairs_in_any_element_order_and_depth() -> None:
    """A time stored before its date, and pairs in nested items, move as one moment."""
    ds = make_dataset()
    del ds.StudyDate
    ds.StudyDate = "20240301"  # inserted after StudyTime: the walk meets the time first
    ds.StudyTime = "233000"
    item = Dataset()
    item.ContentTime = "000500.25"
    item.ContentDate = "20240302"
    outer = Dataset()
    outer.SourceImageSequence = [item]
    ds.ReferencedImageSequence = [outer]  # two levels down
    ds.AcquisitionTime = "1200"  # no AcquisitionDate: moves alone
    offset = apply(ds)
    study = moment(ds.StudyDate, ds.StudyTime)
    assert study - moment("20240301", "233000") == dt.timedelta(seconds=offset)
    nested = ds.ReferencedImageSequence[0].SourceImageSequence[0]
    interval = moment(nested.ContentDate, nested.ContentTime) - study
    assert interval == dt.timedelta(minutes=35, milliseconds=250)
    assert len(ds.AcquisitionTime) == 4
    assert ds.AcquisitionTime == shift_tm("1200", offset)


def test_unparsable_time_is_removed_and_the_date_still_moves() -> None:
    """A TM that is not a time is removed; its date moves by the day part."""
    ds = make_dataset()
    ds.StudyTime = "25:99"
    offset = apply(ds)
    assert "StudyTime" not in ds
    assert ds.StudyDate == shift_da("20240301", offset)


def test_offsets_of_two_scopes_differ_and_one_scope_repeats() -> None:
    """Two key scopes give two offsets for one patient; one scope gives the same bytes again."""
    first, again = make_dataset(), make_dataset()
    other = make_dataset()
    assert apply(first, "deidentify/a") == apply(again, "deidentify/a")
    assert apply(other, "deidentify/b") != apply(make_dataset(), "deidentify/a")
    assert first == again
    assert (first.StudyDate, first.StudyTime) != (other.StudyDate, other.StudyTime)
