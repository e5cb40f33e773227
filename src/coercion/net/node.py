"""``coercion serve``: a pynetdicom node whose DIMSE events go through the engine.

Services: C-ECHO; Storage SCP for every storage SOP class and transfer
syntax (no transcoding); Modality Worklist SCP answering from a local
folder; MPPS SCP (N-CREATE, N-SET). Every dataset is coerced for its event
context before anything else happens to it; an object no rule applies to is
stored from the bytes received, without decoding. An object large enough to be
spooled while it came in stays on disk (see :mod:`coercion.net.incoming`). The AE titles, the known
peers and the rules come from the directory and follow its changes. Every
handler runs inside the error boundary of :mod:`coercion.net.boundary`: any
failure is answered with its service's failure status, logged once and audited.
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt

from coercion.dicom.outputs import publish, remove_stale_temporaries, write_all
from coercion.dicom.part10 import atomic_output, encode_file, file_meta_bytes, read_bytes, read_file
from coercion.directory.config import Configuration
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import Dimse, Engine, EventContext, Outcome, Role
from coercion.errors import MalformedDataError
from coercion.net import incoming, metrics, reactor, receive
from coercion.net.accept import request_handler
from coercion.net.audit import AuditTrail
from coercion.net.boundary import (
    Boundary,
    DataSetMismatchError,
    Operation,
    Service,
    guarded,
)
from coercion.net.boundary import status as _status
from coercion.net.forward import Forwarder
from coercion.net.limits import AssociationCounter, NetworkLimits, from_settings
from coercion.net.paths import mpps_path, object_path, uid_component
from coercion.net.worklist import Worklist

__all__ = ["Node", "NodeSettings"]

log = logging.getLogger(__name__)

_SUCCESS = 0x0000
_PENDING = 0xFF00
_CANCEL = 0xFE00
_CANNOT_UNDERSTAND = 0xC000
_OUT_OF_RESOURCES = 0xA700
_DUPLICATE_INSTANCE = 0x0111
_NO_SUCH_INSTANCE = 0x0112
_PROCESSING_FAILURE = 0x0110
_INVALID_INSTANCE = 0x0117
_FINAL_MPPS = ("COMPLETED", "DISCONTINUED")
_VERIFICATION = UID("1.2.840.10008.1.1")
_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")
_MPPS = UID("1.2.840.10008.3.1.2.3.3")

# Identifiers are PHI: pynetdicom must never log them.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# Nor bind its standard logging handlers: their lines go nowhere (pynetdicom logs at WARNING,
# see coercion.cli.logs), and the C-STORE one reads a received data set whole into memory,
# spooled or not (``msg.data_set.getvalue()``), just to say "Present".
_config.LOG_HANDLER_LEVEL = "none"


@dataclass(frozen=True)
class NodeSettings:
    """Where the node listens and keeps its data."""

    host: str = "127.0.0.1"
    port: int = 11112
    data: Path = Path(".coercion/data")
    worklist: Path | None = None  # default: DATA/worklist
    secret: bytes = b""
    #: TLS: the node's certificate and key (the listener uses TLS when given) and the CA
    #: certificates that peers' certificates must chain to (clients must then present one).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    def server_tls(self) -> ssl.SSLContext | None:
        """The listener's TLS context, or None for plain TCP."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_ca is not None:
            context.load_verify_locations(self.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_tls(self) -> ssl.SSLContext:
        """The TLS context for outgoing associations to peers whose connection uses TLS."""
        context = ssl.create_default_context(
            cafile=str(self.tls_ca) if self.tls_ca is not None else None
        )
        if self.tls_cert is not None:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


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


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


class Node:
    """The DICOM node; :meth:`start` listens, :meth:`stop` shuts down cleanly."""

    def __init__(self, watcher: ConfigurationWatcher, settings: NodeSettings) -> None:
        configuration = watcher.current
        if configuration is None:
            configuration = watcher.load_initial()
        self.watcher = watcher
        self.settings = settings
        self.configuration = configuration
        self.engine = Engine(configuration.rules)
        watcher.on_change = self._on_change
        self.objects = settings.data / "objects"
        self.mpps = settings.data / "mpps"
        self.worklist = Worklist(settings.worklist or settings.data / "worklist")
        self.audit = AuditTrail(settings.data / "audit", settings.secret)
        self.boundary = Boundary(self.audit)
        self.forwarder = Forwarder(settings.data, self.engine, self.audit)
        self.forwarder.configure(configuration, configuration.forward_rules)
        self.forwarder.tls_context = settings.client_tls()
        self._mpps_lock = threading.Lock()
        self._server: Any = None
        self.limits: NetworkLimits = from_settings(configuration.device.settings)
        self.associations = AssociationCounter()
        self.ae = self._make_ae()

    # -- configuration ----------------------------------------------------------------

    def _on_change(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self.engine.replace_rules(configuration.rules)
        self.forwarder.configure(configuration, configuration.forward_rules)
        limits = from_settings(configuration.device.settings)
        if limits != self.limits:
            self.limits = limits
            self._apply_limits()

    @property
    def sync_writes(self) -> bool:
        """Objects are on disk before success is answered, unless coercionSyncWrites is FALSE."""
        return self.configuration.device.settings.get("coercionSyncWrites") is not False

    @property
    def ae_titles(self) -> list[str]:
        """The node's AE titles, from the directory."""
        return [ae.title for ae in self.configuration.device.aes] or ["COERCION"]

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_titles[0])
        # Associations are counted in _on_requested, once a whole A-ASSOCIATE-RQ is in;
        # pynetdicom's own count includes connections that have not sent one yet.
        ae.maximum_associations = 1 << 16
        ae.require_called_aet = True  # checked against the AE title set per association
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(_VERIFICATION)
        ae.add_supported_context(_WORKLIST_FIND)
        ae.add_supported_context(_MPPS)
        self.ae = ae
        self._apply_limits()
        return ae

    def _apply_limits(self) -> None:
        """Timeouts and sizes from the device's settings, for the associations to come."""
        limits = self.limits
        self.ae.maximum_pdu_size = limits.max_pdu_length
        self.ae.acse_timeout = limits.acse_timeout
        self.ae.dimse_timeout = limits.dimse_timeout
        self.ae.network_timeout = limits.network_timeout
        receive.configure(self.ae, limits, self.settings.data / "incoming")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Listen (in background threads); return the address actually bound."""
        reactor.install()  # no 1 ms sleeps; bounded reads (see coercion.net.reactor)
        stale = remove_stale_temporaries(self.settings.data)  # a kill -9 left them
        if stale:
            log.info("removed %d temporary files an interrupted run left", len(stale))
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_N_CREATE, self._on_n_create),
            (evt.EVT_N_SET, self._on_n_set),
        ]
        # TLS is set up in each connection's thread, not in the accept loop
        handler = request_handler(self.settings.server_tls(), lambda: self.limits)
        server: Any = reactor.start_server(
            self.ae, (self.settings.host, self.settings.port), handlers, handler
        )
        # Without TCP_NODELAY every DIMSE exchange waits ~40 ms (Nagle and delayed ACK);
        # accepted sockets inherit the option from the listening one.
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server = server
        self.watcher.start()
        self.forwarder.start()
        host, port = server.server_address[:2]
        log.info("listening on %s:%s as %s", host, port, ", ".join(self.ae_titles))
        return str(host), int(port)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let running associations finish for *grace* seconds, abort the rest."""
        if self._server is not None:
            self._server.shutdown()
            reactor.close_pending(self.ae)  # connections without an association yet: closed
            deadline = time.monotonic() + grace
            while self.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            self.ae.shutdown()
            self._server = None
        self.forwarder.stop()
        self.watcher.stop()

    # -- association ---------------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        request: Any = assoc.requestor.primitive
        called = str(request.called_ae_title).strip()
        calling = str(request.calling_ae_title).strip()
        if called not in self.ae_titles:
            # pynetdicom rejects it (require_called_aet): the called AE is not the acceptor's.
            log.warning("association from %s refused: called AE %s is not ours", calling, called)
            return
        assoc.acceptor.ae_title = called
        settings = self.configuration.device.settings
        if settings.get("coercionRestrictCallingAETitles") and not self._known(
            calling, assoc.requestor.address
        ):
            log.warning("association from unknown calling AE %s refused", calling)
            _reject(assoc, 0x01, 0x01, 0x03)  # rejected permanent, calling AE unknown
        elif self.associations.admit(assoc, assoc.requestor.address, self.limits):
            _reject(assoc, 0x02, 0x03, 0x02)  # rejected transient, local limit exceeded

    def _known(self, calling: str, address: str) -> bool:
        for device in self.configuration.devices.values():
            for ae in device.aes:
                if ae.title != calling or device is self.configuration.device:
                    continue
                if not ae.hostname:
                    return True
                try:
                    allowed = {info[4][0] for info in socket.getaddrinfo(ae.hostname, None)}
                except OSError:
                    allowed = {ae.hostname}
                if address in allowed:
                    return True
        return False

    # -- services ----------------------------------------------------------------------------

    @guarded(Service.C_ECHO)
    def _on_echo(self, event: evt.Event, op: Operation) -> int:
        return _SUCCESS

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
            with incoming.part10_file(body, meta, self.settings.data / "incoming") as path:
                body.close()  # the spooled copy is not needed any more
                ds = read_file(path, name=label)  # long values (pixel data) deferred
                self._match(ds, event, sop_class, instance, label)
                yield Received(ds, rules, None, path)
            return
        data = meta + body.getvalue()
        # No rule can apply: read only what the checks, the path and forwarding need.
        ds = read_bytes(data, label, 0xFFFFFFFF if rules else self.forwarder.needs_up_to())
        self._match(ds, event, sop_class, instance, label)
        yield Received(ds, rules, data, None)

    @staticmethod
    def _match(ds: Dataset, event: evt.Event, sop_class: str, instance: str, label: str) -> None:
        """Raise unless *ds* is the object its C-STORE request announced."""
        uid_component(ds.get("SOPInstanceUID"), "(0008,0018) SOPInstanceUID", label)
        mismatch = _mismatch(ds, sop_class, instance, str(event.context.abstract_syntax))
        if mismatch:
            raise DataSetMismatchError(mismatch)

    @guarded(Service.C_STORE)
    def _on_store(self, event: evt.Event, op: Operation) -> int | Dataset:
        with self._receive(event, op.ctx, op.label) as received:
            return self._store(received, op)

    def _store(self, received: Received, op: Operation) -> int:
        """Coerce, write, forward and audit a received object."""
        ctx, ds = op.ctx, received.ds
        op.step = "coerce"
        started = time.perf_counter()
        outcome = self.engine.apply(ds, ctx) if received.rules else Outcome(ds)
        metrics.observe_coercion(ctx, outcome, time.perf_counter() - started)
        op.outcome = outcome
        op.step = "write"
        stored = outcome.dataset
        path = object_path(self.objects, stored, op.label)
        replaced = path.exists()  # a second copy replaces the first, whole or not at all
        if outcome.applied:
            with atomic_output(path, sync=self.sync_writes) as fd:
                # long values not read are copied from the received file
                encode_file(stored, source=received.file).write_to(fd)  # type: ignore[arg-type]
        elif received.file is not None:
            publish(received.file, path, sync=self.sync_writes)  # untouched: renamed into place
            stored.filename = str(path)  # where its deferred values now are
        else:
            with atomic_output(path, sync=self.sync_writes) as fd:
                write_all(fd, received.data or b"")  # untouched: the bytes as received
        op.step = "forward"
        forwarded = self.forwarder.enqueue(path, ctx, stored, sync=self.sync_writes)
        op.step = "audit"
        extra: dict[str, object] = {"forwarded_to": forwarded} if forwarded else {}
        if replaced:
            extra["replaced"] = True
        self.audit.record(ctx, _SUCCESS, outcome, op.instance, extra=extra or None)
        return _SUCCESS

    @guarded(Service.C_FIND)
    def _on_find(self, event: evt.Event, op: Operation) -> Any:
        request: Any = event.request
        ctx = op.ctx
        incoming.check(request.Identifier, str(event.context.transfer_syntax), op.label)
        op.step = "coerce query"
        query = self.engine.apply(event.identifier, ctx).dataset
        op.step = "answers"
        upstream = self.configuration.device.settings.get("coercionWorklistAETitle")
        answers = (
            self._upstream_answers(event, query, ctx, str(upstream))
            if upstream
            else ((_PENDING, item) for item in self.worklist.find(query))
        )
        response_ctx = replace(ctx, dimse=Dimse.C_FIND_RSP)
        answered = 0
        for code, item in answers:
            if event.is_cancelled or code == _CANCEL:
                self.audit.record(ctx, _CANCEL, None, extra={"answers": answered})
                yield _CANCEL, None
                return
            if item is None:  # the upstream failed: its status goes back
                self.audit.record(ctx, code, None, "", "upstream worklist failed")
                yield code, None
                return
            op.step = "coerce answer"
            coerced = self.engine.apply(item, response_ctx).dataset
            op.step = "answers"
            answered += 1
            yield code, coerced
        op.step = "audit"
        self.audit.record(ctx, _SUCCESS, None, extra={"answers": answered})

    def _upstream_answers(
        self, event: evt.Event, query: Dataset, ctx: EventContext, upstream: str
    ) -> Iterator[tuple[int, Dataset | None]]:
        """Ask the upstream worklist SCP: the request and each answer coerced as SCU."""
        address = self.forwarder.address(upstream)
        if address is None:
            log.error("worklist upstream %s is not a known AE title with host and port", upstream)
            yield _CANNOT_UNDERSTAND, None
            return
        host, port = address
        request_ctx = EventContext(
            Dimse.C_FIND_RQ, Role.SCU, ctx.called_ae, upstream, host, "", ctx.sop_class_uid
        )
        request = self.engine.apply(query, request_ctx).dataset  # a failure: the boundary's
        ae = AE(ae_title=ctx.called_ae)
        ae.network_timeout = ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.add_requested_context(_WORKLIST_FIND)
        assoc = ae.associate(
            host, port, ae_title=upstream, tls_args=self.forwarder.tls_args(upstream, host)
        )
        if not assoc.is_established:
            log.warning("worklist upstream %s at %s:%s unreachable", upstream, host, port)
            yield _OUT_OF_RESOURCES, None
            return
        answer_ctx = replace(request_ctx, dimse=Dimse.C_FIND_RSP)
        try:
            for status, identifier in assoc.send_c_find(request, _WORKLIST_FIND):
                code = int(getattr(status, "Status", _CANNOT_UNDERSTAND))
                if code in (_PENDING, 0xFF01) and identifier is not None:
                    if event.is_cancelled:
                        assoc.send_c_cancel(1, query_model=_WORKLIST_FIND)
                        yield _CANCEL, None
                        return
                    yield _PENDING, self.engine.apply(identifier, answer_ctx).dataset
                elif code == _SUCCESS:
                    return
                else:
                    yield (_CANCEL if code == _CANCEL else code), None
                    return
        finally:
            if assoc.is_established:
                assoc.release()

    def _mpps_request(
        self, event: evt.Event, op: Operation, received: Any
    ) -> tuple[Path, Dataset | None]:
        """The record's path, after checks: the instance UID, then the received data set.

        Returns (path, None) or, when refused (logged and audited), (path, status).
        An invalid instance UID is 0x0117; a malformed data set raises (the boundary's 0x0110).
        """
        label = f"{op.ctx.dimse} from {op.ctx.calling_ae}"
        try:
            path = mpps_path(self.mpps, op.instance, label)
        except MalformedDataError as exc:
            return self.mpps, self.boundary.fail(op, exc, _INVALID_INSTANCE)
        if received is not None and incoming.size(received):
            incoming.check(received, str(event.context.transfer_syntax), label)
        return path, None

    def _write_mpps(self, path: Path, ds: Dataset, instance: str) -> None:
        ds.file_meta = _file_meta(_MPPS, instance)
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        with atomic_output(path, sync=self.sync_writes) as fd:
            write_all(fd, buffer.getvalue())

    def _forward_message(
        self, ctx: EventContext, message: Dataset, instance: str, record: Path
    ) -> list[str]:
        """Queue an MPPS message (the coerced N-CREATE attributes or N-SET changes)."""
        if not self.forwarder.rules:
            return []
        staged = self.mpps / ".outgoing" / f"{time.time_ns()}.dcm"
        self._write_mpps(staged, copy.deepcopy(message), instance)
        try:
            return self.forwarder.enqueue_message(
                staged, ctx, dcmread(record), sync=self.sync_writes
            )
        finally:
            staged.unlink(missing_ok=True)

    @guarded(Service.N_CREATE)
    def _on_n_create(self, event: evt.Event, op: Operation) -> tuple[int | Dataset, Dataset | None]:
        request: Any = event.request
        op.instance = instance = op.instance or generate_uid()
        ctx = op.ctx
        path, refused = self._mpps_request(event, op, request.AttributeList)
        if refused is not None:
            return refused, None
        op.step = "coerce"
        outcome = self.engine.apply(event.attribute_list, ctx)
        op.outcome = outcome
        op.step = "write"
        with self._mpps_lock:
            if path.exists():
                self.audit.record(ctx, _DUPLICATE_INSTANCE, outcome, instance)
                return _DUPLICATE_INSTANCE, None
            self._write_mpps(path, outcome.dataset, instance)
            forwarded = self._forward_message(ctx, outcome.dataset, instance, path)
        extra = {"forwarded_to": forwarded} if forwarded else None
        self.audit.record(ctx, _SUCCESS, outcome, instance, extra=extra)
        return _SUCCESS, outcome.dataset

    @guarded(Service.N_SET)
    def _on_n_set(self, event: evt.Event, op: Operation) -> tuple[int | Dataset, Dataset | None]:
        request: Any = event.request
        instance, ctx = op.instance, op.ctx
        path, refused = self._mpps_request(event, op, request.ModificationList)
        if refused is not None:
            return refused, None
        op.step = "coerce"
        outcome = self.engine.apply(event.modification_list, ctx)
        op.outcome = outcome
        op.step = "write"
        with self._mpps_lock:
            if not path.exists():
                self.audit.record(ctx, _NO_SUCH_INSTANCE, None, instance)
                return _NO_SUCH_INSTANCE, None
            current = dcmread(path)
            if str(current.get("PerformedProcedureStepStatus", "")) in _FINAL_MPPS:
                self.audit.record(ctx, _PROCESSING_FAILURE, None, instance, "already final")
                return _status(_PROCESSING_FAILURE, "procedure step already final"), None
            for elem in outcome.dataset:  # iterating converts raw elements (VR known)
                current[elem.tag] = elem
            self._write_mpps(path, current, instance)
            forwarded = self._forward_message(ctx, outcome.dataset, instance, path)
        extra = {"forwarded_to": forwarded} if forwarded else None
        self.audit.record(ctx, _SUCCESS, outcome, instance, extra=extra)
        return _SUCCESS, None


def _reject(assoc: Any, result: int, source: int, reason: int) -> None:
    """Send an A-ASSOCIATE-RJ and end the association."""
    assoc.acse.send_reject(result, source, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()
