"""The engine: select the rules for an event and apply them to its dataset."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from coercion.engine.context import EventContext
from coercion.engine.rules import OnFailure, Rule, RuleSet
from coercion.errors import CoercionError, RuleFailedError, kind_of
from coercion.profile import Change

__all__ = ["AppliedRule", "Engine", "Outcome"]

log = logging.getLogger(__name__)


@dataclass
class AppliedRule:
    """One selected rule and what it did; ``failure`` is set when it failed."""

    rule: Rule
    changes: list[Change] = field(default_factory=list)
    failure: str | None = None
    seconds: float = 0.0  # how long the rule's action took


@dataclass
class Outcome:
    """The coerced dataset and, per rule, what changed (tags and action letters, no values)."""

    dataset: Dataset
    applied: list[AppliedRule] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        """The number of changes per action letter over all rules."""
        counts: Counter[str] = Counter()
        for applied in self.applied:
            if applied.failure is None:
                counts.update(change.action.value for change in applied.changes)
        return counts


class Engine:
    """Apply a :class:`RuleSet` to datasets; the rule set can be swapped while serving.

    :meth:`apply` takes the rule set once per call, so a swap never mixes two
    rule sets in one object.
    """

    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._lock = threading.Lock()

    @property
    def rules(self) -> RuleSet:
        """The rule set in use."""
        return self._rules

    def replace_rules(self, rules: RuleSet) -> None:
        """Serve *rules* from the next object on."""
        with self._lock:
            self._rules = rules

    def may_apply(self, ctx: EventContext) -> bool:
        """Whether any rule could apply in *ctx*; when not, the dataset need not be read."""
        return self._rules.may_apply(ctx)

    def apply(self, ds: Dataset, ctx: EventContext) -> Outcome:
        """Coerce *ds* for *ctx*.

        Conditions are evaluated on the dataset as it arrived. Rules apply in
        order until a sufficient rule has applied. A rule that fails with
        on-failure RETHROW raises :class:`RuleFailedError` naming the rule and
        the kind of failure (the operation fails; the dataset must be
        discarded); CONTINUE goes on without that
        rule's changes; SUFFICIENT stops there, keeping earlier rules' changes.
        """
        outcome = Outcome(ds)
        for rule in self._rules.select(ctx, ds):
            applied = AppliedRule(rule)
            outcome.applied.append(applied)
            started = time.perf_counter()
            if rule.on_failure is OnFailure.RETHROW:
                try:
                    applied.changes = rule.action.apply(outcome.dataset, ctx)
                except Exception as exc:
                    raise RuleFailedError(
                        f"rule {rule.dn}: {_reason(exc)}", kind=kind_of(exc), rule=rule.name
                    ) from exc
                finally:
                    applied.seconds = time.perf_counter() - started
            else:
                # Work on a copy, so that a failure leaves no half-applied rule behind.
                work = copy.deepcopy(outcome.dataset)
                try:
                    applied.changes = rule.action.apply(work, ctx)
                    applied.seconds = time.perf_counter() - started
                except Exception as exc:
                    applied.seconds = time.perf_counter() - started
                    applied.failure = _reason(exc)
                    log.warning(
                        "rule %s failed (%s), on-failure %s",
                        rule.dn,
                        applied.failure,
                        rule.on_failure,
                    )
                    if rule.on_failure is OnFailure.SUFFICIENT:
                        break
                    continue
                outcome.dataset = work
            if rule.sufficient:
                break
        return outcome


def _reason(exc: BaseException) -> str:
    """A failure's description without values: our messages are safe, others by class only."""
    if isinstance(exc, CoercionError):
        return str(exc)
    return exc.__class__.__name__
