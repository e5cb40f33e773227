"""The MPPS SCP (N-CREATE, N-SET): records kept in ``DATA/mpps/``, coerced, forwarded, audited.

An N-CREATE writes the coerced attributes as a new record (0x0111 when one
exists); an N-SET merges the coerced modifications into it (0x0112 when there
is none; 0x0110 once it is COMPLETED or DISCONTINUED). An invalid instance UID
is 0x0117. Records are written whole or not at all, one at a time across
the node's workers (an ``flock`` on ``DATA/mpps/.lock``); each message is
queued for the forward rules that name N_CREATE_RQ.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import, unseen by mypy
    ModalityPerformedProcedureStep,
)

from coercion.dicom.outputs import atomic_output, private_folders, write_all
from coercion.directory.settings import DeviceSettings
from coercion.engine import Engine, EventContext, Outcome
from coercion.errors import MalformedDataError
from coercion.net import incoming
from coercion.net.audit import AuditTrail
from coercion.net.boundary import Operation, Provider, Service, guarded
from coercion.net.boundary import status as _status
from coercion.net.forward import Forwarder
from coercion.net.paths import mpps_path
from coercion.net.workers import exclusive

__all__ = ["MPPS_SOP_CLASS", "Mpps"]

MPPS_SOP_CLASS = UID(ModalityPerformedProcedureStep)
_SUCCESS = 0x0000
_DUPLICATE_INSTANCE = 0x0111
_NO_SUCH_INSTANCE = 0x0112
_PROCESSING_FAILURE = 0x0110
_INVALID_INSTANCE = 0x0117
_FINAL_MPPS = ("COMPLETED", "DISCONTINUED")


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


class Mpps(Provider):
    """The N-CREATE and N-SET handlers of a node (:meth:`on_n_create`, :meth:`on_n_set`)."""

    def __init__(
        self,
        data: Path,
        engine: Engine,
        forwarder: Forwarder,
        audit: AuditTrail,
        settings: Callable[[], DeviceSettings],
    ) -> None:
        super().__init__(engine, audit, settings)
        self.folder = data / "mpps"
        self.forwarder = forwarder
        self._lock = self.folder / ".lock"  # one read-merge-write at a time, every worker

    def _request(
        self, event: evt.Event, op: Operation, received: Any
    ) -> tuple[Path, Dataset | None]:
        """The record's path, after checks: the instance UID, then the received data set.

        Returns (path, None) or, when refused (logged and audited), (path, status).
        An invalid instance UID is 0x0117; a malformed data set raises (the boundary's 0x0110).
        """
        label = f"{op.ctx.dimse} from {op.ctx.calling_ae}"
        try:
            path = mpps_path(self.folder, op.instance, label)
        except MalformedDataError as exc:
            return self.folder, self.boundary.fail(op, exc, _INVALID_INSTANCE)
        if received is not None and incoming.size(received):
            incoming.check(received, str(event.context.transfer_syntax), label)
        return path, None

    def _write(self, path: Path, ds: Dataset, instance: str) -> None:
        ds.file_meta = _file_meta(MPPS_SOP_CLASS, instance)
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        with atomic_output(path, sync=self.settings().sync_writes) as fd:
            write_all(fd, buffer.getvalue())

    def _forward(
        self, ctx: EventContext, message: Dataset, instance: str, record: Path
    ) -> list[str]:
        """Queue an MPPS message (the coerced N-CREATE attributes or N-SET changes)."""
        if not self.forwarder.rules:
            return []
        staged = self.folder / ".outgoing" / f"{time.time_ns()}.dcm"
        self._write(staged, copy.deepcopy(message), instance)
        try:
            return self.forwarder.enqueue_message(
                staged, ctx, dcmread(record), sync=self.settings().sync_writes
            )
        finally:
            staged.unlink(missing_ok=True)

    @guarded(Service.N_CREATE)
    def on_n_create(self, event: evt.Event, op: Operation) -> tuple[int | Dataset, Dataset | None]:
        """Create a record; the status and the attributes as stored."""
        request: Any = event.request
        op.instance = op.instance or generate_uid()
        return self._handle(
            event, op, request.AttributeList, lambda: event.attribute_list, self._create
        )

    @guarded(Service.N_SET)
    def on_n_set(self, event: evt.Event, op: Operation) -> tuple[int | Dataset, Dataset | None]:
        """Merge modifications into a record; the status."""
        request: Any = event.request
        status, _stored = self._handle(
            event, op, request.ModificationList, lambda: event.modification_list, self._merge
        )
        return status, None

    def _handle(
        self,
        event: evt.Event,
        op: Operation,
        received: Any,
        decoded: Callable[[], Dataset],
        update: Callable[[Operation, Path, Outcome], int | Dataset | None],
    ) -> tuple[int | Dataset, Dataset | None]:
        """Check, coerce the data set (*decoded* decodes it), then, one message
        at a time, *update* the record (its refusal status, or None) and queue the message.
        """
        path, refused = self._request(event, op, received)
        if refused is not None:
            return refused, None
        op.step = "coerce"
        outcome = self.engine.apply(decoded(), op.ctx)
        op.outcome = outcome
        op.step = "write"
        private_folders(self.folder)
        with exclusive(self._lock):
            stopped = update(op, path, outcome)
            if stopped is not None:
                return stopped, None
            forwarded = self._forward(op.ctx, outcome.dataset, op.instance, path)
        extra = {"forwarded_to": forwarded} if forwarded else None
        self.audit.record(op.ctx, _SUCCESS, outcome, op.instance, extra=extra)
        return _SUCCESS, outcome.dataset

    def _create(self, op: Operation, path: Path, outcome: Outcome) -> int | None:
        """Write the new record; 0x0111 when there is one."""
        if path.exists():
            self.audit.record(op.ctx, _DUPLICATE_INSTANCE, outcome, op.instance)
            return _DUPLICATE_INSTANCE
        self._write(path, outcome.dataset, op.instance)
        return None

    def _merge(self, op: Operation, path: Path, outcome: Outcome) -> int | Dataset | None:
        """Merge the modifications into the record; 0x0112 without one, 0x0110 once final."""
        if not path.exists():
            self.audit.record(op.ctx, _NO_SUCH_INSTANCE, None, op.instance)
            return _NO_SUCH_INSTANCE
        current = dcmread(path)
        if str(current.get("PerformedProcedureStepStatus", "")) in _FINAL_MPPS:
            self.audit.record(op.ctx, _PROCESSING_FAILURE, None, op.instance, "already final")
            return _status(_PROCESSING_FAILURE, "procedure step already final")
        for elem in outcome.dataset:  # iterating converts raw elements (VR known)
            current[elem.tag] = elem
        self._write(path, current, op.instance)
        return None
