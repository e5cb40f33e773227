"""The DICOM node: pynetdicom services whose DIMSE events go through the engine."""
