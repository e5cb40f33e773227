"""The node's network limits: timeouts, association counts, PDU and object sizes.

Every limit is a setting of the node's device entry (``coercionDevice``); a
setting left out takes the default here. The defaults let a port scan, a load
balancer's health checks or a few dozen idle or half-open connections pass
without locking out a legitimate sender: a connection that has not sent its
whole A-ASSOCIATE-RQ within :attr:`NetworkLimits.request_timeout` seconds is
closed, and only associations (not bare connections) count against
:attr:`NetworkLimits.max_associations`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["SETTINGS", "AssociationCounter", "NetworkLimits", "from_settings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkLimits:
    """What a peer may take of the node; times in seconds, sizes in bytes."""

    #: From the TCP connection to the whole A-ASSOCIATE-RQ (the ARTIM timer of PS3.8 9.1.5).
    request_timeout: float = 10
    #: A TLS handshake, from the TCP connection on.
    tls_handshake_timeout: float = 10
    #: Waiting for an A-ASSOCIATE, A-RELEASE or A-ABORT answer.
    acse_timeout: float = 30
    #: Waiting for a DIMSE message.
    dimse_timeout: float = 60
    #: An established association that receives no whole PDU for this long is aborted.
    network_timeout: float = 60
    #: Associations at the same time, from every peer together.
    max_associations: int = 64
    #: Associations at the same time from one remote address.
    max_associations_per_host: int = 48
    #: The Maximum Length Received the node announces; a longer P-DATA-TF PDU is aborted.
    max_pdu_length: int = 1 << 20
    #: A received data set beyond this size aborts the association.
    max_object_size: int = 4 << 30


#: Device attribute -> field of :class:`NetworkLimits`.
SETTINGS: dict[str, str] = {
    "coercionAssociationRequestTimeout": "request_timeout",
    "coercionTLSHandshakeTimeout": "tls_handshake_timeout",
    "coercionACSETimeout": "acse_timeout",
    "coercionDIMSETimeout": "dimse_timeout",
    "coercionNetworkTimeout": "network_timeout",
    "coercionMaxAssociations": "max_associations",
    "coercionMaxAssociationsPerHost": "max_associations_per_host",
    "coercionMaxPDULength": "max_pdu_length",
    "coercionMaxObjectSize": "max_object_size",
}


def from_settings(settings: Mapping[str, object]) -> NetworkLimits:
    """The limits a device entry's settings give (validated by its schema beforehand)."""
    types = {f.name: f.type for f in fields(NetworkLimits)}
    values: dict[str, Any] = {}
    for attribute, name in SETTINGS.items():
        value = settings.get(attribute)
        if value is not None:
            values[name] = float(str(value)) if types[name] == "float" else int(str(value))
    return NetworkLimits(**values)


class AssociationCounter:
    """Associations admitted and still running, in total and per remote address.

    An association counts from :meth:`admit` until its thread ends; nothing
    needs to be told when it ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: weakref.WeakKeyDictionary[threading.Thread, str] = (
            weakref.WeakKeyDictionary()
        )

    def admit(self, association: threading.Thread, address: str, limits: NetworkLimits) -> str:
        """Count *association* from *address* in; the setting that refuses it, or ``""``."""
        with self._lock:
            running = [a for t, a in list(self._running.items()) if t.is_alive()]
            if len(running) >= limits.max_associations:
                refused = "coercionMaxAssociations"
            elif running.count(address) >= limits.max_associations_per_host:
                refused = "coercionMaxAssociationsPerHost"
            else:
                self._running[association] = address
                return ""
        log.warning(
            "association from %s refused: %d associations running, %d from that address (%s)",
            address,
            len(running),
            running.count(address),
            refused,
        )
        return refused

    def running(self) -> int:
        """How many admitted associations still run."""
        with self._lock:
            return sum(1 for t in list(self._running) if t.is_alive())
