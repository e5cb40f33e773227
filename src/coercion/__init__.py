"""coercion: DICOM attribute coercion and PS3.15 de-identification for image archives."""

import logging
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from coercion.profile import Action, Deidentifier, Option, compile_profile, parse_options

__version__ = "0.1.0"
#: Names of :mod:`coercion.profile` offered here, imported on first use: importing
#: ``coercion`` (the command line does, first) loads neither the profile nor pydicom.
_PROFILE_NAMES = frozenset({"Action", "Deidentifier", "Option", "compile_profile", "parse_options"})


def __getattr__(name: str) -> object:
    """The :mod:`coercion.profile` name *name*, imported on first use."""
    if name in _PROFILE_NAMES:
        from coercion import profile

        return getattr(profile, name)
    raise AttributeError(f"module 'coercion' has no attribute {name!r}")


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
