"""The node's counters for ``/metrics`` (Prometheus): objects by AE, rule and result.

The audit trail calls :func:`record_operation` once per DIMSE operation it
records and the storage path :func:`observe_coercion` once per coerced
object; labels are AE titles, rule names and results, never a value of an
object. The counters live in their own registry (:data:`REGISTRY`), which
the console serves; nothing here opens a port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from coercion.engine import Dimse, EventContext, Outcome, Role

__all__ = [
    "OBJECTS",
    "OBJECTS_BY_RULE",
    "REGISTRY",
    "RULE_FAILURES",
    "RULE_SECONDS",
    "observe_coercion",
    "record_operation",
    "result_of",
]

#: The registry of the node's metrics (not prometheus_client's global one).
REGISTRY = CollectorRegistry(auto_describe=True)

OBJECTS = Counter(
    "coercion_objects",
    "Objects received by the storage SCP, by called and calling AE title and result "
    "(stored or refused).",
    ["called_ae", "calling_ae", "result"],
    registry=REGISTRY,
)
OBJECTS_BY_RULE = Counter(
    "coercion_rule_objects",
    "Objects received by the storage SCP, by called AE title, rule applied and result; "
    "an object counts once for each rule applied to it, rule '-' when none applied.",
    ["called_ae", "rule", "result"],
    registry=REGISTRY,
)
RULE_FAILURES = Counter(
    "coercion_rule_failures",
    "Rules that failed on an object (any DIMSE), by rule.",
    ["rule"],
    registry=REGISTRY,
)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COERCION_SECONDS = Histogram(
    "coercion_coercion_seconds",
    "Seconds spent selecting and applying the rules to a stored object, by called AE title.",
    ["called_ae"],
    registry=REGISTRY,
    buckets=_BUCKETS,
)
RULE_SECONDS = Histogram(
    "coercion_rule_seconds",
    "Seconds one rule's action took on a stored object, by rule.",
    ["rule"],
    registry=REGISTRY,
    buckets=_BUCKETS,
)


def result_of(status: int) -> str:
    """``stored`` for a success or warning status, ``refused`` for any other."""
    return "stored" if status == 0 or status & 0xF000 == 0xB000 else "refused"


def record_operation(ctx: EventContext, status: int, outcome: Outcome | None) -> None:
    """Count one operation: a C-STORE the node received per rule applied, and rule failures."""
    applied = outcome.applied if outcome is not None else []
    for rule in applied:
        if rule.failure is not None:
            RULE_FAILURES.labels(rule.rule.name).inc()
    if ctx.dimse is not Dimse.C_STORE_RQ or ctx.role is not Role.SCP:
        return
    result = result_of(status)
    OBJECTS.labels(ctx.called_ae, ctx.calling_ae, result).inc()
    for name in [a.rule.name for a in applied] or ["-"]:
        OBJECTS_BY_RULE.labels(ctx.called_ae, name, result).inc()


def observe_coercion(ctx: EventContext, outcome: Outcome, seconds: float) -> None:
    """Time the rules applied to one stored object: all of them, and each."""
    COERCION_SECONDS.labels(ctx.called_ae).observe(seconds)
    for applied in outcome.applied:
        RULE_SECONDS.labels(applied.rule.name).observe(applied.seconds)
