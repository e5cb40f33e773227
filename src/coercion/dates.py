"""Date shifting for the Retain Longitudinal Temporal Information Modified Dates Option.

Every patient gets one offset, a whole number of days derived with the secret
from the Patient ID (and Issuer of Patient ID). Shifting by whole days moves
DA values and the date part of DT values, and leaves the time of day alone,
so TM values stay as they are and every interval between two events of the
patient is preserved.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac

__all__ = ["MAX_OFFSET_DAYS", "patient_offset_days", "shift_da", "shift_dt"]

#: Offsets are drawn from -MAX_OFFSET_DAYS .. -1: dates move into the past.
MAX_OFFSET_DAYS = 3650


def patient_offset_days(secret: bytes, patient_id: str, issuer: str = "") -> int:
    """Return the patient's date offset in days, always negative."""
    message = f"{patient_id.strip()}\\{issuer.strip()}".encode("utf-8", "replace")
    key = hmac.new(secret, b"coercion/date-offset", hashlib.sha256).digest()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return -(1 + int.from_bytes(digest[:8], "big") % MAX_OFFSET_DAYS)


def _shift_date(text: str, days: int) -> str:
    """Shift a DICOM date of 4, 6 or 8 digits; keep its precision."""
    if not text.isdigit() or len(text) not in (4, 6, 8):
        raise ValueError("not a DICOM date")
    padded = text + "0101"[len(text) - 4 :] if len(text) < 8 else text
    day = _dt.date(int(padded[:4]), int(padded[4:6]), int(padded[6:8]))
    try:
        moved = day + _dt.timedelta(days=days)
    except OverflowError as exc:
        raise ValueError("date out of range") from exc
    return moved.strftime("%Y%m%d")[: len(text)].zfill(len(text))


def shift_da(value: str, days: int) -> str:
    """Shift one DA value, which may be a query range ``A-B``, ``-B`` or ``A-``."""
    text = value.strip()
    if not text:
        return value
    if "-" in text:
        return "-".join(_shift_date(part, days) if part else "" for part in text.split("-", 1))
    return _shift_date(text, days)


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of one DT value (or ``A-B`` range); keep time and offset."""
    text = value.strip()
    if not text:
        return value
    if "-" in text[4:] and not _has_utc_offset(text):
        return "-".join(shift_dt(part, days) if part else "" for part in text.split("-", 1))
    digits = min(8, len(text))
    while digits > 0 and not text[:digits].isdigit():
        digits -= 1
    if digits not in (4, 6, 8):
        raise ValueError("not a DICOM date time")
    return _shift_date(text[:digits], days) + text[digits:]


def _has_utc_offset(text: str) -> bool:
    """True when *text* is one DT whose ``-`` starts a UTC offset, not a range."""
    head, sep, tail = text.rpartition("-")
    return bool(sep) and len(tail) == 4 and tail.isdigit() and len(head) >= 8 and head[:8].isdigit()
