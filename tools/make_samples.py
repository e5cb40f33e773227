#!/usr/bin/env python3
"""Write the synthetic sample folder ``samples/dicom`` used by the README's main command.

Two made-up patients, one CT study each, three small slices per study, with
identifying values at the top level, in nested sequences, in a private block
and in an overlay. Deterministic: running it again gives the same bytes.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

OUT = Path(__file__).resolve().parent.parent / "samples" / "dicom"
ROOT_UID = "1.2.826.0.1.3680043.10.1234."
PATIENTS = (("SAMPLE^ALICE", "SAMPLE-0001", "19650412"), ("SAMPLE^BOB", "SAMPLE-0002", "19801130"))


def uid(*parts: object) -> str:
    """A fixed UID under a fixed root, from a label."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return ROOT_UID + str(int(digest[:24], 16))


def slice_dataset(patient: tuple[str, str, str], number: int) -> Dataset:
    """One 16x16 CT slice of *patient*."""
    name, pid, birth = patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(pid, "image", number)
    ds.StudyInstanceUID = uid(pid, "study")
    ds.SeriesInstanceUID = uid(pid, "series")
    ds.FrameOfReferenceUID = uid(pid, "frame")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, birth, "O"
    ds.AccessionNumber = f"ACC{pid[-4:]}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260310"
    ds.StudyTime = "081500"
    ds.Modality = "CT"
    ds.InstitutionName = "Sample General Hospital"
    ds.ReferringPhysicianName = "SAMPLE^REFERRER"
    ds.StudyDescription = f"CT chest {name.split('^', 1)[1].title()}"
    ds.InstanceNumber = number
    request = Dataset()
    request.AccessionNumber = ds.AccessionNumber
    request.RequestedProcedureID = f"RP{pid[-4:]}"
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = uid(pid, "image", 1)
    request.ReferencedStudySequence = [reference]
    ds.RequestAttributesSequence = [request]
    source = Dataset()
    source.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedSOPInstanceUID = uid(pid, "image", 1)
    ds.SourceImageSequence = [source]
    ds.add_new(0x00190010, "LO", "SAMPLE PRIVATE")
    ds.add_new(0x00191001, "LO", name)
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(32))
    ds.PixelData = bytes((i * 7 + number) % 256 for i in range(16 * 16 * 2))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def main() -> int:
    """Write the sample folder."""
    for patient in PATIENTS:
        for number in (1, 2, 3):
            path = OUT / patient[1] / f"slice{number}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            slice_dataset(patient, number).save_as(path, enforce_file_format=True)
    print(f"{OUT}: {len(PATIENTS) * 3} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
