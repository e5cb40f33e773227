"""The audit trail as the console reads it: filtered and paged, newest first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AuditQuery", "read_audit"]


@dataclass(frozen=True)
class AuditQuery:
    """Which lines: times as ISO 8601 UTC (``2026-11-30T15:00:00Z``), an AE title (calling
    or called), a DIMSE, a rule name, a status (``0x0000``) or ``failed`` for any other."""

    since: str = ""
    until: str = ""
    ae_title: str = ""
    dimse: str = ""
    rule: str = ""
    status: str = ""
    page: int = 1
    per_page: int = 50

    def matches(self, line: dict[str, Any]) -> bool:
        """Whether *line* passes every filter given."""
        when = str(line.get("time", ""))
        if (self.since and when < self.since) or (self.until and when > self.until):
            return False
        if self.ae_title and self.ae_title not in (line.get("calling_ae"), line.get("called_ae")):
            return False
        if self.dimse and line.get("dimse") != self.dimse:
            return False
        if self.rule and self.rule not in {r.get("rule") for r in line.get("rules") or []}:
            return False
        status = str(line.get("status", ""))
        if self.status == "failed":
            return status not in ("0x0000",) and not status.startswith("0xB")
        return not self.status or status.lower() == self.status.lower()


def _lines(folder: Path) -> Iterator[dict[str, Any]]:
    """Every line of the trail, newest first (files by day, lines in reverse)."""
    for path in sorted(folder.glob("audit-*.jsonl"), reverse=True):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for raw in reversed(text.splitlines()):
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a line cut by a full disk
            if isinstance(line, dict):
                yield line


def read_audit(folder: Path, query: AuditQuery) -> dict[str, Any]:
    """One page of the lines *query* selects, and whether there are more."""
    skip = (query.page - 1) * query.per_page
    found: list[dict[str, Any]] = []
    more = False
    for line in _lines(folder):
        if not query.matches(line):
            continue
        if skip:
            skip -= 1
            continue
        if len(found) == query.per_page:
            more = True
            break
        found.append(line)
    return {"page": query.page, "per_page": query.per_page, "lines": found, "more": more}
