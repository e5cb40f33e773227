"""The PS3.15 profile options, by their standard names, with their CID 7050 codes."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable

from coercion.errors import ConfigError
from coercion.profile._table import BASIC_PROFILE_CODE, OPTION_COLUMNS

__all__ = ["BASIC_PROFILE", "CodedConcept", "Option", "parse_options"]


class CodedConcept:
    """A CID 7050 code: value, scheme ``DCM`` and meaning."""

    __slots__ = ("meaning", "value")

    def __init__(self, value: str, meaning: str) -> None:
        self.value = value
        self.meaning = meaning

    scheme = "DCM"

    def __repr__(self) -> str:
        return f"CodedConcept({self.value!r}, {self.meaning!r})"


#: The Basic Application Level Confidentiality Profile itself.
BASIC_PROFILE = CodedConcept(*BASIC_PROFILE_CODE)


class Option(enum.Enum):
    """An option column of PS3.15 Table E.1-1.

    Members are named exactly as the standard names the options, without
    spaces (``RetainUIDsOption``); the value is the column's index in
    :data:`coercion.profile._table.OPTION_COLUMNS`.
    """

    RetainSafePrivateOption = 0
    RetainUIDsOption = 1
    RetainDeviceIdentityOption = 2
    RetainInstitutionIdentityOption = 3
    RetainPatientCharacteristicsOption = 4
    RetainLongitudinalTemporalInformationFullDatesOption = 5
    RetainLongitudinalTemporalInformationModifiedDatesOption = 6
    CleanDescriptorsOption = 7
    CleanStructuredContentOption = 8
    CleanGraphicsOption = 9

    @property
    def code(self) -> CodedConcept:
        """The option's CID 7050 code."""
        _field, _keyword, meaning, code, _header = OPTION_COLUMNS[self.value]
        return CodedConcept(code, meaning)


def _check_enum_matches_table() -> None:
    for option in Option:
        keyword = OPTION_COLUMNS[option.value][1]
        if keyword != option.name:  # pragma: no cover - guards a regenerated table
            raise ImportError(
                f"profile table column {option.value} is {keyword}, not {option.name}"
            )


_check_enum_matches_table()

_BY_NAME = {option.name: option for option in Option}
_BY_FOLDED = {option.name.lower(): option for option in Option}
_EXCLUSIVE = (
    Option.RetainLongitudinalTemporalInformationFullDatesOption,
    Option.RetainLongitudinalTemporalInformationModifiedDatesOption,
)


def _lookup(name: str, where: str) -> Option:
    text = name.strip()
    option = _BY_NAME.get(text) or _BY_FOLDED.get(text.lower())
    if option is not None:
        return option
    close = difflib.get_close_matches(text, list(_BY_NAME), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "valid options are " + ", ".join(_BY_NAME)
    raise ConfigError(f"{where}: unknown option {text!r}; {hint}")


def parse_options(names: Iterable[str], where: str = "options") -> frozenset[Option]:
    """Turn option names into :class:`Option` members.

    Names match the standard's spelling; case is ignored. Raises
    :class:`~coercion.errors.ConfigError` naming *where* for an unknown name
    (with a did-you-mean) or for the two longitudinal date options together.
    """
    options = frozenset(_lookup(name, where) for name in names if name.strip())
    if all(option in options for option in _EXCLUSIVE):
        raise ConfigError(
            f"{where}: {_EXCLUSIVE[0].name} and {_EXCLUSIVE[1].name} exclude each other; choose one"
        )
    return options
