"""``coercion serve``: a pynetdicom node whose DIMSE events go through the engine.

This module is the node itself: its AE (contexts, limits), the association
policy (called AE titles, known calling AEs, association counts) and the
wiring of the services, each in its own module: C-ECHO here; the Storage SCP
for every storage SOP class and transfer syntax (:mod:`coercion.net.storage`);
the Modality Worklist SCP, local or upstream (:mod:`coercion.net.worklist`);
the MPPS SCP (:mod:`coercion.net.mpps`); forwarding (:mod:`coercion.net.forward`)
to the peers (:mod:`coercion.net.peers`). The AE titles, the known peers, the
device's settings and the rules come from the directory and follow its
changes. Every handler runs inside the error boundary of
:mod:`coercion.net.boundary`: any failure is answered with its service's
failure status, logged once and audited. pynetdicom is used through
:mod:`coercion.net.adapt`.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import, unseen by mypy
    Verification,
)

from coercion.defaults import DATA_DIRECTORY
from coercion.dicom.outputs import remove_stale_temporaries
from coercion.directory.config import Configuration
from coercion.directory.settings import DeviceSettings
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import Engine
from coercion.net import adapt, receive
from coercion.net.accept import request_handler
from coercion.net.audit import AuditTrail
from coercion.net.boundary import Boundary, Operation, Service, guarded
from coercion.net.forward import Forwarder
from coercion.net.limits import AssociationCounter, NetworkLimits
from coercion.net.mpps import MPPS_SOP_CLASS, Mpps
from coercion.net.peers import Peers, TLSFiles
from coercion.net.storage import Storage
from coercion.net.workers import LockSlots
from coercion.net.worklist import WORKLIST_FIND, Worklist, WorklistSCP

__all__ = ["Node", "NodeSettings", "remove_stale"]

log = logging.getLogger(__name__)

_SUCCESS = 0x0000
#: The association slot files every worker counts in (see :class:`LockSlots`).
ASSOCIATION_SLOTS = ".associations"
_VERIFICATION = UID(Verification)


@dataclass(frozen=True)
class NodeSettings:
    """How the node is started: where it listens and keeps its data, and what it checks.

    The device's own settings (limits, sync writes, ...) come from the directory
    (:class:`~coercion.directory.settings.DeviceSettings`) and follow its changes.
    """

    host: str = "127.0.0.1"
    port: int = 11112
    data: Path = Path(DATA_DIRECTORY)
    worklist: Path | None = None  # default: DATA/worklist
    secret: bytes = b""
    #: TLS: the node's certificate and key (the listener uses TLS when given) and the CA
    #: certificates that peers' certificates must chain to (clients must then present one).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    #: Verify de-identified outputs (stored and forwarded); a leak is refused, nothing written.
    verify: bool = True
    #: Which worker of ``serve --workers N`` this node is (1..N; 0: the node is one process).
    worker: int = 0

    @property
    def tls(self) -> TLSFiles:
        """The TLS files."""
        return TLSFiles(self.tls_cert, self.tls_key, self.tls_ca)


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
        data = settings.data
        self.audit = AuditTrail(data / "audit", settings.secret, settings.worker)
        self.boundary = Boundary(self.audit)
        # The context serve gave the rules (merge-mwl:), else one from the same files.
        self._client_tls = watcher.env.client_tls or settings.tls.client()
        self.peers = Peers.of(configuration, self._client_tls)
        self.forwarder = Forwarder(data, self.engine, self.audit, verify=settings.verify)
        self.forwarder.configure(configuration.forward_rules, self.peers)
        current = self._device_settings
        self.storage = Storage(
            data, self.engine, self.forwarder, self.audit, current, verify=settings.verify
        )
        self.mpps = Mpps(data, self.engine, self.forwarder, self.audit, current)
        worklist = Worklist(settings.worklist or data / "worklist")
        self.worklist = WorklistSCP(worklist, self.engine, self.audit, current, lambda: self.peers)
        self._server: Any = None
        self.limits: NetworkLimits = configuration.settings.limits
        self.associations = AssociationCounter(data / ASSOCIATION_SLOTS)  # every worker's
        self.ae = self._make_ae()

    # -- configuration ----------------------------------------------------------------

    def _device_settings(self) -> DeviceSettings:
        return self.configuration.settings

    def _on_change(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self.engine.replace_rules(configuration.rules)
        self.peers = Peers.of(configuration, self._client_tls)
        self.forwarder.configure(configuration.forward_rules, self.peers)
        limits = configuration.settings.limits
        if limits != self.limits:
            self.limits = limits
            self._apply_limits()

    @property
    def sync_writes(self) -> bool:
        """Objects are on disk before success is answered, unless coercionSyncWrites is FALSE."""
        return self.configuration.settings.sync_writes

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
        ae.add_supported_context(WORKLIST_FIND)
        ae.add_supported_context(MPPS_SOP_CLASS)
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

    def start(self, listen: tuple[str, int] | socket.socket | None = None) -> tuple[str, int]:
        """Listen (in background threads) on *listen*, an address or a socket bound
        beforehand (default: the settings' host and port); return the address bound.

        The one start-up of a node: everything it runs is set up here. A worker
        of ``serve --workers N`` leaves the temporaries an interrupted run left to
        its supervisor (:func:`remove_stale`, before any worker writes).
        """
        adapt.install()  # no 1 ms sleeps; bounded reads (see coercion.net.adapt)
        if not self.settings.worker:
            remove_stale(self.settings.data)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self.storage.on_store),
            (evt.EVT_C_FIND, self.worklist.on_find),
            (evt.EVT_N_CREATE, self.mpps.on_n_create),
            (evt.EVT_N_SET, self.mpps.on_n_set),
        ]
        # TLS is set up in each connection's thread, not in the accept loop
        handler = request_handler(self.settings.tls.server(), lambda: self.limits)
        address = listen if listen is not None else (self.settings.host, self.settings.port)
        server: Any = adapt.start_server(self.ae, address, handlers, handler)
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
            adapt.close_pending(self.ae)  # connections without an association yet: closed
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
        if self.configuration.settings.restrict_calling_ae_titles and not self.peers.known(
            calling, assoc.requestor.address
        ):
            log.warning("association from unknown calling AE %s refused", calling)
            _reject(assoc, 0x01, 0x01, 0x03)  # rejected permanent, calling AE unknown
        elif self.associations.admit(assoc, assoc.requestor.address, self.limits):
            _reject(assoc, 0x02, 0x03, 0x02)  # rejected transient, local limit exceeded

    # -- services ----------------------------------------------------------------------------

    @guarded(Service.C_ECHO)
    def _on_echo(self, event: evt.Event, op: Operation) -> int:
        return _SUCCESS


def remove_stale(data: Path) -> None:
    """Remove the temporary files a killed run left in the data folder, and the association
    slot files no one holds (before serving)."""
    stale = remove_stale_temporaries(data)
    if stale:
        log.info("removed %d temporary files an interrupted run left", len(stale))
    slots = data / ASSOCIATION_SLOTS
    if slots.is_dir():
        LockSlots(slots).remove_free()


def _reject(assoc: Any, result: int, source: int, reason: int) -> None:
    """Send an A-ASSOCIATE-RJ and end the association."""
    assoc.acse.send_reject(result, source, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()
