"""Reading, checking, encoding and writing DICOM Part 10 files and data sets."""
