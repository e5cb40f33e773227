"""The structural check of data sets: whole ones pass, every broken one names its element."""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from coercion.dicom.wellformed import MAX_DEPTH, check_data_set, check_file, check_received
from coercion.errors import InputError, MalformedDataError
from coercion.profile.uids import is_valid_uid

CANARY = "QZXCANARY^SECRET"
UNDEFINED = 0xFFFFFFFF
SEQ = 0x00081115


def bundled(name: str) -> bytes:
    """The bytes of a file pydicom ships, never downloaded."""
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found)).read_bytes()


def item(name: str, depth: int) -> Dataset:
    """An item with a value and, below it, sequences down to *depth*."""
    ds = Dataset()
    ds.PatientName = name
    ds.CodeValue = "X1"
    if depth:
        ds.ReferencedSeriesSequence = [item(name, depth - 1), item(name, depth - 1)]
    return ds


def top_level(implicit: bool, little: bool = True) -> tuple[bytes, set[int]]:
    """A data set with nested sequences and pixel data; and its top-level element boundaries."""
    ds = item(CANARY, 3)
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PixelData = bytes(range(256)) * 4
    ds["PixelData"].VR = "OW"
    data, boundaries = b"", {0}
    for elem in ds:
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
        write_data_element(buffer, elem)
        data += buffer.getvalue()
        boundaries.add(len(data))
    return data, boundaries


def header(tag: int, vr: str, length: int) -> bytes:
    """An explicit VR little endian element header."""
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), length)
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def marker(tag: int, length: int = 0) -> bytes:
    """An item or delimiter header (no VR), little endian."""
    return struct.pack("<HHL", 0xFFFE, tag & 0xFFFF, length)


def nested(depth: int) -> bytes:
    """Sequences of undefined length nested *depth* deep, explicit VR little endian."""
    opening = (header(SEQ, "SQ", UNDEFINED) + marker(0xFFFEE000, UNDEFINED)) * depth
    closing = (marker(0xFFFEE00D) + marker(0xFFFEE0DD)) * depth
    return opening + header(0x00100020, "LO", 4) + b"ID01" + closing


# -- whole data sets pass --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # explicit VR little endian
        "MR_small.dcm",
        "ExplVR_BigEnd.dcm",  # explicit VR big endian
        "image_dfl.dcm",  # deflated
        "JPEG2000.dcm",  # encapsulated fragments
        "SC_rgb_rle.dcm",
        "nested_priv_SQ.dcm",  # implicit VR, private sequences
        "reportsi.dcm",  # a structured report: content sequences nested
        "rtplan.dcm",  # implicit VR, sequences by dictionary VR
        "SC_rgb_jpeg.dcm",  # implicit VR data labelled JPEG Baseline (explicit VR)
    ],
)
def test_bundled_files_are_whole(name: str) -> None:
    """pydicom's own test files, in every encoding, pass."""
    check_file(bundled(name), name)


@pytest.mark.parametrize("implicit", [True, False])
def test_every_cut_inside_an_element_is_refused(implicit: bool) -> None:
    """Cut at any byte that is not a top-level element boundary: refused, naming an element."""
    data, boundaries = top_level(implicit)
    check_data_set(data, "whole", implicit=implicit)
    for cut in range(1, len(data)):
        if cut in boundaries:
            check_data_set(data[:cut], "cut", implicit=implicit)
            continue
        with pytest.raises(MalformedDataError) as caught:
            check_data_set(data[:cut], "cut", implicit=implicit)
        assert caught.value.summary.startswith("malformed data set: ")
        assert CANARY not in str(caught.value)


def test_big_endian_cut_is_refused() -> None:
    """Explicit VR big endian: whole passes, cut inside the pixel data is refused."""
    data, _ = top_level(implicit=False, little=False)
    check_received(data, "1.2.840.10008.1.2.2", "be")
    with pytest.raises(MalformedDataError, match=r"\(7FE0,0010\)"):
        check_received(data[:-10], "1.2.840.10008.1.2.2", "be")


# -- each kind of break ------------------------------------------------------------------------

ITEM_BODY = header(0x00100020, "LO", 4) + b"ID01"
BROKEN = {
    "impossible length": (header(0x00100010, "PN", 200) + b"DOE^JOHN", "(0010,0010)"),
    "garbage in a sequence": (header(SEQ, "SQ", UNDEFINED) + b"GARBAGE!" * 2, "(0008,1115)"),
    "item longer than its sequence": (
        header(SEQ, "SQ", 8 + len(ITEM_BODY)) + marker(0xFFFEE000, 40) + ITEM_BODY,
        "(0008,1115)",
    ),
    "sequence without delimiter": (
        header(SEQ, "SQ", UNDEFINED) + marker(0xFFFEE000, len(ITEM_BODY)) + ITEM_BODY,
        "(0008,1115)",
    ),
    "item without delimiter": (
        header(SEQ, "SQ", UNDEFINED) + marker(0xFFFEE000, UNDEFINED) + ITEM_BODY,
        "(0008,1115)",
    ),
    "delimiter with a length": (
        header(SEQ, "SQ", UNDEFINED)
        + marker(0xFFFEE000, len(ITEM_BODY))
        + ITEM_BODY
        + marker(0xFFFEE0DD, 4),
        "(0008,1115)",
    ),
    "stray item delimiter": (marker(0xFFFEE00D), "(FFFE,E00D)"),
    "stray item": (marker(0xFFFEE000, 0), "(FFFE,E000)"),
    "not a VR": (b"\x10\x00\x10\x00\x01\x02\x02\x00AB", "(0010,0010)"),
    "a short length past the end": (header(0x00100020, "LO", 0xFFFF) + b"AB", "(0010,0020)"),
    "undefined length on UT": (header(0x00204000, "UT", UNDEFINED), "(0020,4000)"),
    "fragments cut short": (
        header(0x7FE00010, "OB", UNDEFINED)
        + marker(0xFFFEE000, 0)
        + marker(0xFFFEE000, 100)
        + b"\x00" * 10,
        "(7FE0,0010)",
    ),
    "fragment of undefined length": (
        header(0x7FE00010, "OB", UNDEFINED) + marker(0xFFFEE000, UNDEFINED),
        "(7FE0,0010)",
    ),
    "UN sequence broken inside": (
        header(0x00091010, "UN", UNDEFINED)
        + marker(0xFFFEE000, UNDEFINED)
        + struct.pack("<HHL", 0x0010, 0x0020, 99)
        + b"X",
        "(0010,0020)",
    ),
    "trailing garbage": (b"\x01\x02\x03", "element header"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_each_break_is_refused_naming_the_element(kind: str) -> None:
    """Each kind of structural fault raises MalformedDataError naming the element, no value."""
    data, where = BROKEN[kind]
    whole = header(0x00080018, "UI", 8) + b"1.2.3.4\x00" + data
    with pytest.raises(MalformedDataError) as caught:
        check_data_set(whole, "C-STORE from CT01", implicit=False)
    assert caught.value.summary == f"malformed data set: {where}", str(caught.value)
    assert str(caught.value).startswith("C-STORE from CT01: malformed data set: ")
    assert "DOE" not in str(caught.value) and "1.2.3.4" not in str(caught.value)
    assert isinstance(caught.value, InputError)


def test_implicit_sequence_by_dictionary_is_walked() -> None:
    """Implicit VR: a defined-length SQ (by the dictionary) whose item overruns it is refused."""
    body = struct.pack("<HHL", 0x0010, 0x0020, 4) + b"ID01"
    overrun = struct.pack("<HHL", 0xFFFE, 0xE000, 100) + body
    data = struct.pack("<HHL", 0x0008, 0x1115, len(overrun)) + overrun
    with pytest.raises(MalformedDataError, match=r"\(0008,1115\).*overruns its sequence"):
        check_data_set(data, "implicit", implicit=True)
    private = struct.pack("<HHL", 0x0009, 0x1010, len(overrun)) + overrun
    check_data_set(private, "implicit", implicit=True)  # a private value: not known to be SQ


def test_implicit_label_is_trusted_over_letter_like_lengths() -> None:
    """Implicit VR data whose first length reads like letters ("D\\x06") are walked as labelled."""
    body = struct.pack("<HHL", 0x0010, 0x0020, 0x0644) + b"X" * 0x0644
    assert body[4:6] == b"D\x06"
    check_received(body, "1.2.840.10008.1.2", "implicit")
    with pytest.raises(MalformedDataError, match=r"\(0010,0020\)"):
        check_received(body[:-1], "1.2.840.10008.1.2", "implicit")


def test_empty_data_set_is_refused() -> None:
    """No bytes at all is no data set."""
    with pytest.raises(MalformedDataError, match="no element"):
        check_received(b"", "1.2.840.10008.1.2.1", "empty")


# -- depth -------------------------------------------------------------------------------------


def test_nesting_up_to_the_limit_passes_and_deeper_is_refused() -> None:
    """MAX_DEPTH nested sequences pass; one more is refused; 100000 fail fast without recursion."""
    check_data_set(nested(MAX_DEPTH), "deep", implicit=False)
    with pytest.raises(MalformedDataError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_data_set(nested(MAX_DEPTH + 1), "deep", implicit=False)
    with pytest.raises(MalformedDataError, match="nested deeper"):
        check_data_set(nested(100_000), "deep", implicit=False)


# -- deflate -----------------------------------------------------------------------------------


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_deflated_data_sets() -> None:
    """A deflated data set is inflated and walked; a corrupt, cut or too large stream is refused."""
    data, _ = top_level(implicit=False)
    deflated = _deflate(data)
    check_received(deflated, "1.2.840.10008.1.2.1.99", "dfl")
    with pytest.raises(MalformedDataError, match=r"\(7FE0,0010\)"):
        check_received(_deflate(data[:-10]), "1.2.840.10008.1.2.1.99", "dfl")
    with pytest.raises(MalformedDataError, match="cut short"):
        check_received(deflated[: len(deflated) // 2], "1.2.840.10008.1.2.1.99", "dfl")
    with pytest.raises(MalformedDataError, match="corrupt"):
        check_received(b"\xff" * 64, "1.2.840.10008.1.2.1.99", "dfl")


def test_deflate_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream inflating past MAX_INFLATED is refused before it is all in memory."""
    monkeypatch.setattr("coercion.dicom.wellformed.MAX_INFLATED", 1 << 20)
    bomb = _deflate(header(0x7FE00010, "OB", 8 << 20) + bytes(8 << 20))
    with pytest.raises(MalformedDataError, match="inflates to more than"):
        check_received(bomb, "1.2.840.10008.1.2.1.99", "dfl")


def test_truncated_bundled_files_are_refused() -> None:
    """pydicom's truncated test files are refused, naming the cut element."""
    for name, tag in (("MR_truncated.dcm", "(7FE0,0010)"), ("rtplan_truncated.dcm", "(300A,00B0)")):
        with pytest.raises(MalformedDataError, match=re.escape(tag)):
            check_file(bundled(name), name)


# -- UIDs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0", True),
        ("1.0.2", True),
        ("1." + "2" * 62, True),  # 64 characters
        ("1." + "2" * 63, False),  # 65
        ("1.02", False),  # a leading zero
        ("1..2", False),
        ("..", False),
        (".1", False),
        ("1.", False),
        ("", False),
        ("1.2/3", False),
        ("1.2.3\n", False),  # pydicom's UID.is_valid lets this through
        ("1.2.\u0663", False),  # a non-ASCII digit
        ("1.2 ", False),
    ],
)
def test_is_valid_uid_is_ps3_5_9_1(value: str, valid: bool) -> None:
    """Digits and dots, no empty or leading-zero component, at most 64 characters."""
    assert is_valid_uid(value) is valid


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"],
)
def test_a_memory_map_is_checked_as_its_bytes(syntax: str, tmp_path: Path) -> None:
    """check_received over a memory map (a spooled data set): whole passes, cut refused."""
    implicit = syntax == "1.2.840.10008.1.2"
    data, _ = top_level(implicit, little=syntax != "1.2.840.10008.1.2.2")
    if syntax.endswith(".99"):
        data = _deflate(data)
    for payload, whole in ((data, True), (data[:-3], False)):
        path = tmp_path / "spooled"
        path.write_bytes(payload)
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
        ):
            if whole:
                check_received(view, syntax, "spooled")
            else:
                with pytest.raises(MalformedDataError) as caught:
                    check_received(view, syntax, "spooled")
                assert CANARY not in str(caught.value)
