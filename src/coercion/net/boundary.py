"""The one error boundary of the node's DIMSE services.

Every handler runs inside :func:`guarded`: whatever it raises becomes one
failure status of its service (with an Error Comment that says what kind of
failure, never a value), one log line (the exception class and the step or
rule) and one audit line, and the node goes on serving. Nothing raises out
of the boundary: the audit trail never raises (see :mod:`coercion.net.audit`)
and a failure while recording a failure is logged, not propagated.

The statuses (PS3.4 Annex B.2.3, K.4.1.2.3 and F.7.2; PS3.7 Annex C):

=============================  ========  ========  =====================
failure                        C-STORE   C-FIND    N-CREATE / N-SET
=============================  ========  ========  =====================
data set / request mismatch    0xA900    --        --
malformed data set             0xC000    0xC000    0x0110
coercion rule failed           0xC001    0xC001    0x0110
output failed verification     0xC003    --        --
disk full, other I/O error     0xA700    0xA700    0x0213
anything else (a bug)          0xC002    0xC002    0x0110
=============================  ========  ========  =====================

A C-ECHO cannot fail; were its handler to raise, the answer is 0x0110.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from coercion.directory.settings import DeviceSettings
from coercion.engine import Dimse, Engine, EventContext, Outcome, Role
from coercion.errors import (
    CoercionError,
    InputError,
    RuleFailedError,
    VerificationError,
    kind_of,
)
from coercion.net.audit import AuditTrail

#: The package's folder: frames under it are ours.
_PACKAGE = Path(__file__).resolve().parents[1]

__all__ = [
    "Boundary",
    "DataSetMismatchError",
    "Failure",
    "Operation",
    "Provider",
    "Service",
    "classify",
    "guarded",
    "operation",
    "status",
]

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class Service(enum.Enum):
    """The DIMSE services the node answers."""

    C_ECHO = "C-ECHO"
    C_STORE = "C-STORE"
    C_FIND = "C-FIND"
    N_CREATE = "N-CREATE"
    N_SET = "N-SET"


_DIMSE = {
    Service.C_STORE: Dimse.C_STORE_RQ,
    Service.C_FIND: Dimse.C_FIND_RQ,
    Service.N_CREATE: Dimse.N_CREATE_RQ,
    Service.N_SET: Dimse.N_SET_RQ,
}


class DataSetMismatchError(Exception):
    """A C-STORE data set that does not match its request (0xA900); the message names no value."""


@dataclass
class Operation:
    """One DIMSE operation in progress: where it is, and what the audit line needs."""

    service: Service
    ctx: EventContext
    instance: str = ""
    step: str = "receive"
    outcome: Outcome | None = None

    @property
    def label(self) -> str:
        """``C-STORE from CT01``: for messages (AE titles only)."""
        return f"{self.service.value} from {self.ctx.calling_ae or '-'}"


def _request_text(request: Any, *names: str) -> str:
    """The first of *names* the request carries, as text ('' when none or unreadable)."""
    for name in names:
        try:
            value = getattr(request, name, None)
        except Exception:  # a request attribute that cannot be read: named nowhere
            value = None
        if value:
            return str(value)
    return ""


def operation(event: evt.Event, service: Service) -> Operation:
    """The operation *event* starts: its event context, from the association and the request."""
    request = getattr(event, "request", None)
    assoc = getattr(event, "assoc", None)
    try:
        calling = str(assoc.requestor.ae_title).strip() if assoc else ""
        called = str(assoc.acceptor.ae_title).strip() if assoc else ""
        hosts = (assoc.requestor.address, assoc.acceptor.address) if assoc else ("", "")
    except Exception:  # the boundary is built before anything can fail
        calling, called, hosts = "", "", ("", "")
    ctx = EventContext(
        _DIMSE.get(service, Dimse.C_STORE_RQ),
        Role.SCP,
        calling_ae=calling,
        called_ae=called,
        remote_host=str(hosts[0] or ""),
        local_host=str(hosts[1] or ""),
        sop_class_uid=_request_text(request, "AffectedSOPClassUID", "RequestedSOPClassUID"),
    )
    instance = _request_text(request, "AffectedSOPInstanceUID", "RequestedSOPInstanceUID")
    return Operation(service, ctx, instance)


def status(code: int, comment: str) -> Dataset:
    """A status with an Error Comment (LO: at most 64 characters, no backslash or control)."""
    answer = Dataset()
    answer.Status = code
    answer.ErrorComment = _CONTROL.sub(" ", comment)[:64]
    return answer


@dataclass(frozen=True)
class Failure:
    """What a failure is answered with and logged at."""

    code: int
    comment: str
    level: int


_INPUT = {Service.N_CREATE: 0x0110, Service.N_SET: 0x0110}
_RULE = {Service.N_CREATE: 0x0110, Service.N_SET: 0x0110, Service.C_ECHO: 0x0110}
_RESOURCES = {Service.N_CREATE: 0x0213, Service.N_SET: 0x0213, Service.C_ECHO: 0x0110}
_OTHER = {Service.N_CREATE: 0x0110, Service.N_SET: 0x0110, Service.C_ECHO: 0x0110}


def classify(service: Service, exc: BaseException) -> Failure:
    """The status, Error Comment and log level of *exc* in *service* (the module's table)."""
    if isinstance(exc, DataSetMismatchError):
        return Failure(0xA900, str(exc), logging.WARNING)
    if isinstance(exc, InputError | RecursionError):
        comment = (
            "sequences nested too deep"
            if isinstance(exc, RecursionError)
            else getattr(exc, "summary", "malformed data set")
        )
        return Failure(_INPUT.get(service, 0xC000), comment, logging.WARNING)
    if isinstance(exc, RuleFailedError):
        return Failure(_RULE.get(service, 0xC001), exc.comment, logging.WARNING)
    if isinstance(exc, VerificationError):  # a de-identified output still names the patient
        return Failure(_RULE.get(service, 0xC003), "output failed verification", logging.WARNING)
    if isinstance(exc, OSError) and exc.errno is not None:  # pydicom raises some without
        return Failure(_RESOURCES.get(service, 0xA700), kind_of(exc), logging.ERROR)
    return Failure(_OTHER.get(service, 0xC002), kind_of(exc), logging.ERROR)


def _describe(exc: BaseException) -> str:
    """The log text of *exc*: its class and what can be said without a value."""
    name = exc.__class__.__name__
    cause = exc.__cause__
    if isinstance(exc, RuleFailedError) and cause is not None:
        name += f" from {cause.__class__.__name__}"
    if isinstance(exc, CoercionError | DataSetMismatchError):
        return f"{name}: {exc}"  # our messages name tags, rules and files, never values
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{name}: {kind_of(exc)}"  # no file name: object paths are made of UIDs
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).is_relative_to(_PACKAGE)]
    where = [_frame(f) for f in (frames[-1:] + ours[-1:])]
    # Where it was raised (and our last frame), but no message: a foreign one may quote a value.
    return f"{name} at {' from '.join(dict.fromkeys(where))}" if where else name


def _frame(frame: traceback.FrameSummary) -> str:
    """``pydicom/filewriter.py:492 in write_text``, ours as ``coercion/dicom/part10.py:316``."""
    path = Path(frame.filename)
    if path.is_relative_to(_PACKAGE):
        where = f"coercion/{path.relative_to(_PACKAGE).as_posix()}"
    else:
        where = f"{path.parent.name}/{path.name}"
    return f"{where}:{frame.lineno} in {frame.name}"


class Boundary:
    """Turns a handler's exception into its service's failure status, logged and audited."""

    def __init__(self, audit: AuditTrail) -> None:
        self.audit = audit

    def fail(self, op: Operation, exc: BaseException, code: int | None = None) -> Dataset:
        """Log and audit *exc* for *op*; the status to answer (*code* overrides the table)."""
        failure = classify(op.service, exc)
        answer = code if code is not None else failure.code
        rule = exc.rule if isinstance(exc, RuleFailedError) and exc.rule else ""
        where = f"rule {rule}" if rule else op.step
        text = _describe(exc)
        try:
            log.log(
                failure.level,
                "%s failed at %s: %s; answered 0x%04X",
                op.label,
                where,
                text,
                answer,
            )
            extra: dict[str, object] = {"step": op.step, "error": exc.__class__.__name__}
            if op.service is Service.C_ECHO:
                extra["dimse"] = "C_ECHO_RQ"
            if rule:
                extra["rule"] = rule
            self.audit.record(op.ctx, answer, op.outcome, op.instance, text, extra)
        except Exception as inner:  # recording a failure must not become another one
            log.error("%s: the failure could not be recorded (%s)", op.label, kind_of(inner))
        return status(answer, failure.comment)


class Provider:
    """What each of the node's service class providers (storage, MPPS, worklist) holds:
    the engine that coerces, the audit trail and its :class:`Boundary` (which
    :func:`guarded` handlers fail through), and the device's settings as they are
    now (a function: read at each operation, so that a reload applies)."""

    def __init__(
        self, engine: Engine, audit: AuditTrail, settings: Callable[[], DeviceSettings]
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.boundary = Boundary(audit)
        self.settings = settings


_Handler = Callable[[Any, evt.Event, Operation], Any]


def guarded(service: Service) -> Callable[[_Handler], Callable[[Any, evt.Event], Any]]:
    """Run a handler method ``(self, event, op)`` inside the boundary of ``self.boundary``.

    The wrapped method takes ``(self, event)`` as pynetdicom calls it. On an
    exception the answer is the failure status in the shape the service
    expects: a status (C-ECHO, C-STORE), ``(status, None)`` (N-CREATE,
    N-SET), or a last ``(status, None)`` yielded (C-FIND).
    """

    def decorate(method: _Handler) -> Callable[[Any, evt.Event], Any]:
        if service is Service.C_FIND:

            @functools.wraps(method)
            def find(owner: Any, event: evt.Event) -> Iterator[tuple[Any, Any]]:
                op = operation(event, service)
                try:
                    yield from method(owner, event, op)
                except Exception as exc:
                    yield owner.boundary.fail(op, exc), None

            return find

        pair = service in (Service.N_CREATE, Service.N_SET)

        @functools.wraps(method)
        def handle(owner: Any, event: evt.Event) -> Any:
            op = operation(event, service)
            try:
                return method(owner, event, op)
            except Exception as exc:
                answer = owner.boundary.fail(op, exc)
                return (answer, None) if pair else answer

        return handle

    return decorate
