"""A source DICOMDIR yields an output DICOMDIR over the de-identified files it references."""

from __future__ import annotations

import csv
import gc
import re
import shutil
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from coercion.profile.dicomdir import MEDIA_STORAGE_DIRECTORY
from tests.helpers import coercion

pytestmark = pytest.mark.integration

#: The identifying attributes looked for in the output records.
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "ReferencedSOPInstanceUIDInFile",
)


def dicomdir_tests() -> Path:
    """pydicom's DICOMDIR test folder (never downloaded)."""
    found = get_testdata_file("DICOMDIR", download=False)
    assert found is not None
    return Path(str(found)).parent


def file_set(path: Path) -> list[tuple[Path, str]]:
    """(path, SOP Instance UID) of every instance pydicom's FileSet loads from DICOMDIR *path*."""
    with warnings.catch_warnings():
        # pydicom must find every referenced file: its warning for a missing one fails here.
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ResourceWarning)  # FileSet's own temporary folder
        fs = FileSet(path)
        found = [(Path(instance.path), str(instance.SOPInstanceUID)) for instance in fs]
        del fs
        gc.collect()
    return found


def occurs(value: str, text: str) -> bool:
    """True when *value* occurs in *text* as a whole (not inside a longer number or UID)."""
    return re.search(rf"(?<![0-9A-Za-z.]){re.escape(value)}(?![0-9A-Za-z.])", text) is not None


def values(ds: Dataset, skip: int | None = None) -> list[str]:
    """Every value in *ds* at every depth as text, but the element *skip*."""
    found = []
    for elem in ds.iterall():
        if elem.VR != "SQ" and int(elem.tag) != skip:
            found += [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
    return found


def source_identifiers(source: Path) -> set[str]:
    """The identifying values of the source DICOMDIR's records and of the files they reference."""
    found: set[str] = set()
    directory = dcmread(source)
    for record in directory.DirectoryRecordSequence:
        found.update(str(record.get(k, "")) for k in IDENTIFYING)
        if "ReferencedFileID" in record:
            instance = dcmread(source.parent.joinpath(*record.ReferencedFileID))
            found.update(str(instance.get(k, "")) for k in IDENTIFYING)
    return {v for v in found if len(v) >= 3}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of pydicom's DICOMDIR File-set (31 instances of 3 patients) in tmp_path/src."""
    src = tmp_path / "src"
    shutil.copytree(
        dicomdir_tests(), src, ignore=shutil.ignore_patterns("TINY_ALPHA", "DICOMDIR-*")
    )
    return src


@pytest.mark.parametrize("rename", [False, True], ids=["mirrored", "renamed"])
def test_output_dicomdir_references_exactly_the_outputs(
    tmp_path: Path, source: Path, rename: bool
) -> None:
    """FileSet loads the output; each record names an output of a referenced file; no source id."""
    dst, key_file = tmp_path / "dst", tmp_path / "key.csv"
    args = ["deidentify", "--key", tmp_path / "k", "--key-file", key_file]
    result = coercion(*args, *(["--rename"] if rename else []), source, dst)
    assert result.returncode == 0, result.stderr
    with key_file.open(newline="") as handle:
        rows = {Path(r["source"]): dst / r["output"] for r in csv.DictReader(handle)}
    output = rows[source / "DICOMDIR"]
    assert output == dst / "DICOMDIR"
    written = dcmread(output)
    assert written.file_meta.MediaStorageSOPClassUID == MEDIA_STORAGE_DIRECTORY
    original = dcmread(source / "DICOMDIR")
    assert written.file_meta.MediaStorageSOPInstanceUID != (
        original.file_meta.MediaStorageSOPInstanceUID
    )

    referenced = {
        source.joinpath(*r.ReferencedFileID)
        for r in original.DirectoryRecordSequence
        if "ReferencedFileID" in r
    }
    instances = file_set(output)
    assert len(instances) == len(referenced) == 31
    assert {path for path, _uid in instances} == {rows[p] for p in referenced}
    for path, uid in instances:
        assert dcmread(path).SOPInstanceUID == uid

    needles = source_identifiers(source / "DICOMDIR")
    assert len(needles) > 40
    # Mirrored File IDs are the source's own folder names (one is a patient id): only
    # --rename gives names that say nothing, so only there are they looked at.
    skip = None if rename else 0x00041500
    text = "\n".join(v for record in written.DirectoryRecordSequence for v in values(record, skip))
    assert [v for v in needles if occurs(v, text)] == []
    if rename:
        data = output.read_bytes().decode("latin-1")
        assert [v for v in needles if occurs(v, data)] == []


def test_dicomdir_alone_gives_an_empty_file_set(tmp_path: Path, source: Path) -> None:
    """A DICOMDIR given without its files: an output DICOMDIR with no records, exit 0."""
    dst = tmp_path / "dst"
    result = coercion("deidentify", "--key", tmp_path / "k", source / "DICOMDIR", dst)
    assert result.returncode == 0, result.stderr
    assert file_set(dst / "DICOMDIR") == []
    assert len(dcmread(dst / "DICOMDIR").DirectoryRecordSequence) == 0


def test_referenced_file_that_fails_is_left_out(tmp_path: Path, source: Path) -> None:
    """A referenced file cut short fails (exit 1); the DICOMDIR references the 30 others."""
    cut = source / "77654033" / "CR1" / "6154"
    cut.write_bytes(cut.read_bytes()[:-100])
    dst = tmp_path / "dst"
    result = coercion("deidentify", "--key", tmp_path / "k", source, dst)
    assert result.returncode == 1
    assert f"failed {cut}: malformed DICOM: file is truncated in (7FE0,0010)" in result.stderr
    instances = file_set(dst / "DICOMDIR")
    assert len(instances) == 30
    assert dst / "77654033" / "CR1" / "6154" not in {path for path, _uid in instances}


def test_resume_keeps_the_dicomdir(tmp_path: Path, source: Path) -> None:
    """With --resume, an existing output DICOMDIR counts as done and is not rewritten."""
    dst = tmp_path / "dst"
    args = ("deidentify", "--key", tmp_path / "k", "--rename", source, dst)
    assert coercion(*args).returncode == 0
    before = (dst / "DICOMDIR").stat().st_mtime_ns
    again = coercion(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert "0 written, 32 already done" in again.stderr
    assert (dst / "DICOMDIR").stat().st_mtime_ns == before
    assert len(file_set(dst / "DICOMDIR")) == 31
