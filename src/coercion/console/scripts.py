"""Tag scripts as the console shows and changes them (``coercionTagScript`` entries).

A script's body is JSON (mercure's format); it is checked, like a rule, by
loading the whole directory with it, so its problems come back per JSON path
under the attribute ``coercionScript``. mercure settings are converted by the
converter of ``coercion config import-mercure``.
"""

from __future__ import annotations

import json
from typing import Any

from coercion.directory.config import Configuration
from coercion.directory.entries import kind_of

__all__ = ["SCRIPT", "script_rows", "script_values"]

#: The structural object class of a tag script.
SCRIPT = "coercionTagScript"


def script_rows(configuration: Configuration) -> list[dict[str, Any]]:
    """Every tag script of the directory: name, DN, description, enabled, its sections."""
    rows = []
    for entry in configuration.entries:
        if kind_of(entry) != SCRIPT:
            continue
        script = configuration.scripts.get(entry["cn"])
        sections = (
            [section.key for section in (script.general, *script.projects.values())]
            if script is not None
            else []
        )
        rows.append(
            {
                "script": entry["cn"],
                "dn": entry["dn"],
                "description": entry.get("description", ""),
                "enabled": entry.get("dicomInstalled", True) is not False,
                "sections": sections,
            }
        )
    rows.sort(key=lambda row: row["script"])
    return rows


def script_values(name: str, body: Any, description: str = "") -> dict[str, Any]:
    """The attributes of a script entry; *body* is JSON text or a JSON object."""
    text = body if isinstance(body, str) else json.dumps(body, indent=1)
    values: dict[str, Any] = {"cn": name, "coercionScript": text}
    if description:
        values["description"] = description
    return values
