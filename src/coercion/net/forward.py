"""Forwarding: stored objects queued on disk per destination, sent as Storage SCU with retries.

A forward rule (``coercionForwardRule``) names destination AE titles of known
devices and, like a coercion rule, may be limited to SOP classes, conditions
and the AE title the object was received on. A stored object that matches is
linked into ``DATA/queue/<AE title>/``; one sender thread per destination
takes the queue in order, coerces each object for the outgoing context
(C_STORE_RQ, SCU, calling = the AE it was received on, called = the
destination) through :mod:`coercion.engine.pipeline` and sends it. An object
no outgoing rule changes is sent as the stored file's data set bytes, read in
chunks and never decoded; one a rule changed is encoded (untouched elements as
they were stored), verified when a de-identifying rule applied (unless
``serve --no-verify``) and sent from a temporary file. An object leaves the queue only after the
destination answered success or a warning, so a stopped destination (or a
stopped node) loses nothing: the queue is retried with backoff and read again
at start.

An object that cannot go (a failure status, no accepted presentation context,
no SOP Class UID, a failed rule, an output that failed verification, or no
answer within the DIMSE timeout on ``max_attempts`` tries) is moved to
``failed/`` with a ``.reason`` file naming the destination and the status or
exception class; one object never stops a queue, and a sender thread that
dies is started again. Delivery is exactly once unless an answer never came
(a crash between the answer and the dequeue, a timeout, a dropped
connection): then the object is sent again, at least once.

A destination has one sender across every process that shares the data
folder (the workers of ``serve --workers N``, see :mod:`coercion.net.workers`):
a sender sends only while it holds the queue's lock file (``.sender.lock``);
the others stand by and take over when its process ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import, unseen by mypy
    ModalityPerformedProcedureStep,
)
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from coercion.dicom.outputs import (
    atomic_output,
    private_folders,
    publish_copy,
    temporary_file,
    write_all,
)
from coercion.dicom.part10 import read_file
from coercion.engine import Dimse, Engine, EventContext, ForwardRule, Outcome, Role
from coercion.engine.pipeline import Prepared, apply_rules, prepare
from coercion.errors import CoercionError, RuleFailedError, VerificationError
from coercion.net import adapt
from coercion.net.audit import AuditTrail
from coercion.net.peers import Peers
from coercion.net.workers import ExclusiveLock

__all__ = ["Forwarder"]

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
#: The lock file in a queue's folder held by the one sender of that queue.
_SENDER_LOCK = ".sender.lock"
#: Seconds between a standing-by sender's tries to take the queue over.
_STANDBY_INTERVAL = 1.0


@dataclass
class _Item:
    """A queued object, coerced for its destination.

    A stored object is sent from a file: the queued one itself when no rule
    changed it (its bytes as they are), else a temporary one (*temporary*).
    An MPPS message is sent as its data set.
    """

    path: Path
    ctx: EventContext
    outcome: Outcome
    dataset: Dataset
    syntax: str
    instance: str
    source: Path | None = None
    temporary: bool = False

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
        #: Held while this thread sends the queue (one sender across processes).
        self.lock = ExclusiveLock(self.folder / _SENDER_LOCK)

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.lock.release()

    def _run(self) -> None:
        forwarder = self.forwarder
        while not forwarder.stopping.is_set():
            try:
                if not self.lock.acquire():  # another process sends this queue
                    forwarder.stopping.wait(_STANDBY_INTERVAL)
                    continue
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
        try:
            if prepared:
                self._deliver(prepared, *address)
        finally:
            for item in prepared:
                if item.temporary and item.source is not None:
                    item.source.unlink(missing_ok=True)

    def _prepare(self, batch: list[Path], host: str) -> list[_Item]:
        """Read and coerce each queued object for the outgoing context."""
        prepared = []
        for path in batch:
            local_ae = path.name.split("--", 1)[0]
            kind = _kind(path)
            try:  # a stored object is sent from a file: its long values stay there
                ds = read_file(path, defer=kind == "store")
            except CoercionError as exc:
                self._give_up(path, f"unreadable: {exc}")
                continue
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
            sending = self.forwarder.peers.local_host(local_ae)
            ctx = EventContext(
                dimse, Role.SCU, local_ae, self.destination, host, sending, sop_class
            )
            item = self._coerce(path, ds, ctx, instance)
            if item is not None:
                prepared.append(item)
        return prepared

    def _coerce(self, path: Path, ds: Any, ctx: EventContext, instance: str) -> _Item | None:
        """The item for *ds* coerced (encoded and verified when a rule changed a stored
        object); None when it was set aside.
        """
        forwarder = self.forwarder
        engine = forwarder.engine
        verify = forwarder.verify and engine.may_apply(ctx)
        name = f"forwarding to {self.destination}: {path.name}"
        temporary: Path | None = None
        try:
            prepared = prepare(ds, apply_rules(engine, ctx), verify=verify, name=name, source=path)
            if _kind(path) == "store" and prepared.coerced.changed:
                temporary = self._encoded(prepared)
        except RuleFailedError as exc:
            forwarder.audit.record(ctx, _NOT_SENT, None, instance, str(exc))
            self._give_up(path, f"a rule failed: {exc}")
            return None
        except VerificationError as exc:
            forwarder.audit.record(ctx, _NOT_SENT, None, instance, str(exc))
            self._give_up(path, f"output failed verification: {exc}")
            return None
        except Exception as exc:  # one object stops no queue
            forwarder.audit.record(ctx, _NOT_SENT, None, instance, type(exc).__name__)
            self._give_up(path, f"{type(exc).__name__} while coercing")
            return None
        outcome = prepared.coerced.outcome or Outcome(prepared.dataset)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        source = temporary or path  # untouched: the stored file's bytes as they are
        return _Item(
            path, ctx, outcome, prepared.dataset, syntax, instance, source, temporary is not None
        )

    def _encoded(self, prepared: Prepared) -> Path:
        """*prepared* encoded, verified and written to a temporary file beside the queue."""
        encoded = prepared.encode()
        prepared.verify(encoded)
        fd, temporary = temporary_file(self.folder, "sending")
        try:
            encoded.write_to(fd)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return temporary

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
            tls_args=forwarder.peers.tls_args(self.destination, host),
            evt_handlers=adapt.requestor_handlers(),
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
        else:  # the file's data set bytes, read in chunks (see coercion.net.adapt)
            status = assoc.send_c_store(item.source)
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

    def __init__(
        self, data: Path, engine: Engine, audit: AuditTrail, *, verify: bool = True
    ) -> None:
        self.queue = data / "queue"
        self.engine = engine
        self.audit = audit
        #: Verify what a de-identifying outgoing rule made (see coercion.engine.pipeline).
        self.verify = verify
        self.rules: tuple[ForwardRule, ...] = ()
        self.peers = Peers()
        self.stopping = threading.Event()
        #: Seconds a sender waits for each answer; the tries of an object never answered.
        self.dimse_timeout: float = 60.0
        self.max_attempts = 3
        #: Tries so far of the queued objects that were sent and never answered.
        self.attempts: dict[Path, int] = {}
        self._senders: dict[str, _Sender] = {}
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def configure(self, rules: tuple[ForwardRule, ...], peers: Peers) -> None:
        """Take the rules and the peers of a (new) configuration."""
        self.rules = rules
        self.peers = peers

    def needs_up_to(self) -> int:
        """The last top-level tag the forward rules' conditions (and the storage path) read."""
        tags = [c.tag for r in self.rules for c in r.conditions if c.tag is not None]
        return max([_INSTANCE_UIDS_END, *tags])

    def address(self, ae_title: str) -> tuple[str, int] | None:
        """Host and port of a known AE title."""
        return self.peers.address(ae_title)

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

    def stop(self) -> None:
        """Stop the senders (what is queued stays for the next start)."""
        self.stopping.set()
        if self._watch is not None:
            self._watch.join(timeout=30)
        for sender in list(self._senders.values()):
            sender.wake.set()
            sender.join(timeout=30)
