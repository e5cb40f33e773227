"""pydicom settings: how it is loaded, and no validation (its messages quote values)."""

from __future__ import annotations

import sys

__all__ = ["load_pydicom_without_numpy", "silence_pydicom_validation"]


def load_pydicom_without_numpy() -> None:
    """Import pydicom without numpy, for a process that never decodes pixel data.

    pydicom's ``config`` imports its pixel data handlers, and they import
    numpy when it is installed: about a third of the command line's start-up.
    coercion copies pixel data as the bytes that were read and never decodes
    it, so the command line hides numpy while pydicom loads (pydicom then
    reports pixel decoding as unavailable; numpy itself stays importable).
    Does nothing when pydicom or numpy is loaded already: a program that
    imported either keeps pydicom as it would have loaded it.
    """
    if "pydicom" in sys.modules or "numpy" in sys.modules:
        return
    sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` raises ImportError
    try:
        import pydicom.config  # noqa: F401  # loaded now, with numpy hidden
    finally:
        del sys.modules["numpy"]


def silence_pydicom_validation() -> None:
    """Stop pydicom from validating values: its messages quote the value (PHI).

    pydicom reports a bad value with a warning *and* a log record that both
    contain the value. coercion never relies on that validation, so it is
    switched off process-wide whenever coercion reads or changes a dataset.
    """
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
