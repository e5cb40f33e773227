"""Table E.1-1 compiled for one set of options into per-action tag sets.

Compiling happens once per option set (and is cached), never per object.
The compound codes of the table are resolved here, once, to the least
destructive action that keeps an object valid whatever the attribute's Type
in its IOD:

========  ========  =====================================================
code      action    why
========  ========  =====================================================
X/Z       Z         a Type 2 attribute must stay present (zero length)
X/D       D         a Type 1 attribute needs a non-empty value
Z/D       D         idem
X/Z/D     D         idem
X/Z/U*    U         the sequence stays; the UIDs in its items are replaced
========  ========  =====================================================
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coercion.dicom.tags import parse_tag
from coercion.profile._table import PROFILE_ROWS, SAFE_PRIVATE_ROWS
from coercion.profile.options import Option

__all__ = [
    "Action",
    "CompiledProfile",
    "PatternRow",
    "compile_profile",
]


class Action(enum.Enum):
    """A PS3.15 de-identification action code (Table E.1-1a)."""

    D = "D"
    Z = "Z"
    X = "X"
    K = "K"
    C = "C"
    U = "U"


_RESOLVE = {
    "D": Action.D,
    "Z": Action.Z,
    "X": Action.X,
    "K": Action.K,
    "C": Action.C,
    "U": Action.U,
    "X/Z": Action.Z,
    "X/D": Action.D,
    "Z/D": Action.D,
    "X/Z/D": Action.D,
    "X/Z/U*": Action.U,
}


class PatternRow(enum.Enum):
    """The four rows of Table E.1-1 that name a tag pattern, not one tag."""

    CURVE = "(50xx,xxxx)"
    OVERLAY_DATA = "(60xx,3000)"
    OVERLAY_COMMENTS = "(60xx,4000)"
    PRIVATE = "(gggg,eeee) where gggg is odd"


def resolve(code: str) -> Action:
    """Resolve a table cell (possibly compound) to one action."""
    return _RESOLVE[code]


def _row_action(basic: str, cells: tuple[str, ...], options: frozenset[Option]) -> Action:
    """The action of one row: an option's cell overrides the Basic Profile."""
    code = basic
    for option in sorted(options, key=lambda o: o.value):
        if cells[option.value]:
            code = cells[option.value]
    return resolve(code)


@dataclass(frozen=True)
class CompiledProfile:
    """The Basic Profile plus a set of options, ready to apply.

    ``actions`` maps every exact tag of Table E.1-1 to its action;
    ``patterns`` holds the action of each pattern row; ``safe_private`` holds
    the (group, element offset, private creator) triples kept under the
    Retain Safe Private Option.
    """

    options: frozenset[Option]
    actions: Mapping[int, Action]
    patterns: Mapping[PatternRow, Action]
    safe_private: frozenset[tuple[int, int, str]]

    @property
    def shifts_dates(self) -> bool:
        """True under the Retain Longitudinal Temporal Information Modified Dates Option."""
        return Option.RetainLongitudinalTemporalInformationModifiedDatesOption in self.options

    def action_for(self, tag: int) -> Action | None:
        """The action for an exact public tag, or None when the table does not list it.

        This makes a compiled profile a :class:`~coercion.profile.verify.Retention`.
        """
        return self.actions.get(tag)


@functools.lru_cache(maxsize=64)
def _compile(options: frozenset[Option]) -> CompiledProfile:
    actions: dict[int, Action] = {}
    patterns: dict[PatternRow, Action] = {}
    by_text = {row.value: row for row in PatternRow}
    for tag_text, _keyword, _name, basic, cells, _retired, _in_iod in PROFILE_ROWS:
        action = _row_action(basic, cells, options)
        pattern = by_text.get(tag_text)
        if pattern is not None:
            patterns[pattern] = action
        else:
            tag = parse_tag(tag_text)
            assert tag is not None, tag_text  # the generated table writes every other row so
            actions[tag] = action
    safe: frozenset[tuple[int, int, str]] = frozenset()
    if patterns[PatternRow.PRIVATE] is not Action.X:
        safe = frozenset(
            (group, offset, creator) for group, offset, creator, _vr, _vm in SAFE_PRIVATE_ROWS
        )
    return CompiledProfile(options, actions, patterns, safe)


def compile_profile(options: Iterable[Option] = ()) -> CompiledProfile:
    """Compile the Basic Profile with *options* (cached per option set)."""
    return _compile(frozenset(options))
