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
    +-- IncompleteConversionError (9)  an imported configuration was not carried over whole

Messages have the shape ``<where>: <what>; <hint>`` and never contain an
element value: they name files, entries, attributes and tags instead. Each
error also has a ``kind``: a few words, never a value, fit for a DIMSE Error
Comment or a batch failure line (:func:`kind_of` gives one for any exception).

Third-party exceptions become these at the boundary that calls the library,
through :func:`map_errors`, never by hand::

    with map_errors({SQLAlchemyError: StoreError}, f"store {url}: cannot open"):
        engine = create_engine(url)
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "CoercionError",
    "ConfigError",
    "DirectoryUnavailableError",
    "IncompleteConversionError",
    "InputError",
    "MalformedDataError",
    "OutputError",
    "RuleFailedError",
    "StoreError",
    "VerificationError",
    "kind_of",
    "map_errors",
    "reason_of",
]


class CoercionError(Exception):
    """Base class of every error raised by coercion.

    *kind* (keyword) overrides the class's short description of the failure.
    """

    exit_code: int = 1
    kind: str = "failed"

    def __init__(self, *args: object, kind: str | None = None) -> None:
        super().__init__(*args)
        if kind is not None:
            self.kind = kind


class ConfigError(CoercionError):
    """A configuration value is wrong: option name, URI, rule entry, key file."""

    exit_code = 2
    kind = "configuration error"


class DirectoryUnavailableError(CoercionError):
    """The configuration directory cannot be reached and no snapshot can stand in."""

    exit_code = 3
    kind = "directory unavailable"


class InputError(CoercionError):
    """A source object is missing, is not DICOM, or is malformed."""

    exit_code = 4
    kind = "malformed input"


class MalformedDataError(InputError):
    """A data set is not whole (cut short, impossible length, stray delimiter, too deep) or an
    instance UID it must carry is missing or invalid.

    *summary* is a short description without any value (at most 64 characters), fit for the
    Error Comment of a DIMSE status: ``malformed data set: (7FE0,0010)``.
    """

    def __init__(self, message: str, summary: str) -> None:
        super().__init__(message, kind=summary[:64])
        self.summary = summary[:64]


class RuleFailedError(CoercionError):
    """A coercion rule could not be applied to an object.

    *rule* names the rule (its cn; the URI for a rule of the command line) when the engine
    raised it; :attr:`comment` is ``rule <cn>: <kind>``, at most 64 characters.
    """

    exit_code = 5
    kind = "rule failed"

    def __init__(self, message: str, kind: str | None = None, rule: str = "") -> None:
        super().__init__(message, kind=kind)
        self.rule = rule

    @property
    def comment(self) -> str:
        """``rule <cn>: <kind>`` (or the kind alone), cut to 64 characters: no value in it."""
        return (f"rule {self.rule}: {self.kind}" if self.rule else self.kind)[:64]


class StoreError(CoercionError):
    """The pseudonym store could not be read or written."""

    exit_code = 6
    kind = "pseudonym store failed"


class OutputError(CoercionError):
    """An output file could not be written."""

    exit_code = 7
    kind = "cannot write output"


class VerificationError(OutputError):
    """An output still contains an identifying value of its source."""

    exit_code = 8
    kind = "identifying value left"


class IncompleteConversionError(CoercionError):
    """A conversion from another product left something out (reported item by item).

    What could be written was written (rules not carried over exactly are
    inactive), unless the command was told to be strict.
    """

    exit_code = 9
    kind = "conversion incomplete"


def kind_of(exc: BaseException) -> str:
    """A short description of *exc* without any value: ours say it, others by class or errno.

    ``disk full (ENOSPC)``, ``I/O error (EACCES)``, ``nested too deep``, ``unexpected KeyError``.
    """
    if isinstance(exc, CoercionError):
        return exc.kind
    if isinstance(exc, OSError) and exc.errno is not None:  # without: not the system's error
        name = errno.errorcode.get(exc.errno, exc.__class__.__name__)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        return f"{'disk full' if full else 'I/O error'} ({name})"
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return f"unexpected {exc.__class__.__name__}"


def reason_of(exc: BaseException) -> str:
    """What went wrong, without a value: the system's words for an OSError, else the class name.

    ``No such file or directory``, ``OperationalError``: a library's own message
    may quote a value (a statement's parameters, a file's content), so it is left out.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__


_Foreign = type[BaseException] | tuple[type[BaseException], ...]


@contextlib.contextmanager
def map_errors(
    mapping: Mapping[_Foreign, type[CoercionError]],
    where: str,
    *,
    reason: Callable[[BaseException], str] = reason_of,
    hint: str = "",
    chain: bool = False,
) -> Iterator[None]:
    """Translate the exceptions of a library into the project's, in one place.

    An exception of a class in *mapping* (its first key that matches) leaving
    the block becomes that key's error, with the message ``<where> (<reason>)``
    and ``; <hint>`` when given: *where* says what was being done to what
    (``store sqlite:///x.db: cannot open``), *reason* (:func:`reason_of` unless
    told) says why without a value, *hint* what to do about it.
    With *chain* the original stays the error's ``__cause__`` (a log names its
    class); otherwise it is dropped, so that its text is never shown.
    Exceptions not in *mapping*, ours among them, pass unchanged.
    """
    try:
        yield
    except CoercionError:
        raise
    except BaseException as exc:
        for foreign, ours in mapping.items():
            if isinstance(exc, foreign):
                error = ours(f"{where} ({reason(exc)})" + (f"; {hint}" if hint else ""))
                raise error from (exc if chain else None)
        raise
