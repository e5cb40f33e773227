"""The audit trail: one JSON line per DIMSE operation, with no PHI.

A line holds the time, the event context (DIMSE, role, AE titles, hosts,
SOP class), the rules applied, the number of actions per letter, a keyed
hash of the object's SOP Instance UID (so lines about one object can be
matched without revealing it) and the status.

Processes share one trail (``serve --workers N``): each line is one
``write()`` to the file opened with ``O_APPEND``, under an exclusive ``flock``,
so lines never interleave and a short write is cut back without touching
another process's line. A worker's lines carry its number (``"worker"``).

Writing a line never raises: the operation it records has its status
already. When the trail cannot be written (a full disk), one ERROR line says
so for the whole burst of failures, and the first line written afterwards is
preceded by a WARNING with the number of lines lost.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from coercion.dicom.outputs import private_folders
from coercion.engine import EventContext, Outcome
from coercion.net import metrics

__all__ = ["AuditTrail"]

log = logging.getLogger(__name__)


class AuditTrail:
    """Append-only JSON lines under *folder*, one file per day (UTC)."""

    def __init__(self, folder: Path, secret: bytes, worker: int = 0) -> None:
        self.folder = folder
        #: The worker of ``serve --workers N`` writing (1..N), named in each line; 0: not named.
        self.worker = worker
        self._key = hmac.new(secret, b"coercion/audit", hashlib.sha256).digest()
        self._lock = threading.Lock()
        #: Lines lost in the current burst of write failures (0: the trail is being written).
        self.lost = 0
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
        """Append one line; a failure to write it is logged (once per burst), never raised."""
        metrics.record_operation(ctx, status, outcome)
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
        if self.worker:
            line["worker"] = self.worker
        if extra:
            line.update(extra)
        self._append((json.dumps(line, separators=(",", ":")) + "\n").encode())

    def _append(self, data: bytes) -> None:
        """Write *data* whole at the end of today's file, or count it lost."""
        with self._lock:
            path = self.path()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # other processes' lines: before or after
                    written = os.write(fd, data)
                    if written != len(data):  # a short append: the disk filled up under it
                        os.ftruncate(fd, os.fstat(fd).st_size - written)
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                finally:
                    os.close(fd)
            except OSError as exc:
                if not self.lost:
                    name = errno.errorcode.get(exc.errno or 0, exc.__class__.__name__)
                    log.error(
                        "audit trail %s: cannot write (%s); lines are lost until it can again",
                        path,
                        name,
                    )
                self.lost += 1
                return
            if self.lost:
                log.warning("audit trail %s: written again; %d lines were lost", path, self.lost)
                self.lost = 0
