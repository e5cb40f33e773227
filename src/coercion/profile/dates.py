"""Date and time shifting for the Retain Longitudinal Temporal Information Modified Dates Option.

PS3.15 E.3.6: "any dates and times ... shall be modified". Every patient gets
one offset, a whole number of seconds: a day part and a part below a day, in
the same direction, both derived with a key (:func:`offset_seconds`). A value
moves by the offset truncated toward zero to the value's own precision (a
day for a date, an hour for ``HH``, a minute for ``HHMM``, a second for
``HHMMSS`` and finer), and keeps that precision:

* a DA with its TM partner (:data:`DATE_TIME_PAIRS`, ``StudyDate`` with
  ``StudyTime`` ...) moves as one date and time, so an interval between two
  events is the same before and after, also across midnight;
* a DA alone moves by the day part, a TM (with or without its date) by the
  offset modulo a day, a DT whole;
* ranges (``A-B``, ``-B``, ``A-``) move part by part.

Truncating toward zero makes the shift exactly reversible: shifting by
``-offset`` gives back every value of day precision or finer.
"""

from __future__ import annotations

import datetime as _dt
import re

from pydicom._dicom_dict import DicomDictionary

__all__ = [
    "DATE_TIME_PAIRS",
    "MAX_OFFSET_DAYS",
    "TIME_DATE_PAIRS",
    "day_offset",
    "offset_seconds",
    "shift_da",
    "shift_dt",
    "shift_tm",
    "shift_values",
]

#: Deidentify offsets are drawn from -MAX_OFFSET_DAYS .. -1 days: dates move into the past.
MAX_OFFSET_DAYS = 3650
_DAY = 86400

_TIME = re.compile(r"(\d\d)(?:(\d\d)(?:(\d\d)(\.\d{1,6})?)?)?")
#: The ACR-NEMA forms ``HH:MM[:SS[.F]]`` and ``YYYY.MM.DD``: read, written in the DICOM form.
_OLD_TIME = re.compile(r"\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?")
_OLD_DATE = re.compile(r"\d{4}\.\d\d\.\d\d")
_DATE_TIME = re.compile(
    r"(\d{4})(?:(\d\d)(?:(\d\d)(?:(\d\d)(?:(\d\d)(?:(\d\d)(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"
)


def _pairs() -> dict[int, int]:
    """DA tag -> TM tag for every keyword pair of the dictionary spelled Date/Time."""
    times = {entry[4]: tag for tag, entry in DicomDictionary.items() if entry[0] == "TM"}
    pairs: dict[int, int] = {}
    for tag, entry in DicomDictionary.items():
        keyword = entry[4]
        if entry[0] != "DA" or not keyword:
            continue
        for match in re.finditer("Date", keyword):
            partner = times.get(keyword[: match.start()] + "Time" + keyword[match.end() :])
            if partner is not None:
                pairs[tag] = partner
                break
    return pairs


#: The TM partner of a DA (``StudyDate`` -> ``StudyTime``), from pydicom's dictionary.
DATE_TIME_PAIRS: dict[int, int] = _pairs()
#: The DA partner of a TM.
TIME_DATE_PAIRS: dict[int, int] = {time: date for date, time in DATE_TIME_PAIRS.items()}


def offset_seconds(digest: bytes, min_days: int, max_days: int) -> int:
    """An offset in seconds from 16 key-derived bytes: days in *min_days..max_days*.

    The first 8 bytes give the day part, the next 8 a part below a day
    (0..86399 seconds) that goes the same direction as the days, so that the
    offset's day part (:func:`day_offset`) is the day drawn. A day part of 0
    gives 0: a range of ``0..0`` shifts nothing.
    """
    if min_days > max_days or len(digest) < 16:
        raise ValueError("empty day range or short digest")
    days = min_days + int.from_bytes(digest[:8], "big") % (max_days - min_days + 1)
    extra = int.from_bytes(digest[8:16], "big") % _DAY
    if days == 0:
        return 0
    return days * _DAY - extra if days < 0 else days * _DAY + extra


def _truncate(seconds: int, precision: int) -> int:
    """*seconds* truncated toward zero to a multiple of *precision*."""
    magnitude = abs(seconds) // precision * precision
    return magnitude if seconds >= 0 else -magnitude


def day_offset(seconds: int) -> int:
    """The day part of an offset: what a date alone moves by."""
    return _truncate(seconds, _DAY) // _DAY


# -- TM ----------------------------------------------------------------------------------


def _parse_time(text: str) -> tuple[int, int, str]:
    """(seconds of the day, precision in seconds, fraction text) of one TM value."""
    if _OLD_TIME.fullmatch(text):
        text = text.replace(":", "")
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError("not a DICOM time")
    hours, minutes, secs, fraction = match.groups()
    h, m, s = int(hours), int(minutes or 0), int(secs or 0)
    if h > 23 or m > 59 or s > 60:  # 60: a leap second
        raise ValueError("not a DICOM time")
    precision = 1 if secs else 60 if minutes else 3600
    return h * 3600 + m * 60 + s, precision, fraction or ""


def _format_time(total: int, precision: int, fraction: str) -> str:
    hours, rest = divmod(total % _DAY, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}"
    if precision <= 60:
        text += f"{minutes:02d}"
    if precision == 1:
        text += f"{secs:02d}{fraction}"
    return text


def _shift_time(text: str, seconds: int) -> str:
    total, precision, fraction = _parse_time(text)
    return _format_time(total + _truncate(seconds, precision), precision, fraction)


def shift_tm(value: str, seconds: int) -> str:
    """Shift one TM value (or ``A-B`` range) by *seconds* modulo a day; keep its precision."""
    text = value.strip()
    if not text:
        return value
    return "-".join(_shift_time(part, seconds) if part else "" for part in text.split("-", 1))


# -- DA ----------------------------------------------------------------------------------


def _date(text: str) -> _dt.datetime:
    return _dt.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _format_date(moment: _dt.datetime) -> str:
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"


def _move(start: _dt.datetime, seconds: int) -> _dt.datetime:
    try:
        return start + _dt.timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError("date out of range") from exc


def _shift_short_date(text: str, days: int) -> str:
    """Shift a date of 4 or 6 digits (year, year and month) by days; keep its precision."""
    padded = text + "0101"[len(text) - 4 :]
    return _format_date(_move(_date(padded), days * _DAY))[: len(text)]


def _shift_date(text: str, seconds: int, time: str) -> str:
    if _OLD_DATE.fullmatch(text):
        text = text.replace(".", "")
    if not text.isdigit() or len(text) not in (4, 6, 8):
        raise ValueError("not a DICOM date")
    if len(text) < 8:
        return _shift_short_date(text, day_offset(seconds))
    try:
        of_day, precision, _ = _parse_time(time) if time else (0, _DAY, "")
    except ValueError:  # a partner that is no time is removed: the date moves alone
        of_day, precision = 0, _DAY
    return _format_date(_move(_date(text), of_day + _truncate(seconds, precision)))


def _parts(text: str) -> list[str]:
    return text.split("-", 1) if "-" in text else [text]


def shift_da(value: str, seconds: int, time: str = "") -> str:
    """Shift one DA value (or ``A-B``, ``-B``, ``A-`` range) by *seconds*.

    *time* is the original value of the date's TM partner at the same
    position (a range for a range), when there is one: the date then moves
    as the date of the date and time together. Alone it moves by the day part.
    """
    text = value.strip()
    if not text:
        return value
    dates = _parts(text)
    times = _parts(time.strip())
    if len(times) != len(dates):
        times = [""] * len(dates)
    return "-".join(
        _shift_date(d, seconds, t) if d else "" for d, t in zip(dates, times, strict=True)
    )


# -- DT ----------------------------------------------------------------------------------


def _shift_one_dt(text: str, seconds: int) -> str:
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError("not a DICOM date time")
    year, month, day, hours, minutes, secs, fraction, zone = match.groups()
    if day is None:  # year or year and month: the days move, the precision stays
        return _shift_short_date(year + (month or ""), day_offset(seconds)) + (zone or "")
    h, m, s = int(hours or 0), int(minutes or 0), int(secs or 0)
    if h > 23 or m > 59 or s > 60:
        raise ValueError("not a DICOM date time")
    precision = 1 if secs else 60 if minutes else 3600 if hours else _DAY
    moved = _move(_date(year + month + day), h * 3600 + m * 60 + s + _truncate(seconds, precision))
    text = _format_date(moved)
    if precision < _DAY:
        text += _format_time(moved.hour * 3600 + moved.minute * 60 + moved.second, precision, "")
    if precision == 1:
        text += fraction or ""
    return text + (zone or "")


def _split_range(text: str) -> tuple[str, str] | None:
    """The two sides of a DT range ``A-B`` (either may be empty), or None for one DT."""
    if _DATE_TIME.fullmatch(text):
        return None
    for index, char in enumerate(text):
        if char != "-":
            continue
        left, right = text[:index], text[index + 1 :]
        if (left or right) and all(not p or _DATE_TIME.fullmatch(p) for p in (left, right)):
            return left, right
    raise ValueError("not a DICOM date time")


def shift_dt(value: str, seconds: int) -> str:
    """Shift one DT value (or range) whole by *seconds*; keep its precision and UTC offset."""
    text = value.strip()
    if not text:
        return value
    sides = _split_range(text)
    if sides is None:
        return _shift_one_dt(text, seconds)
    return "-".join(_shift_one_dt(side, seconds) if side else "" for side in sides)


def shift_values(
    vr: str, values: list[str], seconds: int, times: list[str] | None = None
) -> list[str]:
    """Shift the values of one DA, TM or DT element; ValueError when one is not valid.

    For a DA, *times* are the original values of its TM partner, paired by position.
    """
    if vr == "DA":
        partner = times or []
        return [
            shift_da(v, seconds, partner[i] if i < len(partner) else "")
            for i, v in enumerate(values)
        ]
    shift = shift_tm if vr == "TM" else shift_dt
    return [shift(v, seconds) for v in values]
