"""The node's network limits: timeouts, association counts, PDU and object sizes.

Every limit is a setting of the node's device entry (``coercionDevice``),
read with the others in :mod:`coercion.directory.settings` (re-exported here);
this module counts associations against them. The defaults let a port scan, a load
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

from coercion.directory.settings import LIMIT_SETTINGS as SETTINGS
from coercion.directory.settings import NetworkLimits
from coercion.directory.settings import limits_from as from_settings

__all__ = ["SETTINGS", "AssociationCounter", "NetworkLimits", "from_settings"]

log = logging.getLogger(__name__)


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
