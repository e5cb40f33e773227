"""Real-world input: attributes received as UN, lenient item lengths, file meta kept in step."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, CTImageStorage, MRImageStorage

from coercion.dicom.elements import vr_of
from coercion.dicom.outputs import atomic_output
from coercion.dicom.part10 import encode_file, read_bytes, read_file
from coercion.errors import InputError
from coercion.profile import Deidentifier, compile_profile
from tests.helpers import SECRET, make_dataset

#: Instance UIDs of rtdose_rle.dcm, all encoded with VR UN in an explicit VR file.
UN_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def bundled(name: str) -> Path:
    """A file pydicom ships, never downloaded."""
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


def write(ds: FileDataset, path: Path) -> Path:
    """Encode *ds* (read by the lean reader) to *path* as the batch does."""
    encoded = encode_file(ds)
    with atomic_output(path) as fd:
        encoded.write_to(fd)
    return path


# -- VR UN -------------------------------------------------------------------------


def test_vr_of_a_standard_attribute_received_as_un_is_its_dictionary_vr() -> None:
    """UN on a standard tag is acted on as the dictionary VR; a private UN stays UN."""
    sop = RawDataElement(BaseTag(0x00080018), "UN", 4, b"1.2\x00", 0, False, True, True, False)
    rows = RawDataElement(BaseTag(0x00280010), "UN", 2, b"\x02\x00", 0, False, True, True, False)
    private = RawDataElement(BaseTag(0x00091001), "UN", 2, b"ab", 0, False, True, True, False)
    assert (vr_of(sop), vr_of(rows), vr_of(private)) == ("UI", "US", "UN")


def test_un_encoded_uids_are_remapped_not_emptied(tmp_path: Path) -> None:
    """rtdose_rle.dcm (UIDs, name and id sent as UN): new UIDs, VR UI, meta in step."""
    source = bundled("rtdose_rle.dcm")
    original = dcmread(source)
    ds = read_file(source)
    assert ds.get_item("SOPInstanceUID").VR == "UN"
    deidentifier = Deidentifier(compile_profile(()), SECRET)
    deidentifier.apply(ds)
    out = dcmread(write(ds, tmp_path / "out.dcm"))
    for keyword in UN_UIDS:
        assert out.get_item(keyword).VR == "UI", keyword
        assert out[keyword].value == deidentifier.keys.uid(original[keyword].value), keyword
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID == original.SOPClassUID
    assert out.PatientName == "" and out.PatientID not in ("", original.PatientID)


# -- item lengths ------------------------------------------------------------------


def test_item_longer_than_its_sequence_is_read_to_the_sequence_end() -> None:
    """DICOMDIR-nooffset (last record claims 24 bytes too many): every record, as pydicom."""
    source = bundled("DICOMDIR-nooffset")
    ours = read_file(source, defer=False).DirectoryRecordSequence
    theirs = dcmread(source).DirectoryRecordSequence
    assert len(ours) == len(theirs) == 52
    for mine, pydicoms in zip(ours, theirs, strict=True):
        assert [(e.tag, e.value) for e in mine] == [(e.tag, e.value) for e in pydicoms]


def _plain(tmp_path: Path, ds: Dataset) -> Path:
    path = tmp_path / "plain.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _with_signatures(tmp_path: Path, sequence_length: int, item_length: int) -> Path:
    """A file ending in a Digital Signatures Sequence of one item holding a 12-byte element."""
    path = _plain(tmp_path, make_dataset())
    element = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 4) + b"CODE"
    path.write_bytes(
        path.read_bytes()
        + struct.pack("<HH2s2xL", 0xFFFA, 0xFFFA, b"SQ", sequence_length)
        + struct.pack("<HHL", 0xFFFE, 0xE000, item_length)
        + element
    )
    return path


def test_item_longer_than_a_defined_length_sequence_keeps_its_elements(tmp_path: Path) -> None:
    """A sequence fitting the file whose item claims more: the item's element is read."""
    ds = read_file(_with_signatures(tmp_path, 20, 44))
    assert [item.CodeValue for item in ds.DigitalSignaturesSequence] == ["CODE"]


@pytest.mark.parametrize(
    ("sequence_length", "item_length"),
    [(0xFFFFFFFF, 1000), (1000, 12)],
    ids=["undefined-length-sequence-item-overruns", "sequence-overruns-the-file"],
)
def test_cut_sequences_are_refused_naming_the_element(
    tmp_path: Path, sequence_length: int, item_length: int
) -> None:
    """An item or sequence running past the file is truncation: refused, (FFFA,FFFA) named."""
    path = _with_signatures(tmp_path, sequence_length, item_length)
    with pytest.raises(InputError, match=r"truncated in \(FFFA,FFFA\)") as caught:
        read_file(path)
    assert str(path) in str(caught.value)


def test_bundled_truncated_sequence_is_still_refused() -> None:
    """rtplan_truncated.dcm is refused as cut short in (300A,00B0), with the file named."""
    source = bundled("rtplan_truncated.dcm")
    with pytest.raises(InputError, match=r"truncated in \(300A,00B0\)") as caught:
        read_file(source)
    assert str(source) in str(caught.value)


# -- file meta -----------------------------------------------------------------------


@pytest.mark.parametrize("written", ["2.25.1234", ""], ids=["replaced", "emptied"])
def test_file_meta_says_what_the_data_set_says(tmp_path: Path, written: str) -> None:
    """Stale Media Storage UIDs in the meta give way to the written SOP Class/Instance UIDs."""
    ds = make_dataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    read = read_file(_plain(tmp_path, ds))
    read.SOPInstanceUID = written
    out = dcmread(write(read, tmp_path / "out.dcm"))
    assert out.file_meta.get("MediaStorageSOPInstanceUID", "") == written == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == CTImageStorage == out.SOPClassUID


def test_object_without_sop_instance_keeps_its_meta_uid(tmp_path: Path) -> None:
    """A DICOMDIR has no SOP Instance UID: its meta's Media Storage UIDs are kept."""
    source = bundled("DICOMDIR")
    out = dcmread(write(read_file(source), tmp_path / "DICOMDIR"))
    original = dcmread(source)
    assert out.file_meta.MediaStorageSOPInstanceUID == (
        original.file_meta.MediaStorageSOPInstanceUID
    )
    assert out.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"


def test_implicit_vr_whose_first_length_looks_like_letters_is_read_as_implicit() -> None:
    """A first element of 324 bytes (length bytes "D\\x01") is still read as implicit VR."""
    value = b"\\".join([b"ORIGINAL", b"PRIMARY"] * 18)
    value += b" " * (324 - len(value))
    name = b"IMPLICIT^ANNA"
    data = (
        struct.pack("<HHL", 0x0008, 0x0008, len(value))
        + value
        + struct.pack("<HHL", 0x0010, 0x0010, len(name) + len(name) % 2)
        + name
        + b" " * (len(name) % 2)
    )
    assert data[4:6] == b"D\x01"
    ds = read_bytes(data, "implicit.dcm")
    assert str(ds.PatientName) == "IMPLICIT^ANNA"
    assert list(ds.ImageType)[:2] == ["ORIGINAL", "PRIMARY"]


def test_deflated_image_frame_compression_keeps_a_plain_data_set(tmp_path: Path) -> None:
    """1.2.840.10008.1.2.8.1 deflates frames only: its data set is read as explicit VR LE."""
    ds = make_dataset()
    del ds.PixelData  # (frames would be encapsulated; the data set is what is tested)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.8.1")
    path = tmp_path / "frames.dcm"
    ds.preamble = b"\0" * 128
    dcmwrite(path, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    read = read_file(path)
    assert str(read.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.8.1"
    assert (str(read.PatientID), str(read.PatientName)) == ("PID-4711", "DOE^JANE^Q")
