"""Synthetic test data shared by the test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

SECRET = bytes(range(32))


def make_dataset(patient: str = "DOE^JANE^Q", patient_id: str = "PID-4711") -> Dataset:
    """A small synthetic CT object with identifying values at the top level."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.1.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.1.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.99.1.4"
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700213"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC-0815"
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.SeriesDate = "20240301"
    ds.AcquisitionDateTime = "20240301102000.000000"
    ds.Modality = "CT"
    ds.InstitutionName = "Saint Example Hospital"
    ds.StudyDescription = f"CT head for {patient.split('^', 1)[0]}"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def coercion(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m coercion ARGS`` as a user would, with a wide terminal (tables not cut)."""
    return subprocess.run(
        [sys.executable, "-m", "coercion", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
        cwd=cwd,
    )
