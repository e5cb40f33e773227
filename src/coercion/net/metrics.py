"""The node's counters for ``/metrics`` (Prometheus): objects by AE, rule and result.

The audit trail calls :func:`record_operation` once per DIMSE operation it
records and the storage path :func:`observe_coercion` once per coerced
object; labels are AE titles, rule names and results, never a value of an
object. The counters live in their own registry (:data:`REGISTRY`), which
the console serves; nothing here opens a port.

``coercion serve`` counts in files (:func:`count_in`: prometheus_client's
multiprocess mode), so that the console, in the parent process, reads the
exact sums over every worker process (:func:`families`), those that exited
or were restarted included.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from coercion.engine import Dimse, EventContext, Outcome, Role

__all__ = [
    "FOLDER",
    "OBJECTS",
    "OBJECTS_BY_RULE",
    "REGISTRY",
    "RULE_FAILURES",
    "RULE_SECONDS",
    "count_in",
    "counting",
    "counting_folder",
    "families",
    "observe_coercion",
    "record_operation",
    "registry",
    "result_of",
]

#: Where ``serve`` counts when there is no memory file system: in the data folder.
FOLDER = "metrics"
#: A memory file system for the counting files (prometheus_client maps them: a full
#: data disk must not end a worker with SIGBUS when a mapped page is first touched).
_MEMORY = Path("/dev/shm")
#: prometheus_client's variable naming that folder (worker processes inherit it).
_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

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


def counting_folder(data: Path) -> Path:
    """A new private folder for the counting files of one ``serve`` run.

    It is on the memory file system (``/dev/shm``) where there is one, so that a
    full data disk cannot touch the mapped counters; else ``DATA/metrics``.
    """
    if _MEMORY.is_dir() and os.access(_MEMORY, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="coercion-metrics-", dir=_MEMORY))
    return data / FOLDER


@contextmanager
def counting(data: Path) -> Iterator[Path]:
    """Count in a new :func:`counting_folder` while the block runs; the folder goes after."""
    folder = counting_folder(data)
    count_in(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the counts of this run only


def count_in(folder: Path) -> None:
    """Count in files under *folder* (emptied first) from now on, in this process and in
    the processes it starts after this call (they inherit the environment).

    Call it before anything is counted; every metric here has labels, so none has
    a value before its first count.
    """
    shutil.rmtree(folder, ignore_errors=True)  # the counts of an earlier run
    folder.mkdir(mode=0o700, parents=True)
    os.environ[_FOLDER_VARIABLE] = str(folder)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def registry() -> CollectorRegistry:
    """The registry to expose: the sums of every process's files when counting in files."""
    folder = os.environ.get(_FOLDER_VARIABLE)
    if not folder:
        return REGISTRY
    summed = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(summed, folder)  # type: ignore[no-untyped-call]
    return summed


def families() -> Iterable[Metric]:
    """The metric families of :func:`registry` (counters, histograms) as collected now."""
    return registry().collect()
