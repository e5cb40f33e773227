"""Cheap construction and reading of pydicom datasets and raw elements.

A de-identified object is built from thousands of small pieces: item
datasets for every sequence item, and a few dozen replaced values. pydicom's
public constructors validate and convert on every call, which costs more than
the work itself for a small file. The helpers here build exactly what
pydicom's own reader builds (a :class:`~pydicom.dataset.Dataset` in the
state its ``__init__`` leaves it in, a :class:`RawDataElement` holding
encoded bytes), and read text values straight from raw bytes when the
character set is a single-byte or UTF-8 one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import overload

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as SequenceValue
from pydicom.tag import BaseTag
from pydicom.valuerep import BYTES_VR, EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32

__all__ = [
    "BINARY_VRS",
    "LONG_VR_BYTES",
    "NUMBER_SIZE",
    "SHORT_VR_BYTES",
    "codec_for",
    "dictionary_vr",
    "encode_text",
    "joined_text",
    "key",
    "new_dataset",
    "put_value",
    "python_encodings",
    "raw_element",
    "simple_codec",
    "text_values",
    "vr_of",
]

#: The VRs of binary values other than numbers (pydicom's ``BYTES_VR``).
BINARY_VRS = frozenset(map(str, BYTES_VR))
#: Bytes per value of the binary number VRs.
NUMBER_SIZE = {"FL": 4, "FD": 8, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8, "AT": 4}
#: The two VR bytes of an explicit VR header with a 4-byte length (PS3.5 7.1.2), and with a
#: 2-byte one: pydicom's tables in the form the parsers read from a header.
LONG_VR_BYTES = frozenset(str(vr).encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
SHORT_VR_BYTES = frozenset(str(vr).encode("ascii") for vr in EXPLICIT_VR_LENGTH_16)


class _Keys(dict[int, BaseTag]):
    """The one :class:`BaseTag` object per tag, made on first use."""

    def __missing__(self, tag: int) -> BaseTag:
        found = self[tag] = BaseTag(tag)
        return found


#: ``key(tag)``: the one :class:`BaseTag` object for *tag*.
#:
#: Datasets are dicts keyed by BaseTag, whose ``__eq__`` is Python code; a
#: lookup with the very object the dict holds compares by identity and skips
#: it. The reader and the helpers here use these shared keys. A dict lookup
#: (Python code only for a tag not seen before): the reader calls it for
#: every element.
key: Callable[[int], BaseTag] = _Keys().__getitem__


_SPECIFIC_CHARACTER_SET = key(0x00080005)
#: The attributes a fresh Dataset carries, and which of them hold a mutable value.
_TEMPLATE = Dataset().__dict__
_MUTABLE = tuple(k for k, v in _TEMPLATE.items() if isinstance(v, dict | list | set))
#: Python codecs that decode DICOM text one value at a time (no ISO 2022 escapes).
_SIMPLE_CODECS = {
    "iso8859": "latin_1",
    "latin_1": "latin_1",
    "ascii": "latin_1",
    "iso_ir_6": "latin_1",
    "utf_8": "utf_8",
    "UTF8": "utf_8",
}
_CODEC_CACHE: dict[object, str | None] = {}


def new_dataset(
    elements: dict[BaseTag, DataElement | RawDataElement],
    parent_encoding: str | list[str],
    implicit: bool | None,
    little: bool | None,
) -> Dataset:
    """A :class:`Dataset` holding *elements*, as ``Dataset(elements)`` would make it.

    The same attributes as a freshly constructed dataset (mutable ones fresh
    copies), plus the parent encoding and the encoding it was read in, set
    without going through pydicom's attribute machinery.
    """
    ds = Dataset.__new__(Dataset)
    state = _TEMPLATE.copy()
    for name in _MUTABLE:
        state[name] = state[name].copy()
    state["_dict"] = elements
    state["_parent_encoding"] = parent_encoding
    state["_read_implicit"] = implicit
    state["_read_little"] = little
    ds.__dict__.update(state)
    return ds


def encode_text(vr: str, values: Sequence[str], codec: str = "ascii") -> bytes:
    """The value bytes of a text element: values joined by backslash, padded to even length."""
    data = "\\".join(values).encode(codec)
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def raw_element(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> RawDataElement:
    """A :class:`RawDataElement` holding already encoded *value* bytes."""
    # tuple.__new__: what RawDataElement's own (Python) __new__ calls, for less.
    return tuple.__new__(
        RawDataElement, (key(tag), vr, len(value), value, 0, implicit, little, True, False)
    )


def simple_codec(ds: Dataset) -> str | None:
    """The Python codec of *ds*'s character set when one codec decodes it value by value.

    ``None`` for ISO 2022 code extensions and other character sets that need
    pydicom's decoder (see :func:`codec_for`).
    """
    elem = ds._dict.get(_SPECIFIC_CHARACTER_SET)
    if elem is None:
        encodings: object = ds._parent_encoding
    elif isinstance(elem, RawDataElement):
        raw = elem.value or b""
        encodings = raw.decode("ascii", "replace").strip("\x00 ")
    else:
        encodings = elem.value
    return codec_for(encodings)


def codec_for(encodings: object) -> str | None:
    """The Python codec that decodes text in *encodings* value by value; None when none does.

    *encodings* is a Specific Character Set value (text, or its values), or
    the Python codecs pydicom made of it (``Dataset._character_set``); empty
    or None is the default repertoire. None for ISO 2022 code extensions and
    other character sets that need pydicom's decoder.
    """
    key = tuple(encodings) if isinstance(encodings, list | tuple | MultiValue) else encodings
    if key not in _CODEC_CACHE:
        _CODEC_CACHE[key] = _codec_of(key)
    return _CODEC_CACHE[key]


def _codec_of(encodings: object) -> str | None:
    if encodings in ("", None):
        return _SIMPLE_CODECS[default_encoding]
    if isinstance(encodings, str) and encodings in _SIMPLE_CODECS:
        return _SIMPLE_CODECS[encodings]  # already a Python codec (a parent encoding)
    if isinstance(encodings, tuple) and len(encodings) == 1 and encodings[0] in _SIMPLE_CODECS:
        return _SIMPLE_CODECS[encodings[0]]  # pydicom's conversion of one term
    codecs = python_encodings(encodings)
    if codecs is not None and len(codecs) == 1 and codecs[0] in _SIMPLE_CODECS:
        return _SIMPLE_CODECS[codecs[0]]
    return None


def python_encodings(charset: object) -> list[str] | None:
    """The Python codecs of a Specific Character Set value (text, or its values); None if unknown.

    Text is split at backslashes; each term is stripped of spaces, as
    ``convert_encodings`` needs.
    """
    terms = (
        [v.strip() for v in charset.split("\\")]
        if isinstance(charset, str)
        else [str(v).strip() for v in charset]  # type: ignore[attr-defined]
    )
    try:
        return convert_encodings(terms)
    except LookupError:
        return None


def text_values(ds: Dataset, tag: int) -> list[str]:
    """The non-empty values of a text, date or UID element, stripped; [] when absent.

    A raw element is decoded from its bytes when the character set allows;
    anything else goes through pydicom's conversion.
    """
    tag_key = key(tag)
    elem = ds._dict.get(tag_key)
    if elem is None:
        return []
    if isinstance(elem, RawDataElement) and elem.value is not None:
        codec = simple_codec(ds)
        if codec is not None:
            text = elem.value.decode(codec, "replace")
            return [v for v in (part.strip("\x00 ") for part in text.split("\\")) if v]
    value = ds[tag_key].value
    if value is None:
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [text for text in (str(v).strip() for v in items if v is not None) if text]


def joined_text(ds: Dataset, tag: int | str) -> str:
    """The values of a text element (a tag or a keyword) joined by backslash; '' when absent."""
    if isinstance(tag, str):
        found = tag_for_keyword(tag)
        if found is None:
            return ""
        tag = found
    return "\\".join(text_values(ds, tag))


_DICTIONARY_VRS: dict[int, str | None] = {}
_MAX_DICTIONARY_VRS = 1 << 16


@overload
def dictionary_vr(tag: int) -> str: ...
@overload
def dictionary_vr(tag: int, unknown: str) -> str: ...
@overload
def dictionary_vr(tag: int, unknown: None) -> str | None: ...
def dictionary_vr(tag: int, unknown: str | None = "UN") -> str | None:
    """The dictionary VR of *tag* (the first of ``US or SS``); *unknown* when there is none."""
    try:
        vr = _DICTIONARY_VRS[tag]
    except KeyError:
        if len(_DICTIONARY_VRS) >= _MAX_DICTIONARY_VRS:
            _DICTIONARY_VRS.clear()  # private tags are unbounded: keep the memory so
        try:
            vr = str(dictionary_VR(tag)).split(" or ")[0]
        except KeyError:
            vr = None
        _DICTIONARY_VRS[tag] = vr
    return unknown if vr is None else vr


def vr_of(elem: DataElement | RawDataElement) -> str:
    """The VR to act on: the element's, or the dictionary's when the element does not say.

    A standard attribute received as UN (implicit VR data relayed in an
    explicit transfer syntax, PS3.5 6.2.2) is acted on with its dictionary VR:
    a UID stays a UID, a name a name. Private and unknown attributes stay UN.
    """
    vr = elem.VR
    if vr is None or vr == "UN" or " or " in vr:
        return dictionary_vr(int(elem.tag))
    return str(vr)


def put_value(ds: Dataset, tag: int, vr: str, value: list[str] | bytes) -> None:
    """Set an element from text values or encoded bytes.

    In a dataset read from bytes, ASCII text and bytes become a raw element
    in the dataset's own encoding, written out as is (ASCII and zero bytes are
    the same in every transfer syntax and character set). Other text becomes
    a :class:`DataElement` that the writer encodes in the object's character
    set.
    """
    implicit, little = ds._read_implicit, ds._read_little
    ascii_only = isinstance(value, bytes) or all(v.isascii() for v in value)
    if implicit is not None and little is not None and vr != "SQ" and ascii_only:
        data = value if isinstance(value, bytes) else encode_text(vr, value)
        ds._dict[key(tag)] = raw_element(tag, vr, data, implicit, little)
    elif vr == "SQ":
        ds[key(tag)] = DataElement(key(tag), vr, SequenceValue())
    elif isinstance(value, bytes):
        ds[key(tag)] = DataElement(key(tag), vr, _from_bytes(vr, value))
    else:
        text: object = value if len(value) > 1 else (value[0] if value else "")
        ds[key(tag)] = DataElement(key(tag), vr, text)


def _from_bytes(vr: str, data: bytes) -> object:
    """The value of zero bytes *data* for an element built in memory."""
    if not data:
        return b"" if vr in BINARY_VRS else (None if vr in NUMBER_SIZE else "")
    if vr in NUMBER_SIZE:
        count = len(data) // NUMBER_SIZE[vr]
        zero = 0.0 if vr in ("FL", "FD") else 0
        return [zero] * count if count > 1 else zero
    return data
