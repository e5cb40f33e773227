"""The exception hierarchy of coercion.

Every error the project raises on purpose derives from :class:`CoercionError`
and carries the exit status the command line uses for it::

    CoercionError                 (1)
    +-- ConfigError               (2)  bad option, URI, rule entry or key file
    +-- DirectoryUnavailableError (3)  the LDAP directory cannot be reached
    +-- InputError                (4)  a source file is missing, not DICOM or malformed
        +-- MalformedDataError    (4)  a data set's structure or an instance UID is broken
    +-- RuleFailedError           (5)  a coercion rule failed on one object
    +-- StoreError                (6)  the pseudonym store failed
    +-- OutputError               (7)  an output could not be written
        +-- VerificationError     (8)  an output still holds an identifying value

Messages have the shape ``<where>: <what>; <hint>`` and never contain an
element value: they name files, entries, attributes and tags instead.
"""

from __future__ import annotations

__all__ = [
    "CoercionError",
    "ConfigError",
    "DirectoryUnavailableError",
    "InputError",
    "MalformedDataError",
    "OutputError",
    "RuleFailedError",
    "StoreError",
    "VerificationError",
]


class CoercionError(Exception):
    """Base class of every error raised by coercion."""

    exit_code: int = 1


class ConfigError(CoercionError):
    """A configuration value is wrong: option name, URI, rule entry, key file."""

    exit_code = 2


class DirectoryUnavailableError(CoercionError):
    """The configuration directory cannot be reached and no snapshot can stand in."""

    exit_code = 3


class InputError(CoercionError):
    """A source object is missing, is not DICOM, or is malformed."""

    exit_code = 4


class MalformedDataError(InputError):
    """A data set is not whole (cut short, impossible length, stray delimiter, too deep) or an
    instance UID it must carry is missing or invalid.

    *summary* is a short description without any value (at most 64 characters), fit for the
    Error Comment of a DIMSE status: ``malformed data set: (7FE0,0010)``.
    """

    def __init__(self, message: str, summary: str) -> None:
        super().__init__(message)
        self.summary = summary[:64]


class RuleFailedError(CoercionError):
    """A coercion rule could not be applied to an object."""

    exit_code = 5


class StoreError(CoercionError):
    """The pseudonym store could not be read or written."""

    exit_code = 6


class OutputError(CoercionError):
    """An output file could not be written."""

    exit_code = 7


class VerificationError(OutputError):
    """An output still contains an identifying value of its source."""

    exit_code = 8
