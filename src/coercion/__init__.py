"""coercion: DICOM attribute coercion and PS3.15 de-identification for image archives."""

import logging

from coercion.errors import (
    CoercionError,
    ConfigError,
    DirectoryUnavailableError,
    InputError,
    OutputError,
    RuleFailedError,
    StoreError,
    VerificationError,
)
from coercion.profile import Action, Deidentifier, Option, compile_profile, parse_options

__version__ = "0.1.0"

__all__ = [
    "Action",
    "CoercionError",
    "ConfigError",
    "Deidentifier",
    "DirectoryUnavailableError",
    "InputError",
    "Option",
    "OutputError",
    "RuleFailedError",
    "StoreError",
    "VerificationError",
    "__version__",
    "compile_profile",
    "parse_options",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
