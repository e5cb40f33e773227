"""Whether a data set is whole: its structure walked to the end, no value decoded.

A received object is checked before anything is stored or answered: every
element header and length, every sequence, item and delimiter, and the
fragments of encapsulated pixel data must lie inside the bytes and close
where they should, down to the last byte. The walk reads element headers
only (one ``struct`` read each; a value is skipped by its length, so pixel
data costs nothing), keeps its own stack instead of recursing, and refuses
sequences nested deeper than :data:`MAX_DEPTH`.

What is checked, per PS3.5 7.1 and 7.5:

- each header fits; an explicit VR is one PS3.5 knows (delimiters carry none);
- a defined length stays inside its item, sequence or the data set;
- an undefined length only on SQ, UN (a sequence, implicit VR little endian
  inside, PS3.5 6.2.2) and OB/OW (encapsulated fragments, then a sequence
  delimiter); in implicit VR, on a sequence or the pixel data;
- a sequence holds only items and, when of undefined length, ends with a
  sequence delimiter; an undefined-length item ends with an item delimiter;
  delimiters have length 0 and appear nowhere else.

Not checked (a reader copes, and real objects do it): the order of tags, odd
lengths, and the inside of a defined-length UN or private implicit VR value
(nothing says it holds a sequence). Offsets count from the data set's first
byte (after inflation, for a deflated one).

A failure raises :class:`~coercion.errors.MalformedDataError` naming the
element (tag) and its byte offset, never a value.
"""

from __future__ import annotations

import functools
import mmap
import struct
import zlib
from dataclasses import dataclass

from pydicom.uid import UID

from coercion.dicom.elements import LONG_VR_BYTES, SHORT_VR_BYTES, dictionary_vr
from coercion.dicom.tags import ITEM, ITEM_END, SEQUENCE_END, format_tag
from coercion.errors import MalformedDataError

__all__ = ["MAX_DEPTH", "MAX_INFLATED", "check_data_set", "check_file", "check_received"]

#: Sequences may nest this deep (real objects stay far below; the reader and the engine recurse).
MAX_DEPTH = 64
#: A deflated data set may not inflate to more than this (a small stream can inflate to gigabytes).
MAX_INFLATED = 1 << 30

_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_VR_BYTES = LONG_VR_BYTES | SHORT_VR_BYTES
_FRAGMENT_VRS = frozenset({b"OB", b"OW"})
_META_HEADER = struct.Struct("<HH2sH")
_META_U32 = struct.Struct("<L")
#: What a data set may be walked in: bytes, or a memory map of a file.
Buffer = bytes | memoryview | mmap.mmap


@functools.lru_cache(maxsize=4096)
def _is_sequence_tag(tag: int) -> bool:
    """Whether the dictionary says SQ for *tag* (implicit VR: the only way to know)."""
    return not tag & 0x10000 and dictionary_vr(tag) == "SQ"  # private (odd) groups: unknown


class _Encoding:
    """Implicit or explicit VR, and the byte order: the header readers for it."""

    __slots__ = ("explicit_header", "implicit", "implicit_header", "little", "u32")

    def __init__(self, implicit: bool, little: bool) -> None:
        end = "<" if little else ">"
        self.implicit = implicit
        self.little = little
        self.implicit_header = struct.Struct(end + "HHL")  # also items and delimiters
        self.explicit_header = struct.Struct(end + "HH2sH")
        self.u32 = struct.Struct(end + "L")


_IMPLICIT_LE = _Encoding(implicit=True, little=True)


@dataclass
class _Frame:
    """An open sequence or item: where it must end, and how its contents are encoded."""

    sequence: bool
    tag: int
    end: int
    undefined: bool
    encoding: _Encoding


class _Walk:
    """One walk over *buf*; :meth:`run` raises at the first structural fault."""

    def __init__(self, buf: Buffer, name: str, max_depth: int) -> None:
        self.buf = buf
        self.name = name
        self.max_depth = max_depth
        self.stack: list[_Frame] = []
        self.depth = 0

    def fail(self, tag: int, pos: int, what: str) -> MalformedDataError:
        where = format_tag(tag) if tag else "element header"
        return MalformedDataError(
            f"{self.name}: malformed data set: {where} at byte {pos}: {what}; "
            "the object is cut short or corrupt, refused",
            f"malformed data set: {where}",
        )

    def run(self, pos: int, end: int, encoding: _Encoding) -> None:
        top = _Frame(sequence=False, tag=0, end=end, undefined=False, encoding=encoding)
        self.stack.append(top)
        while self.stack:
            frame = self.stack[-1]
            if frame.sequence:
                pos = self.sequence(frame, pos)
            else:
                pos = self.dataset(frame, pos, frame is top)

    def push(self, frame: _Frame, pos: int) -> None:
        if frame.sequence:
            self.depth += 1
            if self.depth > self.max_depth:
                raise self.fail(
                    frame.tag, pos, f"sequences nested deeper than {self.max_depth} levels"
                )
        self.stack.append(frame)

    def pop(self) -> None:
        if self.stack.pop().sequence:
            self.depth -= 1

    def dataset(self, frame: _Frame, pos: int, top: bool) -> int:
        """Walk the elements of *frame* until a sequence opens (pushed) or it ends (popped)."""
        buf, end, enc = self.buf, frame.end, frame.encoding
        implicit = enc.implicit
        implicit_header = enc.implicit_header.unpack_from
        explicit_header = enc.explicit_header.unpack_from
        u32 = enc.u32.unpack_from
        short_vrs = SHORT_VR_BYTES
        while pos < end:
            if end - pos < 8:
                if top and not any(buf[pos:end]):
                    break  # trailing zero padding, as some writers leave
                raise self.fail(0, pos, "truncated header")
            if implicit:
                group, element, length = implicit_header(buf, pos)
                vr = None
                start = pos + 8
            else:
                group, element, vr, length = explicit_header(buf, pos)
                start = pos + 8
                if vr in short_vrs and group != 0xFFFE:  # the common case, inline
                    pos = start + length
                    if pos > end:
                        raise self.fail(group << 16 | element, start - 8, "runs past the end")
                    continue
                if group == 0xFFFE:
                    length, vr = u32(buf, pos + 4)[0], None
                elif vr in LONG_VR_BYTES:
                    if end - pos < 12:
                        raise self.fail(group << 16 | element, pos, "truncated header")
                    length = u32(buf, pos + 8)[0]
                    start = pos + 12
                else:
                    raise self.fail(group << 16 | element, pos, "not a value representation")
            tag = group << 16 | element
            if group == 0xFFFE:
                return self.delimiter(frame, tag, length, pos, top)
            if length == _UNDEFINED:
                if self.undefined(frame, tag, vr, start, pos):
                    return start
                pos = self.fragments(tag, start, end, enc)
                continue
            if start + length > end:
                raise self.fail(tag, pos, f"length {length} runs past the end of its container")
            if vr == b"SQ" or (vr is None and length and _is_sequence_tag(tag)):
                self.push(_Frame(True, tag, start + length, False, enc), pos)
                return start
            pos = start + length
        if frame.undefined:
            raise self.fail(frame.tag, pos, "item has no item delimiter (cut short)")
        self.pop()
        return end if top else pos

    def delimiter(self, frame: _Frame, tag: int, length: int, pos: int, top: bool) -> int:
        """An item delimiter closing *frame*; any other (FFFE,xxxx) tag here is a fault."""
        if tag != ITEM_END or top or not frame.undefined:
            raise self.fail(tag, pos, "an item or delimiter tag where none may be")
        if length != 0:
            raise self.fail(tag, pos, "delimiter with a non-zero length")
        self.pop()
        return pos + 8

    def undefined(self, frame: _Frame, tag: int, vr: bytes | None, start: int, pos: int) -> bool:
        """An undefined length: push a sequence (True), or False for encapsulated fragments."""
        enc = frame.encoding
        if vr == b"SQ" or (vr is None and tag != _PIXEL_DATA):
            self.push(_Frame(True, tag, frame.end, True, enc), pos)
            return True
        if vr == b"UN":  # a sequence of unknown VR: implicit VR little endian inside
            self.push(_Frame(True, tag, frame.end, True, _IMPLICIT_LE), pos)
            return True
        if vr is None or vr in _FRAGMENT_VRS:
            return False
        raise self.fail(tag, pos, f"undefined length on VR {vr.decode('ascii', 'replace')}")

    def fragments(self, tag: int, pos: int, end: int, enc: _Encoding) -> int:
        """Skip encapsulated fragments up to and past their sequence delimiter."""
        header = enc.implicit_header.unpack_from
        while True:
            if end - pos < 8:
                raise self.fail(tag, pos, "fragments without a sequence delimiter (cut short)")
            group, element, length = header(self.buf, pos)
            item = group << 16 | element
            if item == SEQUENCE_END:
                if length != 0:
                    raise self.fail(tag, pos, "delimiter with a non-zero length")
                return pos + 8
            if item != ITEM or length == _UNDEFINED:
                raise self.fail(tag, pos, "a fragment is not an item of defined length")
            pos += 8 + length
            if pos > end:
                raise self.fail(tag, pos, "a fragment runs past the end of the data set")

    def sequence(self, frame: _Frame, pos: int) -> int:
        """The next item of *frame* (pushed), or its end (popped)."""
        end = frame.end
        if pos >= end:
            if frame.undefined:
                raise self.fail(frame.tag, pos, "sequence has no sequence delimiter (cut short)")
            self.pop()
            return pos
        if end - pos < 8:
            raise self.fail(frame.tag, pos, "truncated item header")
        header = frame.encoding.implicit_header
        group, element, length = header.unpack_from(self.buf, pos)
        tag = group << 16 | element
        if tag == ITEM:
            if length == _UNDEFINED:
                self.push(_Frame(False, frame.tag, end, True, frame.encoding), pos)
            elif pos + 8 + length > end:
                raise self.fail(frame.tag, pos, f"an item of length {length} overruns its sequence")
            else:
                self.push(_Frame(False, frame.tag, pos + 8 + length, False, frame.encoding), pos)
            return pos + 8
        if tag == SEQUENCE_END and frame.undefined:
            if length != 0:
                raise self.fail(frame.tag, pos, "delimiter with a non-zero length")
            self.pop()
            return pos + 8
        raise self.fail(frame.tag, pos, "something other than an item inside the sequence")


def check_data_set(
    data: Buffer,
    name: str,
    *,
    implicit: bool,
    little: bool = True,
    start: int = 0,
    max_depth: int = MAX_DEPTH,
) -> None:
    """Walk the data set in *data* from *start* to its end; raise if it is not whole.

    *name* labels the error (a file name, ``C-STORE from CT01``). Raises
    :class:`~coercion.errors.MalformedDataError` naming the tag and offset.
    """
    if start >= len(data):
        raise MalformedDataError(
            f"{name}: malformed data set: no element; nothing was sent", "empty data set"
        )
    _Walk(data, name, max_depth).run(start, len(data), _Encoding(implicit, little))


def check_received(data: Buffer, transfer_syntax: str, name: str) -> None:
    """Check a data set received in *transfer_syntax* (a deflated one is inflated first).

    *data* may be a memory map of a data set spooled to disk: the walk reads
    element headers only, so the pages of long values are never touched.
    """
    _check_encoded(data, 0, transfer_syntax, name)


def check_file(data: bytes, name: str) -> None:
    """Check a file's bytes: the optional preamble and file meta, then the data set."""
    pos = 132 if data[128:132] == b"DICM" else 0
    syntax = ""
    while len(data) - pos >= 8 and data[pos : pos + 2] == b"\x02\x00":
        _group, element, vr, length = _META_HEADER.unpack_from(data, pos)
        start = pos + 8
        if vr in LONG_VR_BYTES:
            start = pos + 12
            length = _META_U32.unpack_from(data, pos + 8)[0] if len(data) >= start else 0
        if start + length > len(data) or vr not in _VR_BYTES:
            raise _Walk(data, name, 0).fail(0x00020000 | element, pos, "broken file meta")
        if element == 0x0010:
            syntax = data[start : start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    _check_encoded(data, pos, syntax, name)


def _check_encoded(data: Buffer, pos: int, transfer_syntax: str, name: str) -> None:
    """Walk from *pos* in the encoding *transfer_syntax* names.

    Data labelled explicit VR whose first element has no VR PS3.5 knows are
    walked as implicit VR (some senders mislabel them so); without a known
    transfer syntax, the bytes decide (and the byte order giving the lower
    group wins).
    """
    try:
        syntax = UID(transfer_syntax)
        implicit = syntax.is_implicit_VR
        little, deflated = syntax.is_little_endian, syntax.is_deflated
    except ValueError:  # none, or a private one
        head = data[pos : pos + 2]
        implicit, little, deflated = False, len(head) < 2 or head[0] != 0 or head[1] == 0, False
    if deflated:
        data, pos = _inflate(data[pos:], name), 0
    implicit = implicit or bytes(data[pos + 4 : pos + 6]) not in _VR_BYTES
    check_data_set(data, name, implicit=implicit, little=little, start=pos)


def _inflate(data: Buffer, name: str) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, MAX_INFLATED)
    except zlib.error:
        raise MalformedDataError(
            f"{name}: malformed data set: the deflated stream is corrupt; refused",
            "malformed data set: deflate",
        ) from None
    if inflater.unconsumed_tail:
        raise MalformedDataError(
            f"{name}: malformed data set: inflates to more than {MAX_INFLATED} bytes; refused",
            "data set too large when inflated",
        )
    if not inflater.eof:
        raise MalformedDataError(
            f"{name}: malformed data set: the deflated stream is cut short; refused",
            "malformed data set: deflate",
        )
    return plain
