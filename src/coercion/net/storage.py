"""The Storage SCP: a received object checked, coerced, verified, written, forwarded, audited.

Every storage SOP class in every transfer syntax is accepted (no
transcoding). A received data set is checked whole to its last byte
(:mod:`coercion.net.incoming`) and against its request, then goes through
:mod:`coercion.engine.pipeline`: the rules for the event context, the
verification of a de-identified output (on unless ``serve --no-verify``: a
leak is refused with 0xC003, logged without values, and nothing is written),
the encoding and the atomic write. An object no rule applies to is stored
from the bytes received, without decoding; one large enough to be spooled
while it came in stays on disk (its pixel data is never loaded), and untouched
elements are the bytes that were read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileDataset
from pynetdicom import evt

from coercion.dicom.outputs import atomic_output, publish, write_all
from coercion.dicom.part10 import file_meta_bytes, read_bytes, read_file
from coercion.directory.settings import DeviceSettings
from coercion.engine import Engine, EventContext, Outcome
from coercion.engine.pipeline import Coerced, apply_rules, prepare, write
from coercion.net import incoming, metrics, receive
from coercion.net.audit import AuditTrail
from coercion.net.boundary import DataSetMismatchError, Operation, Provider, Service, guarded
from coercion.net.forward import Forwarder
from coercion.net.paths import object_path, uid_component

__all__ = ["Storage"]

log = logging.getLogger(__name__)

_SUCCESS = 0x0000


def _mismatch(ds: Dataset, sop_class: str, instance: str, negotiated: str) -> str:
    """Why a received data set does not match its C-STORE request, or "" (no value named)."""
    if sop_class != negotiated:
        return "SOP class differs from the presentation context"
    if str(ds.get("SOPClassUID", "")) != sop_class:
        return "(0008,0016) SOP Class UID does not match the request"
    if str(ds.get("SOPInstanceUID", "")) != instance:
        return "(0008,0018) SOP Instance UID does not match the request"
    return ""


@dataclass(frozen=True)
class Received:
    """A received object, read: in memory (*data*, its Part 10 bytes) or in a *file*."""

    ds: FileDataset
    rules: bool  # whether a rule may apply (then it was read whole)
    data: bytes | None
    file: Path | None


def _untouched(ds: Dataset) -> Coerced:
    """The coerce step when no rule can apply: the object stays as received."""
    return Coerced(ds, changed=False)


class Storage(Provider):
    """The C-STORE handler of a node (bound to ``evt.EVT_C_STORE`` as :meth:`on_store`)."""

    def __init__(
        self,
        data: Path,
        engine: Engine,
        forwarder: Forwarder,
        audit: AuditTrail,
        settings: Callable[[], DeviceSettings],
        *,
        verify: bool = True,
    ) -> None:
        super().__init__(engine, audit, settings)
        self.objects = data / "objects"
        self.incoming = data / "incoming"
        self.forwarder = forwarder
        self.verify = verify

    @guarded(Service.C_STORE)
    def on_store(self, event: evt.Event, op: Operation) -> int | Dataset:
        """Store a received object; its status."""
        with self._receive(event, op.ctx, op.label) as received:
            return self._store(received, op)

    @contextmanager
    def _receive(self, event: evt.Event, ctx: EventContext, label: str) -> Iterator[Received]:
        """The received object, checked and read; raises when it is not whole or does not
        match its request. A large one is a temporary Part 10 file for the block's duration.
        """
        request: Any = event.request
        sop_class, instance = ctx.sop_class_uid, str(request.AffectedSOPInstanceUID)
        syntax = str(event.context.transfer_syntax)
        body = request.DataSet
        incoming.check(body, syntax, label)  # whole to its last byte, or refused
        meta = file_meta_bytes(sop_class, instance, syntax)
        rules = self.engine.may_apply(ctx)
        if isinstance(body, receive.SpooledDataSet):  # on disk: it stays there
            with incoming.part10_file(body, meta, self.incoming) as path:
                body.close()  # the spooled copy is not needed any more
                ds = read_file(path, name=label)  # long values (pixel data) deferred
                _match(ds, event, sop_class, instance, label)
                yield Received(ds, rules, None, path)
            return
        data = meta + body.getvalue()
        # No rule can apply: read only what the checks, the path and forwarding need.
        ds = read_bytes(data, label, 0xFFFFFFFF if rules else self.forwarder.needs_up_to())
        _match(ds, event, sop_class, instance, label)
        yield Received(ds, rules, data, None)

    def _store(self, received: Received, op: Operation) -> int:
        """Coerce, verify, write, forward and audit a received object."""
        ctx = op.ctx
        sync = self.settings().sync_writes
        op.step = "coerce"
        coerce = apply_rules(self.engine, ctx) if received.rules else _untouched
        verify = self.verify and received.rules
        prepared = prepare(received.ds, coerce, verify=verify, name=op.label, source=received.file)
        outcome = op.outcome = prepared.coerced.outcome or Outcome(prepared.dataset)
        if received.rules:
            metrics.observe_coercion(ctx, outcome, prepared.coerced.seconds)
        stored = prepared.dataset
        path = object_path(self.objects, stored, op.label)
        replaced = path.exists()  # a second copy replaces the first, whole or not at all
        if prepared.coerced.changed:
            op.step = "write"
            encoded = prepared.encode()  # long values not read are copied from the received file
            op.step = "verify"
            prepared.verify(encoded)
            op.step = "write"
            write(encoded, path, sync=sync)
        elif received.file is not None:
            op.step = "write"
            publish(received.file, path, sync=sync)  # untouched: renamed into place
            stored.filename = str(path)  # where its deferred values now are
        else:
            op.step = "write"
            with atomic_output(path, sync=sync) as fd:
                write_all(fd, received.data or b"")  # untouched: the bytes as received
        op.step = "forward"
        forwarded = self.forwarder.enqueue(path, ctx, stored, sync=sync)
        op.step = "audit"
        extra: dict[str, object] = {"forwarded_to": forwarded} if forwarded else {}
        if replaced:
            extra["replaced"] = True
        self.audit.record(ctx, _SUCCESS, outcome, op.instance, extra=extra or None)
        return _SUCCESS


def _match(ds: Dataset, event: evt.Event, sop_class: str, instance: str, label: str) -> None:
    """Raise unless *ds* is the object its C-STORE request announced."""
    uid_component(ds.get("SOPInstanceUID"), "(0008,0018) SOPInstanceUID", label)
    mismatch = _mismatch(ds, sop_class, instance, str(event.context.abstract_syntax))
    if mismatch:
        raise DataSetMismatchError(mismatch)
