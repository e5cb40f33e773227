"""A lean DICOM reader that builds pydicom datasets of raw elements.

pydicom's ``dcmread`` spends most of a small file's time on bookkeeping per
element and parses sequences a second time when they are first accessed.
De-identification visits every sequence item, so this reader parses the whole
tree in one pass with ``struct.unpack_from`` over the file's bytes and hands
pydicom exactly what its own reader would: :class:`RawDataElement` values
(decoded by pydicom only when coercion touches them) and
:class:`~pydicom.sequence.Sequence` values of item datasets. Values longer
than ``defer_size`` at the top level are not read at all: they keep their file
offset and are copied file to file when the output is written.

Every value must lie inside the file: a file cut short raises
:class:`~coercion.errors.InputError` naming the element, where pydicom would
return a shortened value. An item that claims more bytes than its sequence of
defined length holds is read up to the sequence's end, as pydicom does: the
sequence's length, which fits the file, is the one to trust.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import STANDARD_VR, VR

from coercion.dicom.elements import LONG_VR_BYTES, dictionary_vr, new_dataset, python_encodings
from coercion.dicom.elements import key as tag_key
from coercion.dicom.tags import ITEM, ITEM_END, SEQUENCE_END, format_tag
from coercion.errors import InputError, map_errors

__all__ = ["parse_bytes", "parse_file"]

_UNDEFINED = 0xFFFFFFFF
#: VRs that may hold a sequence (SQ, and UN for a sequence of unknown VR).
_SPECIAL_VRS = frozenset({b"SQ", b"UN"})
_VR_TEXT = {str(vr).encode("ascii"): str(vr) for vr in VR if len(str(vr)) == 2}
_MMAP_THRESHOLD = 1 << 20
_Elements = dict[BaseTag, DataElement | RawDataElement]


class _TruncatedError(Exception):
    """A value or header runs past the end of its container."""

    def __init__(self, tag: int) -> None:
        super().__init__(tag)
        self.tag = tag


class _Parser:
    """Parse one encoding (implicit/explicit VR, byte order) from a buffer."""

    def __init__(self, buf: bytes | mmap.mmap, implicit: bool, little: bool, defer: int) -> None:
        self.buf = buf
        self.implicit = implicit
        self.little = little
        self.defer = defer
        end = "<" if little else ">"
        self.tag = struct.Struct(end + "HH")
        self.u16 = struct.Struct(end + "H")
        self.u32 = struct.Struct(end + "L")
        self.charset: str | list[str] = default_encoding
        #: Top-level parsing ends before the first element after this tag.
        self.stop = 0xFFFFFFFF

    def dataset(self, pos: int, end: int, top: bool, until_item_end: bool) -> tuple[_Elements, int]:
        """Parse elements from *pos*; return them and the position after the last."""
        buf = self.buf
        elements: _Elements = {}
        unpack_tag, u16, u32 = self.tag.unpack_from, self.u16.unpack_from, self.u32.unpack_from
        # RawDataElement's own __new__ is a Python function around this call: called
        # directly, the element is the same (a named tuple of the same class) for less.
        new_raw = tuple.__new__
        implicit, little = self.implicit, self.little
        defer = self.defer or _UNDEFINED
        stop = self.stop if top else 0xFFFFFFFF
        while pos < end:
            if end - pos < 8:
                if any(buf[pos:end]):
                    raise _TruncatedError(0)
                return elements, end
            group, element = unpack_tag(buf, pos)
            tag = group << 16 | element
            if tag == ITEM_END and until_item_end:
                return elements, pos + 8
            if tag > stop:
                return elements, pos
            if implicit:
                vr: bytes | None = None
                length = u32(buf, pos + 4)[0]
                start = pos + 8
            else:
                vr = bytes(buf[pos + 4 : pos + 6])
                if vr in LONG_VR_BYTES:
                    if end - pos < 12:
                        raise _TruncatedError(tag)
                    length = u32(buf, pos + 8)[0]
                    start = pos + 12
                else:
                    length = u16(buf, pos + 6)[0]
                    start = pos + 8
            if tag == 0x00080005:
                self._charset(buf[start : start + length])
            if vr is None or vr in _SPECIAL_VRS or length == _UNDEFINED or (top and length > defer):
                pos = self._element(elements, tag, vr, length, start, end, top)
                continue
            # The common case inline: an explicit VR value of defined length, read now.
            pos = start + length
            if pos > end:
                raise _TruncatedError(tag)
            key = tag_key(tag)
            text_vr = _VR_TEXT.get(vr) or vr.decode("ascii", "replace")
            elements[key] = new_raw(
                RawDataElement,
                (key, text_vr, length, buf[start:pos], start, False, little, True, False),
            )
        if until_item_end:
            raise _TruncatedError(ITEM_END)
        return elements, pos

    def _charset(self, raw: bytes) -> None:
        text = bytes(raw).decode("ascii", "replace").strip("\x00 ")
        self.charset = (python_encodings(text) if text else None) or default_encoding

    def _is_sequence(self, tag: int, vr: bytes | None, length: int, start: int, end: int) -> bool:
        if vr == b"SQ":
            return True
        if vr is not None and vr != b"UN":
            return False
        if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
            return False
        if self.implicit and dictionary_vr(tag) == "SQ":
            return True
        if length == _UNDEFINED:
            return True
        if length >= 8 and start + 4 <= end:
            group, element = self.tag.unpack_from(self.buf, start)
            return bool((group << 16 | element) == ITEM)
        return False

    def _element(
        self,
        elements: _Elements,
        tag: int,
        vr: bytes | None,
        length: int,
        start: int,
        end: int,
        top: bool,
    ) -> int:
        key = tag_key(tag)
        if self._is_sequence(tag, vr, length, start, end):
            if vr == b"UN" and not self.implicit:
                # An SQ sent as UN is encoded implicit VR little endian (PS3.5 6.2.2).
                sub = _Parser(self.buf, True, True, 0)
                sub.charset = self.charset
                items, pos = sub.sequence(tag, length, start, end)
            else:
                items, pos = self.sequence(tag, length, start, end)
            elements[key] = DataElement(
                key, "SQ", Sequence(items), is_undefined_length=length == _UNDEFINED
            )
            return pos
        text_vr = None if vr is None else vr.decode("ascii", "replace")
        if length == _UNDEFINED:
            stop = self._skip_fragments(tag, start, end)
            value: bytes | None = bytes(self.buf[start:stop])
            elements[key] = RawDataElement(
                key, text_vr, length, value, start, self.implicit, self.little, True, False
            )
            return stop + 8
        if start + length > end:
            raise _TruncatedError(tag)
        value = (
            None
            if top and self.defer and length > self.defer
            else bytes(self.buf[start : start + length])
        )
        elements[key] = RawDataElement(
            key, text_vr, length, value, start, self.implicit, self.little, True, False
        )
        return start + length

    def _skip_fragments(self, tag: int, pos: int, end: int) -> int:
        """Walk the items of an undefined-length value; return the delimiter's position."""
        while pos + 8 <= end:
            group, element = self.tag.unpack_from(self.buf, pos)
            item = group << 16 | element
            if item == SEQUENCE_END:
                return pos
            if item != ITEM:
                break
            length = self.u32.unpack_from(self.buf, pos + 4)[0]
            if length == _UNDEFINED:
                break
            pos += 8 + length
        raise _TruncatedError(tag)

    def sequence(self, tag: int, length: int, start: int, end: int) -> tuple[list[Dataset], int]:
        """Parse the items of a sequence value; return them and the position after it."""
        stop = end if length == _UNDEFINED else start + length
        if stop > end:
            raise _TruncatedError(tag)
        items: list[Dataset] = []
        pos = start
        while pos < stop:
            if stop - pos < 8:
                raise _TruncatedError(tag)
            group, element = self.tag.unpack_from(self.buf, pos)
            item_tag = group << 16 | element
            item_length = self.u32.unpack_from(self.buf, pos + 4)[0]
            pos += 8
            if item_tag == SEQUENCE_END:
                return items, pos
            if item_tag != ITEM:
                raise _TruncatedError(tag)
            if item_length == _UNDEFINED:
                elements, pos = self.dataset(pos, stop, top=False, until_item_end=True)
            else:
                if pos + item_length > stop:
                    if length == _UNDEFINED:
                        raise _TruncatedError(tag)
                    # An item longer than its sequence, whose own length fits its
                    # container: the item's length is wrong, not the file cut short
                    # (as pydicom, read the item up to the sequence's end).
                    item_length = stop - pos
                elements, _ = self.dataset(pos, pos + item_length, top=False, until_item_end=False)
                pos += item_length
            items.append(new_dataset(elements, self.charset, self.implicit, self.little))
        if length == _UNDEFINED:
            raise _TruncatedError(tag)
        return items, stop


def _looks_explicit(buf: bytes | mmap.mmap, pos: int) -> bool:
    """Whether the element at *pos* has an explicit VR: bytes 4-6 name a standard VR.

    (Implicit VR has its length there: 0x0144 reads "D\\x01", which is no VR.)
    """
    vr = bytes(buf[pos + 4 : pos + 6])
    return len(vr) == 2 and vr.isalpha() and vr.decode("ascii") in STANDARD_VR


def _file_meta(buf: bytes | mmap.mmap, path: Path) -> tuple[FileMetaDataset, int]:
    """Parse group 0002 (always explicit VR little endian) after the preamble."""
    parser = _Parser(buf, False, True, 0)
    pos, end = 132, len(buf)
    elements: _Elements = {}
    while pos + 8 <= end and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
        if not _looks_explicit(buf, pos):
            raise InputError(f"{path}: malformed DICOM: file meta is not explicit VR")
        sub, pos = parser.dataset(pos, _meta_end(buf, pos, end), top=False, until_item_end=False)
        elements.update(sub)
    return FileMetaDataset(elements), pos


def _meta_end(buf: bytes | mmap.mmap, pos: int, end: int) -> int:
    """The end of the next group 0002 element (parse one element at a time)."""
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in LONG_VR_BYTES:
        length: int = struct.unpack_from("<L", buf, pos + 8)[0]
        return min(end, pos + 12 + length)
    length = struct.unpack_from("<H", buf, pos + 6)[0]
    return min(end, pos + 8 + length)


def _syntax(meta: FileMetaDataset) -> str:
    raw = meta.get_item(0x00020010)
    if raw is None:
        return ""
    value = raw.value if isinstance(raw, RawDataElement) else str(raw.value).encode()
    return bytes(value or b"").decode("ascii", "replace").strip("\x00 ")


def _encoding(buf: bytes | mmap.mmap, pos: int, syntax: str) -> tuple[bool, bool]:
    """(implicit, little) for the data set at *pos*, trusting the bytes over the label."""
    little = syntax != ExplicitVRBigEndian
    if not syntax and pos + 2 <= len(buf):
        # Without a transfer syntax, the byte order giving the lower group wins.
        little = struct.unpack_from("<H", buf, pos)[0] <= struct.unpack_from(">H", buf, pos)[0]
    if pos + 6 > len(buf):
        return syntax == ImplicitVRLittleEndian, little
    return not _looks_explicit(buf, pos), little


def _parse(buf: bytes | mmap.mmap, path: Path, defer: int, stop: int = 0xFFFFFFFF) -> FileDataset:
    preamble: bytes | None = None
    if len(buf) >= 132 and buf[128:132] == b"DICM":
        preamble = bytes(buf[:128])
        meta, pos = _file_meta(buf, path)
    else:
        meta, pos = FileMetaDataset(), 0
    syntax = _syntax(meta)
    body: bytes | mmap.mmap = buf
    # Only the Deflated transfer syntax deflates the data set (Deflated Image Frame
    # Compression, 1.2.840.10008.1.2.8.1, deflates frames in an explicit VR data set).
    if syntax == DeflatedExplicitVRLittleEndian:
        body, pos, defer = zlib.decompress(bytes(buf[pos:]), -zlib.MAX_WBITS), 0, 0
    implicit, little = _encoding(body, pos, syntax)
    parser = _Parser(body, implicit, little, defer)
    parser.stop = stop
    elements, _ = parser.dataset(pos, len(body), top=True, until_item_end=False)
    ds = FileDataset(str(path), elements, preamble, meta, implicit, little)
    ds.set_original_encoding(implicit, little, parser.charset)
    return ds


def parse_file(path: Path, defer_size: int, name: str = "") -> FileDataset:
    """Read *path* into a :class:`FileDataset` of raw elements.

    Raises :class:`InputError` naming the path, or *name* when given (and the
    element, where known) when the file is cut short or its structure cannot
    be followed.
    """
    with _reported(name or str(path), "file"), open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size >= _MMAP_THRESHOLD:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _parse(mapped, path, defer_size)
        return _parse(handle.read(), path, defer_size)


def parse_bytes(data: bytes, name: str, stop: int = 0xFFFFFFFF) -> FileDataset:
    """Parse a Part 10 stream held in memory (a received object); *name* labels errors.

    With *stop*, the top level is parsed only up to that tag (the elements
    after it are left out): enough to read, say, the instance UIDs.
    """
    with _reported(name, "data set"):
        return _parse(data, Path(name), 0, stop)


@contextlib.contextmanager
def _reported(name: str, what: str) -> Iterator[None]:
    """Turn parse failures into an InputError naming *name* (and the element, where known)."""
    failures = (struct.error, zlib.error, ValueError)
    with map_errors({failures: InputError}, f"{name}: malformed DICOM: cannot parse"):
        try:
            yield
        except _TruncatedError as exc:
            where = f" in {format_tag(exc.tag)}" if exc.tag else ""
            raise InputError(f"{name}: malformed DICOM: {what} is truncated{where}") from None
