"""Part 10 files: sniffing by content, lazy reading, encoding in the source syntax, atomicity."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from coercion.dicom.outputs import atomic_output
from coercion.dicom.part10 import IMPLEMENTATION_CLASS_UID, encode_file, read_file, sniff
from coercion.errors import InputError
from tests.helpers import make_dataset

#: Values above this size stay in the source file until written (part10.DEFER_SIZE).
LARGE = 16 * 1024


def bundled(name: str) -> Path:
    """A file pydicom ships, never downloaded."""
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


def write(ds: Dataset, path: Path) -> Path:
    """Write *ds* as a Part 10 file and return *path*."""
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def large_dataset(side: int = 128) -> Dataset:
    """A synthetic object whose pixel data is larger than the deferral threshold."""
    ds = make_dataset()
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(range(256)) * (side * side * 2 // 256)
    assert len(ds.PixelData) > LARGE
    return ds


def without_meta(ds: Dataset, path: Path, *, implicit: bool, little: bool) -> Path:
    """Write *ds* as a bare data set: no preamble, no file meta."""
    bare = Dataset(ds)
    dcmwrite(path, bare, implicit_vr=implicit, little_endian=little)
    assert path.read_bytes()[128:132] != b"DICM"
    return path


def round_trip(source: Path, output: Path) -> Path:
    """Read *source* and write it unmodified to *output* with encode_file and atomic_output."""
    encoded = encode_file(read_file(source))
    with atomic_output(output) as fd:
        encoded.write_to(fd)
    return output


def elements(ds: Dataset) -> list[tuple[int, str, object]]:
    """Every element at every depth as (tag, VR, value); a sequence by its item count."""
    found: list[tuple[int, str, object]] = []
    for elem in ds.iterall():
        value = len(elem.value) if elem.VR == "SQ" else elem.value
        found.append((int(elem.tag), str(elem.VR), value))
    return found


def leftovers(folder: Path) -> list[Path]:
    """Temporary files atomic_output may have left in *folder*."""
    return [p for p in folder.iterdir() if p.name.endswith(".part")]


# -- sniff -------------------------------------------------------------------------


def test_sniff_part10_file(tmp_path: Path) -> None:
    """A file with preamble and DICM prefix is a Part 10 file."""
    assert sniff(write(make_dataset(), tmp_path / "a.dcm")) == "part10"


@pytest.mark.parametrize(
    ("implicit", "little"), [(False, True), (False, False), (True, True)], ids=["LE", "BE", "ILE"]
)
def test_sniff_dataset_without_preamble(tmp_path: Path, implicit: bool, little: bool) -> None:
    """A bare data set (no preamble) is recognised in either byte order and VR encoding."""
    path = without_meta(make_dataset(), tmp_path / "bare", implicit=implicit, little=little)
    assert sniff(path) == "dataset"


@pytest.mark.parametrize("name", ["ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"])
def test_sniff_bundled_files_without_meta(name: str) -> None:
    """pydicom's bare data sets, little and big endian, are recognised as data sets."""
    assert sniff(bundled(name)) == "dataset"


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world\n", b"Patient list\nDOE^JANE,19700213\n" * 20, b"%PDF-1.7\n" + b"\0" * 200],
    ids=["empty", "short-text", "csv", "pdf"],
)
def test_sniff_rejects_non_dicom(tmp_path: Path, content: bytes) -> None:
    """Text and other formats are not DICOM, whatever their name."""
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    assert sniff(path) is None


def test_sniff_missing_file_is_not_dicom(tmp_path: Path) -> None:
    """A path that cannot be opened is not DICOM (no exception)."""
    assert sniff(tmp_path / "absent.dcm") is None


# -- read_file errors --------------------------------------------------------------


def test_read_file_rejects_text_naming_the_path(tmp_path: Path) -> None:
    """A text file raises InputError that names the path and says it is not DICOM."""
    path = tmp_path / "notes.dcm"
    path.write_text("DOE^JANE was seen on 2024-03-01\n")
    with pytest.raises(InputError) as caught:
        read_file(path)
    assert str(path) in str(caught.value)
    assert "not a DICOM file" in str(caught.value)
    assert "DOE" not in str(caught.value)


def _offset_of(data: bytes, tag: int) -> int:
    """Offset of a little endian element header in the data set of *data*."""
    offset = data.find(struct.pack("<HH", tag >> 16, tag & 0xFFFF), 132)
    assert offset > 0
    return offset


def _cut(tmp_path: Path, where: str) -> tuple[Path, str]:
    """A synthetic file cut at *where*; return its path and the source's PatientName."""
    ds = make_dataset(patient="TRUNCATO^GIOVANNA", patient_id="PID-93311")
    data = write(ds, tmp_path / "whole.dcm").read_bytes()
    name = data.find(b"TRUNCATO")
    cuts = {
        "meta": 140,
        "pixel-header": _offset_of(data, 0x7FE00010) + 10,
        "name-value": name + 4,
        "after-name-value": _offset_of(data, 0x00100020) + 10,
    }
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: cuts[where]])
    return path, str(ds.PatientName)


@pytest.mark.parametrize("where", ["meta", "pixel-header"])
def test_read_file_truncated_header_raises_input_error(tmp_path: Path, where: str) -> None:
    """A file cut inside its file meta or an element header raises InputError naming the path."""
    path, patient = _cut(tmp_path, where)
    with pytest.raises(InputError) as caught:
        read_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert "malformed" in message
    assert patient not in message and "TRUNCATO" not in message


@pytest.mark.parametrize("where", ["name-value", "after-name-value"])
def test_read_file_truncated_inside_a_value_raises_input_error(tmp_path: Path, where: str) -> None:
    """A file cut inside an element value (shorter than its declared length) is malformed."""
    path, patient = _cut(tmp_path, where)
    with pytest.raises(InputError) as caught:
        read_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert patient not in message and "TRUNCATO" not in message


@pytest.mark.parametrize("size", [8, 2 * LARGE], ids=["in-memory", "deferred"])
def test_truncated_pixel_data_fails_before_any_output(tmp_path: Path, size: int) -> None:
    """Pixel data cut short raises InputError naming the path, and leaves no output."""
    ds = large_dataset() if size > LARGE else make_dataset()
    data = write(ds, tmp_path / "whole.dcm").read_bytes()
    source = tmp_path / "cut.dcm"
    source.write_bytes(data[:-3])
    output = tmp_path / "out" / "cut.dcm"
    with pytest.raises(InputError) as caught:
        encoded = encode_file(read_file(source))
        with atomic_output(output) as fd:
            encoded.write_to(fd)
    assert str(source) in str(caught.value)
    assert not output.exists()
    assert not output.parent.exists() or leftovers(output.parent) == []


def test_bundled_truncated_file_is_malformed(tmp_path: Path) -> None:
    """pydicom's MR_truncated.dcm cannot be encoded: InputError names the file."""
    source = bundled("MR_truncated.dcm")
    with pytest.raises(InputError) as caught:
        round_trip(source, tmp_path / "out.dcm")
    assert str(source) in str(caught.value)
    assert not (tmp_path / "out.dcm").exists()


# -- encode_file + atomic_output round trips ---------------------------------------


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("CT_small.dcm", ExplicitVRLittleEndian),
        ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
        ("ExplVR_BigEnd.dcm", ExplicitVRBigEndian),
        ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
        ("JPEG2000.dcm", JPEG2000),
        ("MR_small_RLE.dcm", RLELossless),
        ("rtplan.dcm", ImplicitVRLittleEndian),
        ("nested_priv_SQ.dcm", ImplicitVRLittleEndian),
    ],
)
def test_round_trip_keeps_every_element_and_syntax(tmp_path: Path, name: str, syntax: UID) -> None:
    """An unmodified dataset is written back with every element and its transfer syntax."""
    source = bundled(name)
    output = round_trip(source, tmp_path / "out.dcm")
    original, written = dcmread(source), dcmread(output)
    assert original.file_meta.TransferSyntaxUID == syntax
    assert written.file_meta.TransferSyntaxUID == syntax
    assert elements(written) == elements(original)


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("ExplVR_LitEndNoMeta.dcm", ExplicitVRLittleEndian),
        ("ExplVR_BigEndNoMeta.dcm", ExplicitVRBigEndian),
    ],
)
def test_round_trip_of_bare_dataset_gets_file_meta(tmp_path: Path, name: str, syntax: UID) -> None:
    """A bare data set is written as a Part 10 file in the byte order it was read in."""
    source = bundled(name)
    output = round_trip(source, tmp_path / "out.dcm")
    assert sniff(output) == "part10"
    written = dcmread(output)
    assert written.file_meta.TransferSyntaxUID == syntax
    assert written.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert elements(written) == elements(dcmread(source, force=True))


@pytest.mark.parametrize(
    ("implicit", "little", "syntax"),
    [
        (False, True, ExplicitVRLittleEndian),
        (False, False, ExplicitVRBigEndian),
        (True, True, ImplicitVRLittleEndian),
    ],
    ids=["LE", "BE", "ILE"],
)
def test_round_trip_of_synthetic_bare_dataset(
    tmp_path: Path, implicit: bool, little: bool, syntax: UID
) -> None:
    """A synthetic bare data set keeps its elements and its encoding."""
    source = without_meta(make_dataset(), tmp_path / "bare", implicit=implicit, little=little)
    written = dcmread(round_trip(source, tmp_path / "out.dcm"))
    assert written.file_meta.TransferSyntaxUID == syntax
    assert elements(written) == elements(dcmread(source, force=True))


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_large_pixel_data_is_copied_byte_identical(tmp_path: Path, syntax: UID) -> None:
    """Pixel data above the deferral size is copied unchanged in every uncompressed syntax."""
    ds = large_dataset()
    ds.file_meta.TransferSyntaxUID = syntax
    source = write(ds, tmp_path / "large.dcm")
    output = round_trip(source, tmp_path / "out.dcm")
    original, written = dcmread(source), dcmread(output)
    assert written.file_meta.TransferSyntaxUID == syntax
    assert written.PixelData == original.PixelData
    assert len(written.PixelData) == len(ds.PixelData)
    assert elements(written) == elements(original)


def test_deferred_pixel_data_stays_in_the_source_until_written(tmp_path: Path) -> None:
    """read_file leaves large pixel data unread, yet the output holds it byte for byte."""
    source = write(large_dataset(), tmp_path / "large.dcm")
    ds = read_file(source)
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    assert raw is not None and raw.value is None  # deferred, not read
    output = round_trip(source, tmp_path / "out.dcm")
    pixels = dcmread(source).PixelData
    assert dcmread(output).PixelData == pixels
    assert output.read_bytes().endswith(pixels)


def test_bundled_large_pixel_data_is_copied(tmp_path: Path) -> None:
    """CT_small.dcm's 32 KiB pixel data (deferred) survives a round trip byte for byte."""
    source = bundled("CT_small.dcm")
    assert len(dcmread(source).PixelData) > LARGE
    output = round_trip(source, tmp_path / "out.dcm")
    assert dcmread(output).PixelData == dcmread(source).PixelData


def test_changed_elements_are_encoded(tmp_path: Path) -> None:
    """A value changed after reading is written; untouched ones are kept."""
    source = write(large_dataset(), tmp_path / "large.dcm")
    ds = read_file(source)
    ds.PatientName = "CHANGED^NAME"
    ds.PatientID = "NEW-ID-1"
    del ds.InstitutionName
    encoded = encode_file(ds)
    with atomic_output(tmp_path / "out.dcm") as fd:
        encoded.write_to(fd)
    written = dcmread(tmp_path / "out.dcm")
    assert written.PatientName == "CHANGED^NAME"
    assert written.PatientID == "NEW-ID-1"
    assert "InstitutionName" not in written
    assert written.StudyInstanceUID == dcmread(source).StudyInstanceUID
    assert written.PixelData == dcmread(source).PixelData


def test_scannable_bytes_leave_out_pixel_data(tmp_path: Path) -> None:
    """The bytes offered for verification hold the header but not the pixel data."""
    ds = make_dataset()
    ds.PixelData = b"PIXELSECRET!"
    encoded = encode_file(read_file(write(ds, tmp_path / "a.dcm")))
    assert str(ds.PatientID).encode() in encoded.scannable()
    assert b"PIXELSECRET!" not in encoded.scannable()


# -- atomic_output -----------------------------------------------------------------


def test_atomic_output_writes_the_file(tmp_path: Path) -> None:
    """On success the content appears at the path, in new parent folders, and no temp remains."""
    path = tmp_path / "a" / "b" / "out.dcm"
    with atomic_output(path) as fd:
        os.write(fd, b"complete")
    assert path.read_bytes() == b"complete"
    assert leftovers(path.parent) == []


def test_atomic_output_leaves_nothing_when_the_body_raises(tmp_path: Path) -> None:
    """An error in the body leaves neither the file nor a .name.*.part temporary."""
    path = tmp_path / "out.dcm"
    with pytest.raises(RuntimeError), atomic_output(path) as fd:
        os.write(fd, b"half")
        assert leftovers(tmp_path), "the temporary exists while writing"
        raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_old_content_on_interrupt(tmp_path: Path) -> None:
    """A KeyboardInterrupt while writing keeps the previous file untouched and removes the temp."""
    path = tmp_path / "out.dcm"
    path.write_bytes(b"old content")
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as fd:
        os.write(fd, b"new")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []


def test_atomic_output_applies_the_mode(tmp_path: Path) -> None:
    """An explicit mode is the mode of the final file."""
    path = tmp_path / "secret.csv"
    with atomic_output(path, mode=0o600) as fd:
        os.write(fd, b"x")
    assert path.stat().st_mode & 0o777 == 0o600
