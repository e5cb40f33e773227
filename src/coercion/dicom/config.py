"""pydicom settings that keep element values out of warnings and logs."""

from __future__ import annotations

from pydicom import config

__all__ = ["silence_pydicom_validation"]


def silence_pydicom_validation() -> None:
    """Stop pydicom from validating values: its messages quote the value (PHI).

    pydicom reports a bad value with a warning *and* a log record that both
    contain the value. coercion never relies on that validation, so it is
    switched off process-wide whenever coercion reads or changes a dataset.
    """
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
