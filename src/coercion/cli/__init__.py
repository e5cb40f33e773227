"""The ``coercion`` command: one module per command group, shared options in :mod:`.config`.

The command line never decodes pixel data: pydicom is loaded without numpy
(:func:`~coercion.dicom.config.load_pydicom_without_numpy`) before anything
imports it.
"""

from coercion.dicom.config import load_pydicom_without_numpy

load_pydicom_without_numpy()

from coercion.cli.main import main  # noqa: E402  # pydicom is loaded above, without numpy

__all__ = ["main"]
