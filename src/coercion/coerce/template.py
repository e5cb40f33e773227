"""Attribute templates as dcm4che's ``AttributesFormat`` reads them: ``PREFIX.{PatientID,hash}``.

A template is text with placeholders ``{PATH[,TYPE[,ARGS]]}``; PATH is an
attribute path (:mod:`.paths`), optionally ending in ``[i]`` for the value at
0-based index *i*, or ``now`` (the current date and time, for ``date`` and
``time``) or ``rnd`` (random, alone or with ``uuid``/``uid``). The types:

========================  ==================================================
(none)                    the value ('' when absent)
``upper``                 the value in capitals
``hash``                  Java's ``String.hashCode`` of the value, 8 hex digits
``md5``                   the MD5 of the value (UTF-8), 26 characters base 32
``urlencoded``            the value encoded as a form parameter
``slice,B[,E]``           characters B to E (negative: from the end)
``offset,N``              the integer value plus N
``number[,FORMAT]``       the numeric value in a DecimalFormat (``#``, ``0``,
                          ``,`` and ``.``; ``integer``); default ``#,##0.###``
``date[PERIOD],PATTERN``  a DA/DT value (or ``now``) shifted by an ISO 8601
                          period (``-P1D``), written with a date PATTERN
``time[DURATION],PATTERN``  a TM/DT value (or ``now``) shifted by a duration
                          (``PT1H``), written with PATTERN
``uuid``, ``uid``         a random UUID or a 2.25 UID (with ``rnd``)
========================  ==================================================

PATTERN letters are SimpleDateFormat's ``y M d H m s S`` (quoted text kept).
As in dcm4che, a value missing for ``hash``, ``md5``, ``urlencoded``,
``date`` or ``time``, or a missing sequence item, is written ``null``, so that
converted rules give the same values as dcm4chee-arc gave. Literal text may
quote with ``'`` as Java's MessageFormat does (``''`` is one quote).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from coercion.coerce.paths import TagPath, parse_path

__all__ = ["Template", "parse_template"]

_TYPES = (
    "upper",
    "hash",
    "md5",
    "urlencoded",
    "slice",
    "offset",
    "number",
    "date",
    "time",
    "uuid",
    "uid",
)
_BASE32 = "0123456789abcdefghijklmnopqrstuv"
_DATE_LETTERS = {"y", "M", "d", "H", "m", "s", "S"}
_PERIOD = re.compile(r"^([+-]?)P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")
_DURATION = re.compile(r"^([+-]?)PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")
_NUMBER = re.compile(r"^[#,]*0*(?:\.0*#*)?$")

Render = Callable[[Dataset], str]


@dataclass(frozen=True)
class Template:
    """A parsed template; :meth:`render` fills it from a dataset."""

    text: str
    parts: tuple[str | Render, ...]

    def render(self, ds: Dataset) -> str:
        """The template filled from *ds*."""
        return "".join(p if isinstance(p, str) else p(ds) for p in self.parts)


def parse_template(text: str) -> Template:
    """Parse *text*; ValueError naming the placeholder and what to fix."""
    parts: list[str | Render] = []
    for literal, placeholder in _tokens(text):
        if literal:
            parts.append(_unquote(literal))
        if placeholder is not None:
            parts.append(_placeholder(placeholder))
    return Template(text, tuple(parts))


def _tokens(text: str) -> list[tuple[str, str | None]]:
    """(literal, placeholder) pairs; braces nest inside a placeholder as in dcm4che."""
    tokens: list[tuple[str, str | None]] = []
    literal: list[str] = []
    inner: list[str] = []
    level = 0
    for char in text:
        if char == "{":
            level += 1
            if level > 1:
                inner.append(char)
        elif char == "}":
            level -= 1
            if level < 0:
                raise ValueError("a '}' without its '{'")
            if level == 0:
                tokens.append(("".join(literal), "".join(inner)))
                literal, inner = [], []
            else:
                inner.append(char)
        else:
            (inner if level else literal).append(char)
    if level:
        raise ValueError("a '{' without its '}'")
    if literal:
        tokens.append(("".join(literal), None))
    return tokens


def _unquote(text: str) -> str:
    """MessageFormat's quoting: ``''`` is a quote, ``'...'`` is taken as is."""
    out: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'":
            if index + 1 < len(text) and text[index + 1] == "'":
                out.append("'")
                index += 2
                continue
            quoted = not quoted
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _placeholder(spec: str) -> Render:
    name, _, rest = spec.partition(",")
    kind, _, args = rest.partition(",")
    name, kind = name.strip(), kind.strip()
    where = f"placeholder {{{spec}}}"
    if name == "rnd":
        if kind in ("", "uuid", "uid"):
            return _random(kind)
        raise ValueError(f"{where}: rnd takes no type or uuid or uid")
    path: TagPath | None = None
    index = 0
    if name != "now":
        found = re.match(r"^(.*)\[(\d+)\]$", name)
        if found:
            name, index = found[1], int(found[2])
        try:
            path = parse_path(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    base = kind.rstrip("+-PTYMWDHS0123456789") if kind[:4] in ("date", "time") else kind
    if base == "" and path is not None:
        return _plain(path, index, upper=False)
    if path is None and base not in ("date", "time"):
        raise ValueError(f"{where}: now is for date and time")
    if base == "upper":
        return _plain(path, index, upper=True)  # type: ignore[arg-type]
    if base in ("hash", "md5", "urlencoded"):
        return _digest(path, index, base)  # type: ignore[arg-type]
    if base == "slice":
        return _slice(path, index, args, where)  # type: ignore[arg-type]
    if base == "offset":
        return _offset(path, index, args, where)  # type: ignore[arg-type]
    if base == "number":
        return _number(path, index, args, where)  # type: ignore[arg-type]
    if base in ("date", "time"):
        return _datetime(path, index, kind, args, where)
    if base in ("uuid", "uid"):
        raise ValueError(f"{where}: {base} goes with rnd: {{rnd,{base}}}")
    raise ValueError(f"{where}: unknown type {kind!r}; known: {', '.join(_TYPES)}")


def _value(ds: Dataset, path: TagPath, index: int) -> str | None:
    """The value at *index* as text; None when absent or empty (as dcm4che's getString)."""
    item = path.item(ds)
    if item is None:
        return None
    elem = item.get(path.tag)
    if elem is None or elem.value is None or isinstance(elem.value, bytes):
        return None
    value = elem.value
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if index >= len(values) or values[index] is None:
        return None
    text = str(values[index])
    return text or None


def _missing(ds: Dataset, path: TagPath) -> bool:
    """Whether a sequence item on the way is missing (dcm4che writes ``null`` then)."""
    return bool(path.items) and path.item(ds) is None


def _plain(path: TagPath, index: int, *, upper: bool) -> Render:
    def render(ds: Dataset) -> str:
        if _missing(ds, path):
            return "null"
        value = _value(ds, path, index) or ""
        return value.upper() if upper else value

    return render


def java_hash(text: str) -> str:
    """Java's ``String.hashCode`` of *text* (over UTF-16 code units) as 8 hex digits."""
    value = 0
    data = text.encode("utf-16-be")
    for position in range(0, len(data), 2):
        value = (31 * value + (data[position] << 8 | data[position + 1])) & 0xFFFFFFFF
    return f"{value:08X}"


def _md5(text: str) -> str:
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()
    # dcm4che packs both halves into longs shifted left by 8 after each byte.
    first = second = 0
    for byte in digest[:8]:
        first = ((first | byte) << 8) & 0xFFFFFFFFFFFFFFFF
    for byte in digest[8:]:
        second = ((second | byte) << 8) & 0xFFFFFFFFFFFFFFFF
    chars = []
    for _ in range(12):
        chars.append(_BASE32[first & 0x1F])
        first >>= 5
    first |= (second & 1) << 4
    chars.append(_BASE32[first & 0x1F])
    second >>= 1
    for _ in range(13):
        chars.append(_BASE32[second & 0x1F])
        second >>= 5
    return "".join(chars)


def _digest(path: TagPath, index: int, kind: str) -> Render:
    def render(ds: Dataset) -> str:
        value = None if _missing(ds, path) else _value(ds, path, index)
        if value is None:
            return "null"
        if kind == "hash":
            return java_hash(value)
        if kind == "md5":
            return _md5(value)
        return urllib.parse.quote_plus(value, safe="*").replace("~", "%7E")

    return render


def _slice(path: TagPath, index: int, args: str, where: str) -> Render:
    try:
        bounds = [int(v) for v in args.split(",")]
    except ValueError:
        bounds = []
    if len(bounds) not in (1, 2):
        raise ValueError(f"{where}: slice takes BEGIN or BEGIN,END (integers), e.g. slice,0,4")
    begin = bounds[0]
    end = bounds[1] if len(bounds) == 2 else 0

    def render(ds: Dataset) -> str:
        value = None if _missing(ds, path) else _value(ds, path, index)
        if value is None:
            return ""
        start = max(0, len(value) + begin) if begin < 0 else begin
        if end == 0:
            return value[start:]
        stop = len(value) + end if end < 0 else min(len(value), end)
        return value[start:stop] if start <= stop else ""

    return render


def _offset(path: TagPath, index: int, args: str, where: str) -> Render:
    try:
        delta = int(args)
    except ValueError:
        raise ValueError(f"{where}: offset takes an integer, e.g. offset,1") from None

    def render(ds: Dataset) -> str:
        value = None if _missing(ds, path) else _value(ds, path, index)
        try:
            number = int(float(value)) if value is not None else 0
        except ValueError:
            number = 0
        return str(number + delta)

    return render


def _number(path: TagPath, index: int, pattern: str, where: str) -> Render:
    pattern = pattern.strip() or "#,##0.###"
    if pattern == "integer":
        pattern = "#,##0"
    if not _NUMBER.match(pattern) or "," in pattern.partition(".")[2]:
        raise ValueError(
            f"{where}: number format {pattern!r} not supported; use integer or a pattern of "
            "# 0 , . such as 0000 or #,##0.00"
        )
    whole, _, fraction = pattern.partition(".")
    min_int = whole.count("0")
    group = len(whole) - whole.rfind(",") - 1 if "," in whole else 0
    min_frac, max_frac = fraction.count("0"), len(fraction)

    def render(ds: Dataset) -> str:
        value = None if _missing(ds, path) else _value(ds, path, index)
        try:
            number = Decimal(value.strip()) if value is not None else Decimal(0)
        except InvalidOperation:
            number = Decimal(0)
        return _decimal_format(number, min_int, group, min_frac, max_frac)

    return render


def _decimal_format(number: Decimal, min_int: int, group: int, min_frac: int, max_frac: int) -> str:
    rounded = number.quantize(Decimal(1).scaleb(-max_frac), rounding=ROUND_HALF_EVEN)
    sign = "-" if rounded < 0 else ""
    digits = f"{abs(rounded):f}"
    whole, _, fraction = digits.partition(".")
    fraction = fraction.rstrip("0")
    fraction += "0" * (min_frac - len(fraction))
    whole = whole.lstrip("0").rjust(min_int, "0")
    if group:
        chunks: list[str] = []
        while len(whole) > group:
            chunks.insert(0, whole[-group:])
            whole = whole[:-group]
        whole = ",".join([whole, *chunks]) if whole else ",".join(chunks)
    return sign + whole + ("." + fraction if fraction else "")


def _shift(kind: str, where: str) -> Callable[[dt.datetime], dt.datetime]:
    text = kind[4:]
    if not text:
        return lambda value: value
    if kind.startswith("date"):
        found = _PERIOD.match(text)
        if found is None or not any(found.groups()[1:]):
            raise ValueError(f"{where}: {text!r} is not an ISO 8601 period such as -P1D or P1Y")
        sign = -1 if found[1] == "-" else 1
        years, months, weeks, days = (int(g or 0) * sign for g in found.groups()[1:])

        def by_period(value: dt.datetime) -> dt.datetime:
            month = value.month - 1 + months
            year = value.year + years + month // 12
            month = month % 12 + 1
            day = min(value.day, _month_days(year, month))
            return value.replace(year=year, month=month, day=day) + dt.timedelta(
                days=days + 7 * weeks
            )

        return by_period
    found = _DURATION.match(text)
    if found is None or not any(found.groups()[1:]):
        raise ValueError(f"{where}: {text!r} is not an ISO 8601 duration such as PT1H or -PT30M")
    sign = -1 if found[1] == "-" else 1
    hours, minutes, seconds = (int(g or 0) * sign for g in found.groups()[1:])
    delta = dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return lambda value: value + delta


def _month_days(year: int, month: int) -> int:
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return (following - dt.timedelta(days=1)).day


def _date_pattern(pattern: str, where: str) -> Callable[[dt.datetime], str]:
    """A SimpleDateFormat pattern (letters y M d H m s S, quoted text) as a formatter."""
    pieces: list[tuple[str, int] | str] = []
    for found in re.finditer(r"'([^']*)'|([A-Za-z])\2*|[^A-Za-z']+", pattern):
        if found[1] is not None:
            pieces.append(found[1] or "'")
        elif found[2] is not None:
            if found[2] not in _DATE_LETTERS:
                raise ValueError(
                    f"{where}: date letter {found[2]!r} not supported; use y M d H m s S "
                    "(e.g. yyyyMMdd or HHmmss)"
                )
            pieces.append((found[2], len(found[0])))
        else:
            pieces.append(found[0])

    def render(value: dt.datetime) -> str:
        out = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            letter, width = piece
            if letter == "y":
                out.append(f"{value.year % 100:02d}" if width == 2 else f"{value.year:0{width}d}")
            elif letter == "S":
                out.append(f"{value.microsecond // 1000:0{width}d}")
            else:
                number = {"M": value.month, "d": value.day, "H": value.hour, "m": value.minute}
                out.append(f"{number.get(letter, value.second):0{width}d}")
        return "".join(out)

    return render


def _parse_dicom_datetime(text: str, vr: str) -> dt.datetime | None:
    """A DA, TM or DT value as a datetime (a TM on 1970-01-01); None when it does not parse."""
    text = text.strip()
    if vr == "TM":
        text = "19700101" + text
    found = re.match(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction = found.groups()
    try:
        return dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None


def _vr_at(ds: Dataset, path: TagPath) -> str:
    item = path.item(ds)
    elem = item.get(path.tag) if item is not None else None
    return str(elem.VR) if elem is not None else ""


def _datetime(path: TagPath | None, index: int, kind: str, pattern: str, where: str) -> Render:
    shift = _shift(kind, where)
    if not pattern.strip() or pattern.strip() in ("short", "medium", "long", "full"):
        raise ValueError(
            f"{where}: give a pattern, e.g. {kind},yyyyMMdd (locale styles are not supported)"
        )
    formatter = _date_pattern(pattern, where)

    def render(ds: Dataset) -> str:
        if path is None:
            value: dt.datetime | None = dt.datetime.now()
        else:
            text = None if _missing(ds, path) else _value(ds, path, index)
            value = None if text is None else _parse_dicom_datetime(text, _vr_at(ds, path))
        return "null" if value is None else formatter(shift(value))

    return render


def _random(kind: str) -> Render:
    if kind == "uuid":
        return lambda _ds: str(uuid.uuid4())
    if kind == "uid":
        return lambda _ds: f"2.25.{uuid.uuid4().int}"
    return lambda _ds: f"{random.getrandbits(32):08X}"
