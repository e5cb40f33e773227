"""The forwarding queues under ``DATA/queue/<AE title>/``: depths, retrying and discarding.

Objects that could not be sent sit in ``failed/`` beside a ``.reason`` file.
Retrying moves them back into the queue (the forwarder's watch finds them
within seconds); discarding deletes them and their reasons.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from coercion.errors import ConfigError
from coercion.net.forward import _REASON as REASON  # the suffix of a failed object's reason

__all__ = ["discard_failed", "queues", "retry_failed"]


def queues(data: Path) -> list[dict[str, Any]]:
    """Per destination: objects pending, objects failed, the age of the oldest pending one."""
    root = data / "queue"
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    now = time.time()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        pending = [p for p in folder.glob("*.dcm") if p.is_file()]
        stamps = [p.stat().st_mtime for p in pending]
        found.append(
            {
                "destination": folder.name,
                "pending": len(pending),
                "failed": len(_failed(folder)),
                "oldest_seconds": round(now - min(stamps), 1) if stamps else None,
            }
        )
    return found


def _folder(data: Path, destination: str) -> Path:
    folder = data / "queue" / destination
    if "/" in destination or destination in ("", ".", "..") or not folder.is_dir():
        raise ConfigError(f"no forwarding queue for {destination!r}")
    return folder


def _failed(folder: Path) -> list[Path]:
    failed = folder / "failed"
    if not failed.is_dir():
        return []
    # Objects only: not their reasons, nor a temporary file the forwarder is writing.
    return sorted(p for p in failed.glob("*.dcm") if p.is_file() and not p.name.startswith("."))


def retry_failed(data: Path, destination: str) -> int:
    """Put the failed objects of *destination* back in its queue; return how many."""
    folder = _folder(data, destination)
    moved = 0
    for path in _failed(folder):
        os.replace(path, folder / path.name)
        (path.parent / (path.name + REASON)).unlink(missing_ok=True)
        moved += 1
    return moved


def discard_failed(data: Path, destination: str) -> int:
    """Delete the failed objects of *destination* and their reasons; return how many."""
    folder = _folder(data, destination)
    removed = 0
    for path in _failed(folder):
        path.unlink(missing_ok=True)
        (path.parent / (path.name + REASON)).unlink(missing_ok=True)
        removed += 1
    return removed
