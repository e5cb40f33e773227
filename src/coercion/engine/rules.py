"""Coercion rules: what they apply to (DIMSE, role, SOP classes, conditions) and in which order."""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.datadict import keyword_dict, tag_for_keyword
from pydicom.dataset import Dataset

from coercion.dicom.elements import text_values
from coercion.dicom.tags import parse_tag
from coercion.engine.context import Dimse, EventContext, Role
from coercion.profile import Change

__all__ = [
    "CONTEXT_CONDITIONS",
    "Condition",
    "ForwardRule",
    "OnFailure",
    "Rule",
    "RuleAction",
    "RuleSet",
    "parse_condition",
]

#: Conditions on the event context rather than on a DICOM attribute.
CONTEXT_CONDITIONS = (
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SendingHostname",
    "ReceivingHostname",
)
_CONDITION_RE = re.compile(r"^\s*(?P<name>[^=!]+?)\s*(?P<op>!=|=)(?P<pattern>.*)$", re.DOTALL)
_NO_DATASET = Dataset()


class OnFailure(enum.StrEnum):
    """What a failure of a rule does to the operation."""

    RETHROW = "RETHROW"  # fail the operation (the default)
    CONTINUE = "CONTINUE"  # go on without this rule
    SUFFICIENT = "SUFFICIENT"  # stop quietly, keeping what earlier rules did


class RuleAction(Protocol):
    """What a rule's URI does; made once when the rules load, applied per object."""

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Coerce *ds* in place; return what changed (tags and action letters, no values)."""
        ...


@dataclass(frozen=True)
class Condition:
    """``NAME=REGEX`` or ``NAME!=REGEX``: the whole value must match the expression.

    For a DICOM attribute the condition holds when any of its values matches
    (an absent attribute has the one value ``""``); ``!=`` negates.
    """

    text: str
    name: str
    pattern: re.Pattern[str]
    negate: bool
    tag: int | None = None

    def holds(self, ctx: EventContext, ds: Dataset) -> bool:
        """Whether the condition holds for *ctx* and *ds*."""
        if self.tag is None:
            values = [_context_value(ctx, self.name)]
        else:
            values = text_values(ds, self.tag) or [""]
        matched = any(self.pattern.fullmatch(v) for v in values)
        return matched != self.negate


def _context_value(ctx: EventContext, name: str) -> str:
    if name == "SendingApplicationEntityTitle":
        return ctx.calling_ae
    if name == "ReceivingApplicationEntityTitle":
        return ctx.called_ae
    if name == "SendingHostname":
        return ctx.sending_hostname
    return ctx.receiving_hostname


def parse_condition(text: str) -> Condition:
    """Parse ``NAME=REGEX`` / ``NAME!=REGEX``; raise ValueError saying what is wrong."""
    found = _CONDITION_RE.match(text)
    if found is None:
        raise ValueError("expected NAME=REGEX or NAME!=REGEX")
    name, op, source = found["name"], found["op"], found["pattern"]
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise ValueError(f"invalid regular expression ({exc})") from None
    tag: int | None = None
    if name not in CONTEXT_CONDITIONS:
        tag = parse_tag(name, parentheses=False)
        if tag is None:
            tag = tag_for_keyword(name)
            if tag is None:
                known = [*CONTEXT_CONDITIONS, *keyword_dict]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ValueError(
                    f"unknown condition name {name!r}: not one of "
                    f"{', '.join(CONTEXT_CONDITIONS)}, a DICOM keyword or (gggg,eeee){hint}"
                )
    return Condition(text, name, pattern, op == "!=", tag)


@dataclass(frozen=True)
class Rule:
    """One coercion rule, compiled: its action is made and its conditions parsed."""

    name: str
    dn: str
    uri: str
    action: RuleAction
    dimse: frozenset[Dimse]
    role: Role
    ae_title: str | None = None  # None: every AE title of the node
    sop_classes: frozenset[str] = frozenset()
    conditions: tuple[Condition, ...] = ()
    priority: int = 0
    sufficient: bool = False
    on_failure: OnFailure = OnFailure.RETHROW
    params: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def _fits(self, ctx: EventContext) -> bool:
        """DIMSE, role, AE title and SOP class."""
        if ctx.dimse not in self.dimse or ctx.role is not self.role:
            return False
        if self.ae_title is not None and self.ae_title != ctx.local_ae:
            return False
        return not self.sop_classes or ctx.sop_class_uid in self.sop_classes

    def matches(self, ctx: EventContext, ds: Dataset) -> bool:
        """Whether this rule applies to *ds* in *ctx*."""
        return self._fits(ctx) and all(c.holds(ctx, ds) for c in self.conditions)

    def may_match(self, ctx: EventContext) -> bool:
        """Whether this rule could apply in *ctx*, whatever the dataset holds."""
        return self._fits(ctx) and all(
            c.holds(ctx, _NO_DATASET) for c in self.conditions if c.tag is None
        )

    def order(self) -> tuple[int, int, str, str]:
        """Sort key: higher priority first, then AE-level before device-level rules."""
        return (-self.priority, 0 if self.ae_title is not None else 1, self.name, self.dn)


@dataclass(frozen=True)
class ForwardRule:
    """Where objects that match go."""

    name: str
    dn: str
    destinations: tuple[str, ...]
    ae_title: str | None = None
    sop_classes: frozenset[str] = frozenset()
    conditions: tuple[Condition, ...] = ()
    priority: int = 0
    dimse: frozenset[Dimse] = frozenset({Dimse.C_STORE_RQ})

    def matches(self, ctx: EventContext, ds: Dataset) -> bool:
        """Whether what arrived in *ctx* goes to this rule's destinations.

        A rule for N_CREATE_RQ (MPPS) also forwards the N-SETs of the steps it forwarded.
        """
        wanted = Dimse.N_CREATE_RQ if ctx.dimse is Dimse.N_SET_RQ else ctx.dimse
        if wanted not in self.dimse:
            return False
        if self.ae_title is not None and self.ae_title != ctx.local_ae:
            return False
        if self.sop_classes and ctx.sop_class_uid not in self.sop_classes:
            return False
        return all(condition.holds(ctx, ds) for condition in self.conditions)


class RuleSet:
    """An immutable, ordered set of rules; swapped whole when the directory changes."""

    def __init__(self, rules: Iterable[Rule] = (), origin: str = "") -> None:
        self.rules: tuple[Rule, ...] = tuple(sorted(rules, key=Rule.order))
        self.origin = origin

    def __len__(self) -> int:
        return len(self.rules)

    def may_apply(self, ctx: EventContext) -> bool:
        """Whether any rule could apply in *ctx* (conditions on attributes not evaluated)."""
        return any(rule.may_match(ctx) for rule in self.rules)

    def select(self, ctx: EventContext, ds: Dataset) -> list[Rule]:
        """The rules that apply to *ds* in *ctx*, in the order they are applied."""
        return [rule for rule in self.rules if rule.matches(ctx, ds)]
