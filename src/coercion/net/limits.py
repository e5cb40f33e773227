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
import os
import threading
import weakref
from pathlib import Path

from coercion.directory.settings import LIMIT_SETTINGS as SETTINGS
from coercion.directory.settings import NetworkLimits
from coercion.directory.settings import limits_from as from_settings
from coercion.net.workers import LockSlots

__all__ = ["SETTINGS", "AssociationCounter", "NetworkLimits", "from_settings"]

log = logging.getLogger(__name__)


def _release_after(association: threading.Thread, fds: tuple[int, ...]) -> None:
    """Free an association's slots once its thread has ended."""
    association.join()
    for fd in fds:
        os.close(fd)


class AssociationCounter:
    """Associations admitted and still running, in total and per remote address.

    An association counts from :meth:`admit` until its thread ends; nothing
    needs to be told when it ends. With *slots* (a folder) the count is shared
    with every process counting in that folder (the workers of a node): each
    association holds a lock file there until its thread ends.
    """

    def __init__(self, slots: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._running: weakref.WeakKeyDictionary[threading.Thread, str] = (
            weakref.WeakKeyDictionary()
        )
        self._slots = LockSlots(slots) if slots is not None else None

    def admit(self, association: threading.Thread, address: str, limits: NetworkLimits) -> str:
        """Count *association* from *address* in; the setting that refuses it, or ``""``."""
        if self._slots is not None:
            return self._admit_shared(self._slots, association, address, limits)
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

    def _admit_shared(
        self, slots: LockSlots, association: threading.Thread, address: str, limits: NetworkLimits
    ) -> str:
        """:meth:`admit` counting in the slots every process shares."""
        host = f"host-{address}"
        total = slots.take("all", limits.max_associations)
        if total is None:
            refused = "coercionMaxAssociations"
        else:
            own = slots.take(host, limits.max_associations_per_host)
            if own is not None:
                with self._lock:
                    self._running[association] = address
                release = threading.Thread(
                    target=_release_after, args=(association, (total, own)), daemon=True
                )
                release.start()
                return ""
            os.close(total)
            refused = "coercionMaxAssociationsPerHost"
        log.warning(
            "association from %s refused: %d associations running, %d from that address (%s)",
            address,
            slots.taken("all", limits.max_associations),
            slots.taken(host, limits.max_associations_per_host),
            refused,
        )
        return refused

    def running(self) -> int:
        """How many admitted associations still run."""
        with self._lock:
            return sum(1 for t in list(self._running) if t.is_alive())
