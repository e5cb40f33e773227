"""The audit trail: one JSON line per DIMSE operation, with no PHI.

A line holds the time, the event context (DIMSE, role, AE titles, hosts,
SOP class), the rules applied, the number of actions per letter, a keyed
hash of the object's SOP Instance UID (so lines about one object can be
matched without revealing it) and the status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from coercion.engine import EventContext, Outcome
from coercion.outputs import private_folders

__all__ = ["AuditTrail"]


class AuditTrail:
    """Append-only JSON lines under *folder*, one file per day (UTC)."""

    def __init__(self, folder: Path, secret: bytes) -> None:
        self.folder = folder
        self._key = hmac.new(secret, b"coercion/audit", hashlib.sha256).digest()
        self._lock = threading.Lock()
        private_folders(folder)

    def hashed(self, value: str) -> str:
        """A keyed hash of *value* (16 hex digits): the same value, the same hash."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:16]

    def path(self) -> Path:
        """Today's file."""
        return self.folder / time.strftime("audit-%Y%m%d.jsonl", time.gmtime())

    def record(
        self,
        ctx: EventContext,
        status: int,
        outcome: Outcome | None = None,
        instance_uid: str = "",
        detail: str = "",
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Append one line."""
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dimse": str(ctx.dimse),
            "role": str(ctx.role),
            "calling_ae": ctx.calling_ae,
            "called_ae": ctx.called_ae,
            "remote_host": ctx.remote_host,
            "sop_class": ctx.sop_class_uid,
            "object": self.hashed(instance_uid) if instance_uid else None,
            "status": f"0x{status:04X}",
        }
        if outcome is not None:
            line["rules"] = [
                {"rule": a.rule.name, "changes": len(a.changes), "failure": a.failure}
                for a in outcome.applied
            ]
            line["counts"] = dict(sorted(outcome.counts().items()))
        if detail:
            line["detail"] = detail
        if extra:
            line.update(extra)
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            fd = os.open(self.path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
