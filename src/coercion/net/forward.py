"""Forwarding: stored objects queued on disk per destination, sent as Storage SCU with retries.

A forward rule (``coercionForwardRule``) names destination AE titles of known
devices and, like a coercion rule, may be limited to SOP classes, conditions
and the AE title the object was received on. A stored object that matches is
linked into ``DATA/queue/<AE title>/``; one sender thread per destination
takes the queue in order, coerces each object for the outgoing context
(C_STORE_RQ, SCU, calling = the AE it was received on, called = the
destination) and sends it. An object leaves the queue only after the
destination answered success or a warning, so a stopped destination (or a
stopped node) loses nothing: the queue is retried with backoff and read again
at start.

An object that cannot go (a failure status, no accepted presentation context,
no SOP Class UID, a failed rule, or no answer within the DIMSE timeout on
``max_attempts`` tries) is moved to ``failed/`` with a ``.reason`` file naming
the destination and the status or exception class; one object never stops a
queue, and a sender thread that dies is started again. Delivery is exactly
once unless an answer never came (a crash between the answer and the dequeue,
a timeout, a dropped connection): then the object is sent again, at least once.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import transport as _transport
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import, unseen by mypy
    ModalityPerformedProcedureStep,
)
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from coercion.dicom.outputs import atomic_output, private_folders, publish_copy, write_all
from coercion.dicom.part10 import read_file
from coercion.directory.config import Configuration
from coercion.engine import Dimse, Engine, EventContext, ForwardRule, Outcome, Role
from coercion.errors import CoercionError, RuleFailedError
from coercion.net.audit import AuditTrail

__all__ = ["Forwarder", "enable_tcp_nodelay"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 60.0
_MPPS = ModalityPerformedProcedureStep
#: Queued MPPS messages: file-name kind -> the DIMSE they are sent as.
_MESSAGE_DIMSE = {"ncreate": Dimse.N_CREATE_RQ, "nset": Dimse.N_SET_RQ}
_MPPS_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Series Instance UID: the last of the UIDs the storage path is made of.
_INSTANCE_UIDS_END = 0x0020000E
_BATCH = 64
#: Status categories (pynetdicom's) that count as delivered: warnings too (0x0001, 0xBxxx...).
_DELIVERED = (STATUS_SUCCESS, STATUS_WARNING)
_ALREADY_CREATED = 0x0111
#: The audit status of an object that was not sent (no answer from the destination).
_NOT_SENT = 0xC000
#: The suffix of the reason file next to an object in failed/.
_REASON = ".reason"
#: What an exception from pynetdicom's send_*() means, for the reason file.
_SEND_ERRORS = {
    "ValueError": "no presentation context accepted for it, or it cannot be encoded",
    "AttributeError": "SOP Class UID, SOP Instance UID or Transfer Syntax UID missing",
}
_WATCH_INTERVAL = 5.0


def enable_tcp_nodelay() -> None:
    """Make every socket pynetdicom opens as a requestor set TCP_NODELAY.

    pynetdicom never sets it; without it each DIMSE exchange on an
    association waits on Nagle's algorithm and delayed ACKs (~40 ms).
    """
    original = _transport.AssociationSocket._create_socket
    if getattr(original, "_coercion_nodelay", False):
        return

    def create(self: Any, address: Any) -> socket.socket:
        sock = original(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    create._coercion_nodelay = True  # type: ignore[attr-defined]
    _transport.AssociationSocket._create_socket = create  # type: ignore[method-assign]


@dataclass
class _Item:
    """A queued object, coerced for its destination."""

    path: Path
    ctx: EventContext
    outcome: Outcome
    dataset: Dataset
    syntax: str
    instance: str

    @property
    def kind(self) -> str:
        """``store``, ``ncreate`` or ``nset`` (from the queue file's name)."""
        return _kind(self.path)


def _kind(path: Path) -> str:
    parts = path.name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in _MESSAGE_DIMSE else "store"


class _Sender(threading.Thread):
    """Send the queue of one destination; survives any failure (it backs off and retries)."""

    def __init__(self, forwarder: Forwarder, destination: str) -> None:
        super().__init__(name=f"forward-{destination}", daemon=True)
        self.forwarder = forwarder
        self.destination = destination
        self.folder = forwarder.queue / destination
        self.failed = forwarder.queue / destination / "failed"
        self.wake = threading.Event()
        self.delay = 0.0

    def run(self) -> None:
        forwarder = self.forwarder
        while not forwarder.stopping.is_set():
            try:
                pending = sorted(p for p in self.folder.glob("*.dcm") if p.is_file())
                if not pending:
                    self.wake.wait(1.0)
                    self.wake.clear()
                    continue
                self._send(pending[:_BATCH])
                self.delay = 0.0
            except (OSError, ConnectionError, RuntimeError) as exc:
                self._back_off(str(exc))
            except Exception as exc:  # the sender survives anything
                self._back_off(f"unexpected {type(exc).__name__}")  # the class: no value

    def _back_off(self, reason: str) -> None:
        self.delay = min(max(self.delay * 2, 1.0), _MAX_BACKOFF)
        log.warning(
            "forwarding to %s failed (%s); %d queued, retrying in %.0f s",
            self.destination,
            reason,
            sum(1 for _ in self.folder.glob("*.dcm")),
            self.delay,
        )
        self.forwarder.stopping.wait(self.delay)

    def _send(self, batch: list[Path]) -> None:
        address = self.forwarder.address(self.destination)
        if address is None:
            raise RuntimeError(f"{self.destination} is not a known AE title with a host and port")
        prepared = self._prepare(batch, address[0])
        if prepared:
            self._deliver(prepared, *address)

    def _prepare(self, batch: list[Path], host: str) -> list[_Item]:
        """Read and coerce each queued object for the outgoing context."""
        prepared = []
        for path in batch:
            local_ae = path.name.split("--", 1)[0]
            try:
                ds = read_file(path, defer=False)
            except CoercionError as exc:
                self._give_up(path, f"unreadable: {exc}")
                continue
            kind = _kind(path)
            if kind == "store":
                dimse = Dimse.C_STORE_RQ
                sop_class = str(ds.get("SOPClassUID", ""))
                instance = str(ds.get("SOPInstanceUID", ""))
                if not sop_class:  # no presentation context to propose for it
                    self._give_up(path, "no SOP Class UID in the stored object")
                    continue
            else:
                dimse = _MESSAGE_DIMSE[kind]
                sop_class = _MPPS
                instance = str(ds.file_meta.get("MediaStorageSOPInstanceUID", ""))
            ctx = EventContext(dimse, Role.SCU, local_ae, self.destination, host, "", sop_class)
            try:
                outcome = self.forwarder.engine.apply(ds, ctx)
            except RuleFailedError as exc:
                self.forwarder.audit.record(ctx, _NOT_SENT, None, instance, str(exc))
                self._give_up(path, f"a rule failed: {exc}")
                continue
            except Exception as exc:  # one object stops no queue
                self.forwarder.audit.record(ctx, _NOT_SENT, None, instance, type(exc).__name__)
                self._give_up(path, f"{type(exc).__name__} while coercing")
                continue
            syntax = str(ds.file_meta.TransferSyntaxUID)
            prepared.append(_Item(path, ctx, outcome, outcome.dataset, syntax, instance))
        return prepared

    def _associate(
        self, prepared: list[_Item], host: str, port: int
    ) -> tuple[Any, set[tuple[str, str]]]:
        """An association proposing the contexts *prepared* needs; the contexts proposed."""
        forwarder = self.forwarder
        ae = AE(ae_title=prepared[0].ctx.calling_ae or "COERCION")
        ae.network_timeout = 30
        ae.acse_timeout = 30
        ae.dimse_timeout = forwarder.dimse_timeout
        contexts: set[tuple[str, str]] = set()
        for item in prepared:
            key = (item.ctx.sop_class_uid, item.syntax)
            if item.kind != "store":
                if (_MPPS, "") not in contexts:
                    contexts.add((_MPPS, ""))
                    ae.add_requested_context(_MPPS, list(_MPPS_SYNTAXES))
            elif key not in contexts and len(contexts) < 127:
                contexts.add(key)
                ae.add_requested_context(*key)
        assoc = ae.associate(
            host,
            port,
            ae_title=self.destination,
            tls_args=forwarder.tls_args(self.destination, host),
        )
        if not assoc.is_established:
            raise ConnectionError(f"association with {self.destination} at {host}:{port} failed")
        return assoc, contexts

    def _deliver(self, prepared: list[_Item], host: str, port: int) -> None:
        """Send *prepared* over one association; dequeue what the destination accepted."""
        assoc, requested = self._associate(prepared, host, port)
        done = 0
        try:
            for item in prepared:
                key = (item.ctx.sop_class_uid, item.syntax)
                if item.kind == "store" and key not in requested:
                    continue  # no room for its context in this association: the next batch
                if not assoc.is_established:
                    if done:
                        return  # after progress (e.g. an object set aside): the next batch now
                    raise ConnectionError(f"{self.destination} ended the association")
                self._deliver_one(assoc, item)
                done += 1
        finally:
            if assoc.is_established:
                assoc.release()

    def _deliver_one(self, assoc: Any, item: _Item) -> None:
        """Send one item; dequeue it, keep it for another try, or set it aside in failed/."""
        forwarder = self.forwarder
        try:
            code = self._send_one(assoc, item)
        except RuntimeError:
            raise  # the association is gone: the whole batch is tried again
        except Exception as exc:  # e.g. ValueError: no context
            name = type(exc).__name__
            forwarder.audit.record(item.ctx, _NOT_SENT, item.outcome, item.instance, name)
            self._give_up(item.path, f"{name} while sending ({_SEND_ERRORS.get(name, 'not sent')})")
            return
        if code < 0:
            self._no_answer(item)
            return
        category = code_to_category(code)
        if category in _DELIVERED or (item.kind == "ncreate" and code == _ALREADY_CREATED):
            # 0x0111 on N-CREATE: already created there (an earlier try got through).
            forwarder.audit.record(item.ctx, code, item.outcome, item.instance)
            item.path.unlink()
            forwarder.attempts.pop(item.path, None)
            forwarder.delivered += 1
        else:
            forwarder.audit.record(
                item.ctx, code, item.outcome, item.instance, "refused by destination"
            )
            self._give_up(item.path, f"refused with status 0x{code:04X} ({category})")

    def _no_answer(self, item: _Item) -> None:
        """No answer within the DIMSE timeout (or the connection dropped): another try, bounded."""
        forwarder = self.forwarder
        tries = forwarder.attempts.get(item.path, 0) + 1
        forwarder.attempts[item.path] = tries
        if tries < forwarder.max_attempts:
            raise ConnectionError(f"no answer from {self.destination} (attempt {tries})")
        detail = f"no answer within {forwarder.dimse_timeout:g} s, {tries} attempts"
        forwarder.audit.record(item.ctx, _NOT_SENT, item.outcome, item.instance, detail)
        self._give_up(item.path, detail)

    @staticmethod
    def _send_one(assoc: Any, item: _Item) -> int:
        """Send one queued item; its status (-1 when there was no answer)."""
        ds = item.dataset
        if item.kind == "ncreate":
            status, _ = assoc.send_n_create(ds, _MPPS, item.instance)
        elif item.kind == "nset":
            status, _ = assoc.send_n_set(ds, _MPPS, item.instance)
        else:
            status = assoc.send_c_store(ds)
        return int(getattr(status, "Status", -1))

    def _give_up(self, path: Path, reason: str) -> None:
        """An object that is not to be tried again: set aside with its reason, not lost."""
        self.forwarder.attempts.pop(path, None)
        private_folders(self.failed)
        target = self.failed / path.name
        text = f"{self.destination}: {reason}\n"
        with atomic_output(target.with_name(target.name + _REASON)) as fd:
            write_all(fd, text.encode())
        os.replace(path, target)  # after its reason: an object in failed/ always has one
        log.error("forwarding to %s: %s set aside (%s)", self.destination, path.name, reason)


class Forwarder:
    """The forwarding queues of a node and their sender threads."""

    def __init__(self, data: Path, engine: Engine, audit: AuditTrail) -> None:
        enable_tcp_nodelay()
        self.queue = data / "queue"
        self.engine = engine
        self.audit = audit
        self.rules: tuple[ForwardRule, ...] = ()
        self.addresses: dict[str, tuple[str, int]] = {}
        self.tls_peers: set[str] = set()
        #: The client TLS context for peers whose connection uses TLS (set by the node).
        self.tls_context: ssl.SSLContext | None = None
        self.stopping = threading.Event()
        self.delivered = 0
        #: Seconds a sender waits for each answer; the tries of an object never answered.
        self.dimse_timeout: float = 60.0
        self.max_attempts = 3
        #: Tries so far of the queued objects that were sent and never answered.
        self.attempts: dict[Path, int] = {}
        self._senders: dict[str, _Sender] = {}
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def configure(self, configuration: Configuration, rules: tuple[ForwardRule, ...]) -> None:
        """Take the rules and the known AEs' addresses of a (new) configuration."""
        self.rules = rules
        self.addresses = {
            ae.title: (ae.hostname, ae.port)
            for device in configuration.devices.values()
            if device is not configuration.device
            for ae in device.aes
            if ae.hostname and ae.port
        }
        self.tls_peers = {
            ae.title for device in configuration.devices.values() for ae in device.aes if ae.tls
        }

    def tls_args(self, ae_title: str, host: str) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` for an association with *ae_title*, or None for plain TCP."""
        if ae_title not in self.tls_peers:
            return None
        context = self.tls_context or ssl.create_default_context()
        return context, host

    def needs_up_to(self) -> int:
        """The last top-level tag the forward rules' conditions (and the storage path) read."""
        tags = [c.tag for r in self.rules for c in r.conditions if c.tag is not None]
        return max([_INSTANCE_UIDS_END, *tags])

    def address(self, ae_title: str) -> tuple[str, int] | None:
        """Host and port of a known AE title."""
        return self.addresses.get(ae_title)

    def start(self) -> None:
        """Start senders for every queue that holds objects (left from an earlier run).

        A watch thread then checks every few seconds that each queue holding
        objects has a running sender, and starts one where it is missing.
        """
        self.revive()
        if self._watch is None:
            self._watch = threading.Thread(target=self._watching, name="forward-watch", daemon=True)
            self._watch.start()

    def _watching(self) -> None:
        while not self.stopping.wait(_WATCH_INTERVAL):
            try:
                self.revive()
            except Exception as exc:  # the watch survives anything
                log.error("forwarding watch failed (%s)", type(exc).__name__)

    def revive(self) -> None:
        """Make sure every queue that holds objects has a running sender."""
        if self.queue.is_dir():
            for folder in self.queue.iterdir():
                if folder.is_dir() and any(folder.glob("*.dcm")):
                    self._sender(folder.name).wake.set()

    def _sender(self, destination: str) -> _Sender:
        """The running sender of *destination*: started, or started again if it died."""
        with self._lock:
            sender = self._senders.get(destination)
            if sender is None or not (sender.is_alive() or self.stopping.is_set()):
                if sender is not None:
                    log.error("forwarding to %s: the sender had stopped; restarted", destination)
                sender = _Sender(self, destination)
                private_folders(sender.folder)
                self._senders[destination] = sender
                sender.start()
            return sender

    def enqueue(
        self, stored: Path, ctx: EventContext, ds: Dataset, *, sync: bool = True
    ) -> list[str]:
        """Queue a stored object for every destination whose rule matches; return them.

        With *sync* (the device's ``coercionSyncWrites``), each queue entry is on
        disk (its folder fsynced) before this returns, so that an object answered
        with success is forwarded after a crash too.
        """
        destinations: list[str] = []
        for rule in sorted(self.rules, key=lambda r: -r.priority):
            if rule.matches(ctx, ds):
                destinations.extend(d for d in rule.destinations if d not in destinations)
        for destination in destinations:
            kind = {Dimse.N_CREATE_RQ: ".ncreate", Dimse.N_SET_RQ: ".nset"}.get(ctx.dimse, "")
            name = f"{ctx.local_ae}--{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{kind}.dcm"
            publish_copy(stored, self.queue / destination / name, sync=sync)
            self._sender(destination).wake.set()
        return destinations

    def enqueue_message(
        self, message: Path, ctx: EventContext, ds: Dataset, *, sync: bool = True
    ) -> list[str]:
        """Queue an MPPS message (a file written by the node) for the destinations that match.

        *ctx* is the N_CREATE_RQ or N_SET_RQ context it arrived in; the message
        goes to rules that name N_CREATE_RQ (which covers the N-SETs that follow).
        """
        return self.enqueue(message, ctx, ds, sync=sync)

    def pending(self) -> int:
        """Objects waiting in all queues."""
        if not self.queue.is_dir():
            return 0
        return sum(1 for _ in self.queue.glob("*/*.dcm"))

    def stop(self) -> None:
        """Stop the senders (what is queued stays for the next start)."""
        self.stopping.set()
        if self._watch is not None:
            self._watch.join(timeout=30)
        for sender in list(self._senders.values()):
            sender.wake.set()
            sender.join(timeout=30)
