"""Generate the synthetic DICOM data sets the de-identification benchmarks run on.

Two data sets are written below ``OUTDIR``:

``ct/``
    One CT series (one patient, one study): ``--ct-slices`` slices of 512x512 ``uint16``.
    The default 300 slices are about 157 MB.
``mr/``
    ``--mr-files`` small MR images (128x128 ``uint16``) spread over 30 studies of
    10 patients (3 studies each, 2 series per study), in ``mr/Pnn/Snn/SEn/`` folders.

Every file is Explicit VR Little Endian with a proper file meta header and carries made-up
PHI the way real objects do: at the top level (names, IDs, birth date, accession number,
institution, physicians, dates and times, free-text comments), inside sequences nested up to
four levels deep, in private blocks (including safe private attributes of PS3.15
Table E.3.10-1) and in an overlay plane (group 6000). The words of patient names and IDs
("BENCH", "PATIENT", ...) occur only in attributes that hold PHI, never in equipment, code
or description values, so an output check that searches for them finds only real leaks.

The output is deterministic: pixel data come from seeded numpy generators, UIDs are
SHA-512 derived from fixed strings under pydicom's root, and dates are fixed. Running the
generator twice gives byte-identical files. A marker file ``OUTDIR/.make_data.json`` records
the parameters; when it matches, nothing is regenerated.

Usage::

    python benchmarks/make_data.py OUTDIR [--ct-slices 300] [--mr-files 3000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

__all__ = ["DEFAULT_CT_SLICES", "DEFAULT_MR_FILES", "ensure_data", "main"]

#: Bump when the content of the generated files changes, so stale data are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".make_data.json"

DEFAULT_CT_SLICES = 300
DEFAULT_MR_FILES = 3000
MR_PATIENTS = 10
MR_STUDIES = 30
MR_SERIES_PER_STUDY = 2

CT_MATRIX = 512
MR_MATRIX = 128
CT_SEED = 20_240_601
MR_SEED = 20_240_602

#: Detached Study Management SOP Class, the usual Referenced SOP Class in ReferencedStudySequence.
DETACHED_STUDY_MANAGEMENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
#: Modality Performed Procedure Step SOP Class.
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"


def bench_uid(*parts: object) -> UID:
    """Return a fixed UID under pydicom's root, derived from ``parts`` by SHA-512."""
    return generate_uid(PYDICOM_ROOT_UID, ["coercion-benchmark/" + "/".join(map(str, parts))])


@dataclass(frozen=True)
class Patient:
    """A made-up patient; every field is synthetic PHI."""

    index: int
    name: str
    patient_id: str
    birth_date: str
    sex: str
    mother_birth_name: str
    address: str
    phone: str


@dataclass(frozen=True)
class Study:
    """A made-up study of a :class:`Patient`."""

    patient: Patient
    index: int
    uid: str
    day: date
    time: str
    accession: str
    study_id: str
    description: str
    referring: str


def make_patient(index: int) -> Patient:
    """Return synthetic patient number ``index`` (0-based)."""
    number = index + 1
    birth = date(1941, 3, 14) + timedelta(days=1_327 * index)
    return Patient(
        index=index,
        name=f"BENCH^PATIENT^{number:02d}",
        patient_id=f"BENCH{number:04d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex="MF"[index % 2],
        mother_birth_name=f"MOTHER^MAIDEN^{number:02d}",
        address=f"{number} Synthetic Street, Synthtown",
        phone=f"+1-555-01{number:02d}",
    )


def make_study(patient: Patient, index: int, modality: str) -> Study:
    """Return synthetic study number ``index`` (0-based, unique per data set) of ``patient``."""
    number = index + 1
    day = date(2023, 1, 9) + timedelta(days=17 * index)
    return Study(
        patient=patient,
        index=index,
        uid=bench_uid(modality, "study", index),
        day=day,
        time=f"{8 + index % 10:02d}{(7 * index) % 60:02d}{(13 * index) % 60:02d}.{number:06d}",
        accession=f"ACC{day:%Y%m%d}{number:04d}",
        study_id=f"S{number:05d}",
        description=f"{modality} ROUTINE STUDY {number:02d}",
        referring=f"REFERRER^REGINA^{number:02d}^DR",
    )


def set_attributes(ds: Dataset, values: Mapping[str, object]) -> None:
    """Set each DICOM keyword in ``values`` on ``ds``."""
    for keyword, value in values.items():
        setattr(ds, keyword, value)


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """Return a Code Sequence Macro item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _person_identification(name: str, code: str) -> Dataset:
    """Return a Person Identification Macro item: a nested code plus institution PHI."""
    item = Dataset()
    item.PersonIdentificationCodeSequence = Sequence([_code_item(code, "99SYNHR", name)])
    item.PersonAddress = "1 Staff Road, Synthtown"
    item.PersonTelephoneNumbers = "+1-555-0100"
    item.InstitutionName = "Synthetic General Hospital"
    item.InstitutionAddress = "100 Hospital Way, Synthtown"
    return item


def _request_attributes(study: Study, series_uid: str, sop_class: str) -> Dataset:
    """Return a RequestAttributesSequence item with PHI nested three and four levels deep."""
    sop_ref = Dataset()  # level 3: RequestAttributes > ReferencedStudy > ReferencedSOP
    sop_ref.ReferencedSOPClassUID = sop_class
    sop_ref.ReferencedSOPInstanceUID = bench_uid(series_uid, "prior-image")
    sop_ref.PurposeOfReferenceCodeSequence = Sequence(  # level 4
        [_code_item("121311", "DCM", "Localizer")]
    )
    study_ref = Dataset()  # level 2
    study_ref.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT_SOP_CLASS
    study_ref.ReferencedSOPInstanceUID = study.uid
    study_ref.ReferencedSOPSequence = Sequence([sop_ref])

    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "SYNTH_RIS"

    item = Dataset()  # level 1
    item.AccessionNumber = study.accession
    item.IssuerOfAccessionNumberSequence = Sequence([issuer])
    item.StudyInstanceUID = study.uid
    item.RequestedProcedureID = f"RP{study.index + 1:05d}"
    item.RequestedProcedureDescription = study.description
    item.ScheduledProcedureStepID = f"SPS{study.index + 1:05d}"
    item.ScheduledProcedureStepDescription = f"{study.description} for {study.patient.name}"
    item.ScheduledProtocolCodeSequence = Sequence([_code_item("SYN01", "99SYNTH", "Routine")])
    item.ReasonForTheRequestedProcedure = f"Follow-up of {study.patient.patient_id}"
    item.ReferencedStudySequence = Sequence([study_ref])
    return item


def add_patient_and_study(ds: Dataset, study: Study, series_uid: str, sop_class: str) -> None:
    """Add patient, study and request attributes (with PHI) shared by all files."""
    add_patient(ds, study)
    day = f"{study.day:%Y%m%d}"
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "SYNTH_RIS"
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT_SOP_CLASS
    study_ref.ReferencedSOPInstanceUID = study.uid
    pps = Dataset()
    pps.ReferencedSOPClassUID = MPPS_SOP_CLASS
    pps.ReferencedSOPInstanceUID = bench_uid(series_uid, "mpps")
    referring_id = _person_identification(study.referring, f"RP{study.index:04d}")
    set_attributes(
        ds,
        {
            "InstanceCreationDate": day,
            "InstanceCreationTime": study.time,
            "StudyDate": day,
            "SeriesDate": day,
            "AcquisitionDate": day,
            "ContentDate": day,
            "StudyTime": study.time,
            "SeriesTime": study.time,
            "AcquisitionTime": study.time,
            "ContentTime": study.time,
            "AccessionNumber": study.accession,
            "IssuerOfAccessionNumberSequence": Sequence([issuer]),
            "InstitutionName": "Synthetic General Hospital",
            "InstitutionAddress": "100 Hospital Way, Synthtown",
            "InstitutionalDepartmentName": "Radiology",
            "ReferringPhysicianName": study.referring,
            "ReferringPhysicianTelephoneNumbers": "+1-555-0199",
            "ReferringPhysicianIdentificationSequence": Sequence([referring_id]),
            "StudyDescription": study.description,
            "PhysiciansOfRecord": "RECORD^ROBERT^^DR",
            "NameOfPhysiciansReadingStudy": "READER^RACHEL^^DR",
            "OperatorsName": ["OPERATOR^OLGA", "OPERATOR^OTTO"],
            "OperatorIdentificationSequence": Sequence(
                [_person_identification("OPERATOR^OLGA", "OP0001")]
            ),
            "ReferencedStudySequence": Sequence([study_ref]),
            "ReferencedPerformedProcedureStepSequence": Sequence([pps]),
            "ProcedureCodeSequence": Sequence([_code_item("SYNP1", "99SYNTH", study.description)]),
            "StudyInstanceUID": study.uid,
            "StudyID": study.study_id,
            "PerformedProcedureStepStartDate": day,
            "PerformedProcedureStepStartTime": study.time,
            "PerformedProcedureStepID": f"PPS{study.index + 1:05d}",
            "PerformedProcedureStepDescription": study.description,
            "RequestAttributesSequence": Sequence(
                [_request_attributes(study, series_uid, sop_class)]
            ),
        },
    )


def add_patient(ds: Dataset, study: Study) -> None:
    """Add the Patient module (with PHI) for the patient of ``study``."""
    patient = study.patient
    other_id = Dataset()
    other_id.PatientID = f"MRN{patient.index + 1:07d}"
    other_id.IssuerOfPatientID = "SYNTH_MPI"
    other_id.TypeOfPatientID = "TEXT"
    set_attributes(
        ds,
        {
            "PatientName": patient.name,
            "PatientID": patient.patient_id,
            "IssuerOfPatientID": "SYNTH_HIS",
            "PatientBirthDate": patient.birth_date,
            "PatientSex": patient.sex,
            "PatientAge": f"{study.day.year - int(patient.birth_date[:4]):03d}Y",
            "PatientSize": "1.75",
            "PatientWeight": "72.5",
            "OtherPatientIDsSequence": Sequence([other_id]),
            "OtherPatientNames": patient.name.replace("PATIENT", "ALIAS"),
            "PatientBirthName": patient.name.replace("PATIENT", "BIRTH"),
            "PatientMotherBirthName": patient.mother_birth_name,
            "PatientAddress": patient.address,
            "PatientTelephoneNumbers": patient.phone,
            "AdditionalPatientHistory": f"History of {patient.name}, seen {study.day:%Y%m%d}",
            "PatientComments": f"Contact {patient.phone}",
        },
    )


def add_overlay(ds: Dataset, rows: int, columns: int) -> None:
    """Add an overlay plane in group 6000 (a frame around the image and a diagonal)."""
    ds.add_new(0x60000010, "US", rows)  # OverlayRows
    ds.add_new(0x60000011, "US", columns)  # OverlayColumns
    ds.add_new(0x60000022, "LO", "SYNTHETIC ANNOTATION")  # OverlayDescription
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60003000, "OW", overlay_bytes(rows, columns))  # OverlayData


@cache
def overlay_bytes(rows: int, columns: int) -> bytes:
    """Return packed 1-bit overlay data (little bit order, padded to an even length)."""
    mask = np.zeros((rows, columns), dtype=np.uint8)
    border = max(2, rows // 64)
    mask[:border, :] = mask[-border:, :] = 1
    mask[:, :border] = mask[:, -border:] = 1
    diagonal = np.arange(min(rows, columns))
    mask[diagonal, diagonal] = 1
    packed = np.packbits(mask.ravel(), bitorder="little").tobytes()
    return packed + b"\0" * (len(packed) % 2)


def add_image_pixels(ds: Dataset, pixels: NDArray[np.uint16], bits_stored: int) -> None:
    """Add the Image Pixel module for a single-frame MONOCHROME2 ``uint16`` image."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2", copy=False).tobytes()
    ds["PixelData"].VR = "OW"


def new_file_dataset(sop_class: UID, sop_instance: UID) -> Dataset:
    """Return an empty dataset with file meta for Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SYNTH_DATA_1"
    meta.SourceApplicationEntityTitle = "SYNTH_MODALITY"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _ellipse(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float
) -> NDArray[np.bool_]:
    """Return a boolean mask of an axis-aligned ellipse (centre and radii in pixels)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def ct_pixels(index: int, slices: int) -> NDArray[np.uint16]:
    """Return slice ``index`` of a chest-like phantom, stored values = HU + 1024 (12 bits)."""
    n = CT_MATRIX
    phase = index / max(1, slices - 1)
    shape = (n, n)
    image = np.zeros(shape, dtype=np.float32)  # air
    grow = 1.0 + 0.08 * np.sin(np.pi * phase)
    image[_ellipse(shape, n * 0.5, n * 0.5, n * 0.30 * grow, n * 0.42 * grow)] = 1064  # soft tissue
    lung_ry, lung_rx = n * 0.20 * grow, n * 0.13 * grow
    image[_ellipse(shape, n * 0.47, n * 0.32, lung_ry, lung_rx)] = 224  # lungs
    image[_ellipse(shape, n * 0.47, n * 0.68, lung_ry, lung_rx)] = 224
    image[_ellipse(shape, n * 0.72, n * 0.5, n * 0.045, n * 0.045)] = 1724  # spine
    rng = np.random.default_rng((CT_SEED, index))
    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


def mr_pixels(index: int) -> NDArray[np.uint16]:
    """Return a small head-like MR phantom for file ``index`` (12 bits)."""
    n = MR_MATRIX
    shape = (n, n)
    rng = np.random.default_rng((MR_SEED, index))
    image = np.zeros(shape, dtype=np.float32)
    image[_ellipse(shape, n * 0.5, n * 0.5, n * 0.42, n * 0.34)] = 700
    image[_ellipse(shape, n * 0.5, n * 0.5, n * 0.36, n * 0.28)] = 1100 + 10 * (index % 20)
    image[_ellipse(shape, n * 0.45, n * 0.42, n * 0.08, n * 0.05)] = 400
    image[_ellipse(shape, n * 0.45, n * 0.58, n * 0.08, n * 0.05)] = 400
    noise = rng.normal(0.0, 20.0, size=(2, *shape)).astype(np.float32)
    magnitude: NDArray[np.float32] = np.hypot(image + noise[0], noise[1])  # Rician, like |MR|
    return np.clip(np.rint(magnitude), 0, 4095).astype(np.uint16)


#: CT attributes that are the same on every slice (equipment, acquisition, presentation).
CT_FIXED: dict[str, object] = {
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
    "Modality": "CT",
    "Manufacturer": "GE MEDICAL SYSTEMS",
    "ManufacturerModelName": "SynthSpeed 64",
    "StationName": "CTSYN01",
    "DeviceSerialNumber": "CT-000123",
    "SoftwareVersions": "synth_1.0",
    "SeriesDescription": "CHEST 1.25mm STD",
    "BodyPartExamined": "CHEST",
    "ContrastBolusAgent": "OMNIPAQUE 350",
    "ScanOptions": "HELICAL MODE",
    "SliceThickness": "1.25",
    "SpacingBetweenSlices": "1.25",
    "KVP": "120",
    "DataCollectionDiameter": "500.0",
    "ReconstructionDiameter": "500.0",
    "GantryDetectorTilt": "0.0",
    "TableHeight": "160.0",
    "RotationDirection": "CW",
    "ExposureTime": "700",
    "XRayTubeCurrent": "250",
    "Exposure": "175",
    "FilterType": "BODY FILTER",
    "ConvolutionKernel": "STANDARD",
    "PatientPosition": "HFS",
    "SeriesNumber": 2,
    "AcquisitionNumber": 1,
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
    "PositionReferenceIndicator": "SN",
    "BurnedInAnnotation": "NO",
    "PixelSpacing": [0.976562, 0.976562],
    "WindowCenter": ["40", "-600"],
    "WindowWidth": ["400", "1500"],
    "RescaleIntercept": "-1024",
    "RescaleSlope": "1",
    "RescaleType": "HU",
}

#: MR attributes that are the same on every file; per-series values are set in mr_dataset.
MR_FIXED: dict[str, object] = {
    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
    "Modality": "MR",
    "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "SynthAvanto",
    "StationName": "MRSYN02",
    "DeviceSerialNumber": "MR-004567",
    "SoftwareVersions": "syngo MR SYN",
    "BodyPartExamined": "HEAD",
    "ScanningSequence": "SE",
    "SequenceVariant": ["SK", "SP"],
    "ScanOptions": "PFP",
    "MRAcquisitionType": "2D",
    "SequenceName": "*tse2d1_7",
    "SliceThickness": "5.0",
    "SpacingBetweenSlices": "6.0",
    "NumberOfAverages": "1.0",
    "ImagingFrequency": "63.676",
    "ImagedNucleus": "1H",
    "EchoNumbers": "1",
    "MagneticFieldStrength": "1.5",
    "EchoTrainLength": "7",
    "FlipAngle": "150.0",
    "SAR": "0.51",
    "PatientPosition": "HFS",
    "AcquisitionNumber": 1,
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
    "PositionReferenceIndicator": "",
    "BurnedInAnnotation": "NO",
    "PixelSpacing": [1.796875, 1.796875],
    "WindowCenter": "1100",
    "WindowWidth": "2000",
}


def ct_dataset(study: Study, index: int, slices: int) -> Dataset:
    """Return CT slice ``index`` of the CT series."""
    series_uid = bench_uid("ct", "series", 0)
    ds = new_file_dataset(CTImageStorage, bench_uid("ct", "image", index))
    add_patient_and_study(ds, study, series_uid, CTImageStorage)
    set_attributes(ds, CT_FIXED)
    z = -100.0 - 1.25 * index
    set_attributes(
        ds,
        {
            "AcquisitionDateTime": f"{study.day:%Y%m%d}{study.time}",
            "ProtocolName": f"CHEST ROUTINE {study.patient.patient_id}",
            "SeriesInstanceUID": series_uid,
            "InstanceNumber": index + 1,
            "ImagePositionPatient": [-250.0, -250.0, z],
            "SliceLocation": f"{z:.2f}",
            "FrameOfReferenceUID": bench_uid("ct", "frame-of-reference", 0),
            "IrradiationEventUID": bench_uid("ct", "irradiation", 0),
            "ImageComments": f"Scanned for {study.patient.name} by OPERATOR^OLGA",
        },
    )
    add_image_pixels(ds, ct_pixels(index, slices), bits_stored=12)

    ge_acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    ge_acq.add_new(0x23, "DS", "39.375")  # Table Speed: safe private
    ge_acq.add_new(0x24, "DS", f"{1.0 + 0.35 * index:.3f}")  # Mid Scan Time: safe private
    ge_acq.add_new(0x9E, "LO", "HELICAL_SYN")  # Internal Pulse Sequence Name: safe private
    ge_iden = ds.private_block(0x0009, "GEMS_IDEN_01", create=True)
    ge_iden.add_new(0x01, "LO", "GE_GENESIS_SYN")
    ge_iden.add_new(0x02, "SH", "CTSYN01")
    ge_iden.add_new(0x04, "SH", study.patient.patient_id)  # PHI in a private element
    add_philips_pet_block(ds, index)
    add_overlay(ds, CT_MATRIX, CT_MATRIX)
    return ds


def mr_dataset(study: Study, series: int, index: int, instance: int) -> Dataset:
    """Return MR file ``index`` (global), image ``instance`` of ``series`` in ``study``."""
    series_uid = bench_uid("mr", "series", study.index, series)
    ds = new_file_dataset(MRImageStorage, bench_uid("mr", "image", index))
    add_patient_and_study(ds, study, series_uid, MRImageStorage)
    set_attributes(ds, MR_FIXED)
    t2 = series % 2
    z = -40.0 + 6.0 * instance
    set_attributes(
        ds,
        {
            "SeriesDescription": ("T1_TSE_TRA", "T2_TSE_TRA")[t2],
            "ProtocolName": ("T1_TSE_TRA", "T2_TSE_TRA")[t2],
            "RepetitionTime": ("550.0", "4000.0")[t2],
            "EchoTime": ("12.0", "96.0")[t2],
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": series + 1,
            "InstanceNumber": instance + 1,
            "ImagePositionPatient": [-115.0, -115.0, z],
            "SliceLocation": f"{z:.2f}",
            "FrameOfReferenceUID": bench_uid("mr", "frame-of-reference", study.index),
            "ImageComments": f"{study.patient.name} DOB {study.patient.birth_date}",
        },
    )
    add_image_pixels(ds, mr_pixels(index), bits_stored=12)

    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x08, "CS", "IMAGE NUM 4")
    siemens.add_new(0x0C, "IS", "1000")  # B Value: safe private
    siemens.add_new(0x0D, "CS", "DIRECTIONAL")  # Diffusion Directionality: safe private
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x10, "OB", csa_blob(study.patient))  # opaque blob that holds PHI
    add_philips_pet_block(ds, index)
    add_overlay(ds, MR_MATRIX, MR_MATRIX)
    return ds


def csa_blob(patient: Patient) -> bytes:
    """Return a small opaque vendor blob that embeds the patient's name (even length)."""
    blob = b"SV10\x04\x03\x02\x01" + f"PatientName={patient.name};".encode() * 4
    return blob + b"\0" * (len(blob) % 2)


def add_philips_pet_block(ds: Dataset, index: int) -> None:
    """Add the Philips PET private block: xx00 and xx09 are safe private, xx10 is not."""
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    block.add_new(0x00, "DS", f"{0.000123 + index * 1e-7:.7f}")  # SUV Factor: safe private
    block.add_new(0x09, "DS", "0.0042")  # Activity Concentration Factor: safe private
    block.add_new(0x10, "LO", "TRIAL SITE 7")  # not on the safe list


def iter_ct_files(slices: int) -> Iterator[tuple[Path, Dataset]]:
    """Yield (relative path, dataset) for every CT slice."""
    study = make_study(make_patient(0), 0, "CT")
    for index in range(slices):
        yield Path("ct") / f"IM{index + 1:05d}.dcm", ct_dataset(study, index, slices)


def iter_mr_files(count: int) -> Iterator[tuple[Path, Dataset]]:
    """Yield (relative path, dataset) for ``count`` MR files over 30 studies of 10 patients."""
    patients = [make_patient(p) for p in range(MR_PATIENTS)]
    studies = [make_study(patients[s % MR_PATIENTS], s, "MR") for s in range(MR_STUDIES)]
    # Contiguous blocks of files per study, then per series within the study.
    starts = [s * count // MR_STUDIES for s in range(MR_STUDIES + 1)]
    for s, study in enumerate(studies):
        in_study = starts[s + 1] - starts[s]
        for local in range(in_study):
            series = local * MR_SERIES_PER_STUDY // max(1, in_study)
            first_of_series = -(-series * in_study // MR_SERIES_PER_STUDY)  # ceil division
            instance = local - first_of_series
            index = starts[s] + local
            folder = (
                Path("mr") / f"P{study.patient.index + 1:02d}" / f"S{s + 1:02d}" / f"SE{series + 1}"
            )
            yield folder / f"IM{instance + 1:04d}.dcm", mr_dataset(study, series, index, instance)


def _marker(ct_slices: int, mr_files: int) -> dict[str, int]:
    """Return the marker content describing a generated data folder."""
    return {"generator_version": GENERATOR_VERSION, "ct_slices": ct_slices, "mr_files": mr_files}


def ensure_data(outdir: Path, ct_slices: int, mr_files: int, *, quiet: bool = False) -> bool:
    """Generate ``outdir/ct`` and ``outdir/mr`` unless the marker says they are current.

    Returns ``True`` when files were (re)generated, ``False`` when they were up to date.
    """
    marker_path = outdir / MARKER_NAME
    wanted = _marker(ct_slices, mr_files)
    try:
        if json.loads(marker_path.read_text()) == wanted:
            return False
    except (OSError, ValueError):
        pass
    marker_path.unlink(missing_ok=True)
    for sub in ("ct", "mr"):
        shutil.rmtree(outdir / sub, ignore_errors=True)
    for label, files in (("ct", iter_ct_files(ct_slices)), ("mr", iter_mr_files(mr_files))):
        total = count = 0
        for relative, ds in files:
            path = outdir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            dcmwrite(path, ds, enforce_file_format=True)
            total += path.stat().st_size
            count += 1
        if not quiet:
            print(
                f"make_data: wrote {count} {label} files ({total / 1e6:.1f} MB) to {outdir / label}"
            )
    marker_path.write_text(json.dumps(wanted, indent=2) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder to write ct/ and mr/ into")
    parser.add_argument("--ct-slices", type=int, default=DEFAULT_CT_SLICES, metavar="N")
    parser.add_argument("--mr-files", type=int, default=DEFAULT_MR_FILES, metavar="N")
    args = parser.parse_args(argv)
    if args.ct_slices < 1 or args.mr_files < MR_STUDIES:
        parser.error(f"need --ct-slices >= 1 and --mr-files >= {MR_STUDIES}")
    if not ensure_data(args.outdir, args.ct_slices, args.mr_files):
        print(f"make_data: {args.outdir} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
