"""DICOMDIR: a source File-set's directory rebuilt over the de-identified outputs.

The records of a DICOMDIR copy attributes of the instances they reference
(patient names and ids, study dates, UIDs) and point at each other by byte
offset and at the instances by path. De-identified as a plain data set, it
would keep neither right. The batch therefore sets a DICOMDIR aside,
de-identifies the files it references as usual, and then builds a new
DICOMDIR with pydicom's File-set support (:class:`pydicom.fileset.FileSet`)
from the written outputs: every record is made from a de-identified
instance, and references that instance's output path.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import UID, MediaStorageDirectoryStorage, generate_uid

from coercion.dicom.elements import joined_text, text_values
from coercion.dicom.outputs import output_file
from coercion.dicom.part10 import quiet_pydicom, read_file
from coercion.errors import OutputError, VerificationError
from coercion.profile.identifiers import Identifiers, collect_identifiers
from coercion.profile.verify import Retention, find_leaks

log = logging.getLogger(__name__)

__all__ = [
    "MEDIA_STORAGE_DIRECTORY",
    "build_directory",
    "directory_identifiers",
    "is_directory",
    "record_text",
    "referenced_files",
    "write_directory_file",
]

#: Media Storage Directory Storage: the SOP Class of a DICOMDIR (PS3.10 7.2).
MEDIA_STORAGE_DIRECTORY = MediaStorageDirectoryStorage
_MEDIA_STORAGE_SOP_CLASS = 0x00020002
_DIRECTORY_RECORD_SEQUENCE = 0x00041220
_REFERENCED_FILE_ID = 0x00041500
#: The Type 1 text and number keys of the directory records pydicom makes (PS3.3 F.5).
_RECORD_KEYS = (
    "StudyDate",
    "StudyTime",
    "StudyID",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "InstanceCreationDate",
    "VerificationDateTime",
    "DoseSummationType",
    "RTPlanLabel",
    "StructureSetLabel",
    "Manufacturer",
)
_RECORD_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "IS": "0", "CS": "OT"}


def is_directory(ds: Dataset) -> bool:
    """True when *ds* is a DICOMDIR (its file meta names Media Storage Directory Storage)."""
    meta = getattr(ds, "file_meta", None)
    return meta is not None and text_values(meta, _MEDIA_STORAGE_SOP_CLASS) == [
        MEDIA_STORAGE_DIRECTORY
    ]


def _records(ds: Dataset) -> list[Dataset]:
    elem = ds.get(_DIRECTORY_RECORD_SEQUENCE)
    return list(elem.value or ()) if elem is not None else []


def referenced_files(ds: Dataset, path: Path) -> list[Path]:
    """The files the records of DICOMDIR *ds*, read from *path*, reference (resolved).

    A File ID is relative to the DICOMDIR's folder; one that leads outside
    it is ignored, as pydicom's File-set refuses it.
    """
    root = path.parent.resolve()
    found: list[Path] = []
    for record in _records(ds):
        components = text_values(record, _REFERENCED_FILE_ID)
        if not components:
            continue
        target = root.joinpath(*components).resolve()
        if target.is_relative_to(root) and target not in found:
            found.append(target)
    return found


def directory_identifiers(ds: Dataset) -> Identifiers:
    """The identifying values of every record of DICOMDIR *ds* (what verification looks for)."""
    found = Identifiers()
    for record in _records(ds):
        for value in collect_identifiers(record).values:
            if value not in found.values:
                found.values.append(value)
    return found


def record_text(data: bytes) -> bytes:
    """Every value of every record of the encoded DICOMDIR *data* but File IDs (to verify).

    A File ID is the output's own path: without ``--rename`` the mirrored
    source path, a name the user chose to keep.
    """
    with quiet_pydicom():
        ds = dcmread(BytesIO(data))
        values = [
            str(elem.value)
            for record in _records(ds)
            for elem in _walk(record)
            if int(elem.tag) != _REFERENCED_FILE_ID
        ]
    return "\n".join(values).encode("utf-8")


def _walk(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _walk(item)
        else:
            yield elem


def build_directory(outputs: Iterable[Path], root: Path, uid: str) -> bytes:
    """The DICOMDIR of a File-set rooted at *root* whose records reference *outputs*.

    *outputs* lie under *root*. The records are built by
    :class:`~pydicom.fileset.FileSet` from the outputs themselves (read
    without pixel data); *uid* becomes the File-set UID. pydicom lays a new
    File-set out in its own folders, so the File-set is first written to a
    temporary folder from header-only copies; those are then moved to the
    outputs' relative paths, each leaf record is pointed at its path, and
    pydicom writes the directory anew, offsets and all (``use_existing``).
    Raises :class:`OutputError` when pydicom cannot make a record.
    """
    with quiet_pydicom(), tempfile.TemporaryDirectory(prefix="coercion-fileset-") as tmp:
        staging = Path(tmp)
        fs = FileSet()
        relative: dict[str, Path] = {}
        for output in outputs:
            try:
                ds = _with_record_keys(dcmread(output, stop_before_pixels=True))
                relative.setdefault(str(ds.SOPInstanceUID), output.relative_to(root))
                fs.add(ds)
            except (AttributeError, KeyError, ValueError) as exc:
                raise OutputError(
                    f"{output}: cannot make a DICOMDIR record for it "
                    f"({exc.__class__.__name__}); DICOMDIR not written"
                ) from None
        fs.write(staging)
        _relocate(fs, staging, relative)
        # A change pydicom writes with the relocated records.
        fs.UID = UID(uid) if uid else generate_uid()
        fs.write(use_existing=True)
        data = (staging / "DICOMDIR").read_bytes()
        # A FileSet keeps a temporary folder that only its finalizer removes, with a
        # ResourceWarning: collected here, where pydicom's warnings are silenced.
        del fs
        gc.collect()
        return data


def _with_record_keys(ds: Dataset) -> Dataset:
    """*ds* with a dummy value for each record key (PS3.3 F.5) that is empty or absent.

    A directory record needs a value where the instance may have none after
    de-identification (Study Date, Study Time and Study ID are Z in Table
    E.1-1): as for D, a value of the VR that says nothing. Only the record
    sees it; the output itself is not changed.
    """
    for keyword in _RECORD_KEYS:
        if keyword not in ds or ds[keyword].VM == 0:
            setattr(ds, keyword, _RECORD_DUMMY.get(dictionary_VR(keyword), "UNKNOWN"))
    return ds


def _relocate(fs: FileSet, staging: Path, relative: dict[str, Path]) -> None:
    """Move each staged copy to its output's relative path and point its record there."""
    instances = list(fs)
    parked = staging / f".parked-{uuid.uuid4().hex}"
    parked.mkdir()
    # Park every copy first: an output path may be where pydicom put another copy.
    for index, instance in enumerate(instances):
        os.replace(instance.path, parked / str(index))
    for index, instance in enumerate(instances):
        path = relative[str(instance.SOPInstanceUID)]
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(parked / str(index), staging / path)
        instance["ReferencedFileID"].value = list(path.parts)


def write_directory_file(
    target: Path,
    sources: list[Path],
    outputs: dict[Path, Path],
    *,
    uid: Callable[[str], str],
    resume: bool = False,
    retention: Retention | None = None,
) -> str:
    """Write at *target* the DICOMDIR of the outputs of the files *sources* reference.

    *sources* are source DICOMDIRs (several when ``--rename`` gathers every
    output under one root); *outputs* maps each de-identified source file
    (resolved) to its output. A referenced file without an output (failed,
    or outside the batch) is left out. *uid* maps the source File-set UID to
    the new one. With *retention*, the records are verified to hold none of
    the source records' identifying values. Returns ``written`` or
    ``resumed`` (with *resume*, when *target* exists).
    """
    if resume and target.exists():
        return "resumed"
    root = target.parent
    referenced: dict[Path, None] = {}
    identifiers = Identifiers()
    original_uid = ""
    for source in sources:
        ds = read_file(source, defer=False)
        original_uid = original_uid or joined_text(ds.file_meta, 0x00020003)
        wanted = referenced_files(ds, source)
        found = [outputs[p] for p in wanted if p in outputs and outputs[p].is_relative_to(root)]
        if len(found) < len(wanted):
            log.info("%s: %d referenced files have no output", source, len(wanted) - len(found))
        referenced.update(dict.fromkeys(found))
        identifiers.values += directory_identifiers(ds).values
    data = build_directory(referenced, root, uid(original_uid) if original_uid else "")
    if retention is not None:
        leaks = find_leaks(record_text(data), identifiers, retention)
        if leaks:
            raise VerificationError(
                f"{target}: DICOMDIR records still hold identifying values of "
                f"{', '.join(leaks)}; nothing written"
            )
    with output_file(target) as fd, open(fd, "wb", closefd=False) as handle:
        handle.write(data)
    return "written"
