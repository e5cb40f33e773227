"""DICOM Part 10 files: find them by content, read them lazily, write them fast and atomically.

Reading defers large values (pixel data): they stay in the source file. Writing
encodes only the elements that changed; every other element is copied as the
raw bytes it was read as, and deferred values are copied file to file by the
kernel (``copy_file_range``), so pixel data is never decoded nor even read
into Python. The output keeps the source's transfer syntax.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, IS, STR_VR, DSfloat, PersonName

from coercion.dicom.config import silence_pydicom_validation
from coercion.dicom.elements import codec_for, joined_text
from coercion.dicom.elements import key as tag_key
from coercion.dicom.outputs import copy_range, write_all
from coercion.dicom.reader import parse_bytes, parse_file
from coercion.dicom.tags import ITEM, ITEM_END, SEQUENCE_END, format_tag
from coercion.errors import InputError, OutputError, map_errors

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "EncodedFile",
    "encode_file",
    "file_meta_bytes",
    "quiet_pydicom",
    "read_bytes",
    "read_file",
    "sniff",
]

#: The Implementation Class UID written into every file meta (a fixed 2.25 UID).
IMPLEMENTATION_CLASS_UID = "2.25.205347591239842391748036451722376392417"
IMPLEMENTATION_VERSION_NAME = "COERCION_010"
#: Values longer than this are left in the source file until written.
DEFER_SIZE = 16 * 1024

_BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_UNDEFINED = 0xFFFFFFFF
_PREAMBLE = b"\x00" * 128 + b"DICM"
_VR_RE = re.compile(rb"[A-Z]{2}")
_META_SHORT = struct.Struct("<HH2sH")
_META_HEADER = struct.Struct("<HH2s2xL")


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings, whose text may quote element values."""
    silence_pydicom_validation()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def sniff(path: Path) -> str | None:
    """Tell a DICOM file by its content: ``"part10"``, ``"dataset"`` (no preamble) or None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    if len(head) == 132 and head[128:] == b"DICM":
        return "part10"
    if len(head) >= 8:
        for end in "<>":
            group, element = struct.unpack_from(end + "HH", head)
            if (
                group in (0x0002, 0x0008)
                and element < 0x0100
                and (
                    _VR_RE.fullmatch(head[4:6])
                    or struct.unpack_from(end + "L", head, 4)[0] < 0x10000
                )
            ):
                return "dataset"
    return None


def read_file(
    path: Path, *, defer: bool = True, name: str = "", sniffed: bool = False
) -> FileDataset:
    """Read a DICOM file, deferring large values; raise :class:`InputError` when malformed.

    Errors name *name* when given (a temporary file's label), else *path*.
    *sniffed*: the caller has told the file DICOM by its content already
    (:func:`sniff`), so it is not opened once more to look.
    """
    where = name or str(path)
    if not sniffed and sniff(path) is None:
        raise InputError(f"{where}: not a DICOM file")
    silence_pydicom_validation()
    with map_errors({OSError: InputError}, f"{where}: cannot read", chain=True):
        ds = parse_file(path, DEFER_SIZE if defer else 0, name)
    if len(ds) == 0:
        raise InputError(f"{where}: malformed DICOM: no data set")
    return ds


def read_bytes(data: bytes, name: str, stop: int = 0xFFFFFFFF) -> FileDataset:
    """Read a Part 10 stream held in memory (preamble, file meta, data set).

    With *stop* only the top-level elements up to that tag are read.
    """
    silence_pydicom_validation()
    ds = parse_bytes(data, name, stop)
    if len(ds) == 0:
        raise InputError(f"{name}: malformed DICOM: no data set")
    return ds


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(str(meta.TransferSyntaxUID))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


@dataclass(frozen=True)
class _Segment:
    """Bytes to copy from the source file: (offset, length)."""

    offset: int
    length: int


@dataclass(frozen=True)
class _Bulk:
    """Pixel data held in memory: written, but not scanned by verification."""

    data: bytes


class EncodedFile:
    """A Part 10 file ready to write: header bytes plus bulk data parts."""

    def __init__(
        self, parts: list[bytes | _Segment | _Bulk], source: Path | None, plain: bytes | None = None
    ) -> None:
        self.parts = parts
        self.source = source
        self._plain = plain

    def scannable(self) -> bytes:
        """Every byte of the file except pixel data, before any deflate (for verification)."""
        if self._plain is not None:
            return self._plain
        return b"".join(part for part in self.parts if isinstance(part, bytes))

    def write_to(self, fd: int) -> None:
        """Write the whole file to the open descriptor *fd*."""
        source_fd = -1
        pending: list[bytes] = []  # in-memory parts, written in one call
        try:
            for part in self.parts:
                if isinstance(part, _Segment):
                    if source_fd < 0:
                        if self.source is None:
                            raise OutputError("deferred value without a source file")
                        source_fd = os.open(self.source, os.O_RDONLY)
                    write_all(fd, b"".join(pending))
                    pending.clear()
                    _copy_range(source_fd, fd, part, self.source)
                else:
                    pending.append(part.data if isinstance(part, _Bulk) else part)
            write_all(fd, b"".join(pending))
        finally:
            if source_fd >= 0:
                os.close(source_fd)


def _copy_range(src: int, dst: int, segment: _Segment, source: Path | None) -> None:
    if copy_range(src, dst, segment.offset, segment.length) < segment.length:
        raise InputError(f"{source}: malformed DICOM: file is truncated")


_NUMBER_FORMATS = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "FL": "f",
    "FD": "d",
    "UV": "Q",
    "SV": "q",
}
_TEXT_TYPES = (str, PersonName, DSfloat, IS)


def _encode_value(elem: DataElement, codec: str | None, little: bool) -> bytes | None:
    """Encode common values directly; None means: let pydicom encode it."""
    vr, value = elem.VR, elem.value
    if value is None or value in ("", b""):
        return b""
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    if vr in STR_VR and codec is not None and all(isinstance(v, _TEXT_TYPES) for v in values):
        data = "\\".join(map(str, values)).encode(codec)
        return data + (b"\x00" if vr == "UI" else b" ") if len(data) % 2 else data
    fmt = _NUMBER_FORMATS.get(vr)
    if fmt is not None and all(isinstance(v, int | float) for v in values):
        return struct.pack(("<" if little else ">") + fmt * len(values), *values)
    if vr in ("OB", "UN") and isinstance(value, bytes):
        return value + b"\x00" if len(value) % 2 else value
    return None


class _Encoder:
    """Encode a dataset in one transfer syntax, copying raw elements as read."""

    def __init__(self, implicit: bool, little: bool, source: Path | None) -> None:
        self.source = source
        self.implicit = implicit
        self.little = little
        end = "<" if little else ">"
        self._tag = struct.Struct(end + "HH")
        self._short = struct.Struct(end + "HH2sH")
        self._long = struct.Struct(end + "HH2s2xL")
        self._implicit = struct.Struct(end + "HHL")

    def header(self, tag: int, vr: str, length: int) -> bytes:
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return self._implicit.pack(group, element, length)
        if vr in EXPLICIT_VR_LENGTH_32 or length == _UNDEFINED:
            return self._long.pack(group, element, vr.encode("ascii"), length)
        return self._short.pack(group, element, vr.encode("ascii"), length)

    def delimiter(self, tag: int) -> bytes:
        return self._implicit.pack(0xFFFE, tag & 0xFFFF, 0)

    def dataset(self, ds: Dataset, out: list[bytes | _Segment | _Bulk], top: bool) -> None:
        encodings = getattr(ds, "_character_set", None)
        codec = codec_for(encodings)
        elements = ds._dict
        for key in sorted(elements, key=int):
            tag = int(key)
            elem = elements[key]
            if isinstance(elem, RawDataElement):
                if (elem.value is None and elem.length == _UNDEFINED) or (
                    elem.is_implicit_VR != self.implicit or elem.is_little_endian != self.little
                ):
                    # Deferred with undefined length, or read in another
                    # encoding than the output's: decode it and encode anew.
                    elem = ds[tag]
                else:
                    self._raw(elem, out, top and tag in _BULK_TAGS)
                    continue
            if elem.VR == "SQ":
                self._sequence(elem, out)
                continue
            value = _encode_value(elem, codec, self.little)
            if value is not None:
                data = self.header(tag, elem.VR, len(value)) + value
            else:
                buffer = DicomBytesIO()
                buffer.is_little_endian = self.little
                buffer.is_implicit_VR = self.implicit
                write_data_element(buffer, elem, encodings)
                data = buffer.getvalue()
            out.append(_Bulk(data) if top and tag in _BULK_TAGS else data)

    def _raw(self, elem: RawDataElement, out: list[bytes | _Segment | _Bulk], bulk: bool) -> None:
        tag, length = int(elem.tag), elem.length
        vr = elem.VR or "UN"
        if elem.value is None:
            out.append(self.header(tag, vr, length))
            out.append(_Segment(elem.value_tell, length))
            return
        value = bytes(elem.value)
        if length == _UNDEFINED:
            out.append(self.header(tag, vr, _UNDEFINED))
            out.append(_Bulk(value) if bulk else value)
            out.append(self.delimiter(SEQUENCE_END))
            return
        if len(value) != length:
            where = format_tag(tag)
            raise InputError(f"{self.source}: malformed DICOM: file is truncated in {where}")
        if bulk:
            out.append(self.header(tag, vr, length))
            out.append(_Bulk(value))
        else:
            out.append(self.header(tag, vr, length) + value)

    def _sequence(self, elem: DataElement, out: list[bytes | _Segment | _Bulk]) -> None:
        out.append(self.header(int(elem.tag), "SQ", _UNDEFINED))
        for item in elem.value or ():
            out.append(
                self._tag.pack(ITEM >> 16, ITEM & 0xFFFF)
                + struct.pack("<L" if self.little else ">L", _UNDEFINED)
            )
            self.dataset(item, out, top=False)
            out.append(self.delimiter(ITEM_END))
        out.append(self.delimiter(SEQUENCE_END))


def _file_meta(ds: FileDataset, syntax: UID) -> bytes:
    """Preamble and a fresh File Meta Information group (explicit VR little endian)."""
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    sop_class = _written_uid(ds, 0x00080016, old, 0x00020002)
    sop_instance = _written_uid(ds, 0x00080018, old, 0x00020003)
    return file_meta_bytes(sop_class, sop_instance, str(syntax))


def _written_uid(ds: Dataset, tag: int, meta: FileMetaDataset, meta_tag: int) -> str:
    """The data set's UID at *tag* when it has one (what is written), else the file meta's.

    The file meta says what the data set says, whatever the old meta said: a
    coerced SOP Instance UID is the Media Storage SOP Instance UID. Only an
    object without the attribute (a DICOMDIR) keeps the meta's own value.
    """
    if tag_key(tag) in ds._dict:
        return joined_text(ds, tag)
    return joined_text(meta, meta_tag)


def file_meta_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble and File Meta Information for an object (explicit VR little endian)."""
    body = [_META_HEADER.pack(0x0002, 0x0001, b"OB", 2) + b"\x00\x01"]
    for element, vr, text in (
        (0x0002, "UI", sop_class),
        (0x0003, "UI", sop_instance),
        (0x0010, "UI", syntax),
        (0x0012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x0013, "SH", IMPLEMENTATION_VERSION_NAME),
    ):
        if not text:
            continue  # a source without it: write what is known
        value = text.encode("ascii", "replace")
        if len(value) % 2:
            value += b"\x00" if vr == "UI" else b" "
        body.append(_META_SHORT.pack(0x0002, element, vr.encode(), len(value)) + value)
    group = b"".join(body)
    return (
        _PREAMBLE
        + _META_SHORT.pack(0x0002, 0x0000, b"UL", 4)
        + struct.pack("<L", len(group))
        + group
    )


def encode_file(ds: FileDataset, source: Path | None = None) -> EncodedFile:
    """Encode *ds* as a Part 10 file in its own transfer syntax.

    Deferred values are left as references to *source* (default: the file
    *ds* was read from).
    """
    syntax = _transfer_syntax(ds)
    deflated = syntax == DeflatedExplicitVRLittleEndian
    try:
        # The output says what the transfer syntax says, even where the
        # source's bytes did not (elements read otherwise are re-encoded).
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    except ValueError:  # a private transfer syntax: keep the encoding as read
        read_implicit, read_little = ds.original_encoding
        implicit = bool(read_implicit)
        little = read_little is not False
    filename = getattr(ds, "filename", None)
    src = source or (Path(filename) if isinstance(filename, str | os.PathLike) else None)
    body: list[bytes | _Segment | _Bulk] = []
    with quiet_pydicom():
        meta = _file_meta(ds, syntax)
        _Encoder(bool(implicit), bool(little), src).dataset(ds, body, top=True)
    if deflated:
        plain = meta + b"".join(p for p in body if isinstance(p, bytes))
        raw = b"".join(
            p.data if isinstance(p, _Bulk) else p for p in body if not isinstance(p, _Segment)
        )
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return EncodedFile([meta, compressor.compress(raw) + compressor.flush()], src, plain)
    return EncodedFile(_coalesce([meta, *body]), src)


def _coalesce(parts: list[bytes | _Segment | _Bulk]) -> list[bytes | _Segment | _Bulk]:
    """Join each run of in-memory header bytes into one part (fewer writes and scans)."""
    merged: list[bytes | _Segment | _Bulk] = []
    run: list[bytes] = []
    for part in parts:
        if type(part) is bytes:
            run.append(part)
            continue
        if run:
            merged.append(b"".join(run))
            run = []
        merged.append(part)
    if run:
        merged.append(b"".join(run))
    return merged
