"""Rules as the console shows and changes them: rows, form fields, validation and writing.

A change is checked by the code that loads the directory: the directory's
entries are read, the changed entry put in their place, and the whole set is
built with :func:`~coercion.directory.config.build_configuration`. Only when
that finds no problem is the entry written, to the LDIF folder of the
embedded directory or to the live directory; the node's watcher then picks it
up like any other change. Problems are returned per attribute of the entry.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coercion.directory.config import Configuration, build_configuration
from coercion.directory.entries import EntryJSON, kind_of
from coercion.directory.ldifedit import put_entry, remove_entry
from coercion.directory.ldifio import Entry, escape_rdn_value
from coercion.directory.selection import read_node_entries_after
from coercion.directory.sources import DirectorySource, EmbeddedDirectory, LdapDirectory
from coercion.engine import ActionEnv
from coercion.errors import ConfigError
from coercion.profile import Option
from coercion.resources import schema_dir

__all__ = [
    "RULE_SCHEMA",
    "FormField",
    "Problems",
    "RuleStore",
    "form_fields",
    "option_choices",
    "rule_rows",
    "to_entry",
]

RULE_SCHEMA = "coercion-rule.schema.json"
#: The attributes the form does not offer: set by the console itself.
_FIXED = ("dn", "objectClass")
#: Problems that are not about one attribute of the entry.
GENERAL = "_general"
_ATTRIBUTE = re.compile(r"attribute ([A-Za-z][A-Za-z0-9, ]*?): (.*)$")


@dataclass(frozen=True)
class FormField:
    """One field of the rule form, generated from the rule's JSON Schema."""

    name: str
    kind: str  # text, integer, boolean, choice, choices, rows
    required: bool
    description: str = ""
    choices: tuple[str, ...] = ()


def _schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(schema_dir()) / RULE_SCHEMA).read_text("utf-8"))
    return data


def form_fields() -> list[FormField]:
    """The fields of a rule, in the schema's order (enumerations as choices, lists as rows)."""
    schema = _schema()
    required = set(schema.get("required", []))
    fields = []
    for name, spec in schema["properties"].items():
        if name in _FIXED:
            continue
        description = str(spec.get("description", ""))
        if "enum" in spec:
            fields.append(FormField(name, "choice", name in required, description, spec["enum"]))
        elif spec.get("type") == "array" and "enum" in spec.get("items", {}):
            choices = tuple(spec["items"]["enum"])
            fields.append(FormField(name, "choices", name in required, description, choices))
        elif spec.get("type") == "array":
            item = str(spec.get("items", {}).get("description", ""))
            fields.append(FormField(name, "rows", name in required, item or description))
        elif spec.get("type") in ("integer", "boolean"):
            fields.append(FormField(name, spec["type"], name in required, description))
        else:
            fields.append(FormField(name, "text", name in required, description))
    return fields


def option_choices() -> list[tuple[str, str]]:
    """The PS3.15 options as (name, the standard's name for it), for the URI's checkboxes."""
    return [(option.name, option.code.meaning) for option in Option]


def rule_rows(configuration: Configuration) -> list[dict[str, Any]]:
    """Every rule entry of the node (enabled or not) as a row of ``config show``."""
    device = _norm(configuration.device.dn)
    aes = {_norm(ae.dn): ae.title for ae in configuration.device.aes}
    rows = []
    for entry in configuration.entries:
        if kind_of(entry) != "coercionRule":
            continue
        parent = _norm(entry["dn"].split(",", 1)[1]) if "," in entry["dn"] else ""
        if parent != device and parent not in aes:
            continue
        rows.append(
            {
                "rule": entry["cn"],
                "dn": entry["dn"],
                "ae_title": aes.get(parent),
                "dimse": sorted(entry["coercionDIMSE"]),
                "role": entry["dicomTransferRole"],
                "sop_classes": sorted(entry.get("coercionSOPClass", [])),
                "conditions": list(entry.get("coercionCondition", [])),
                "uri": entry["coercionURI"],
                "priority": entry.get("coercionPriority", 0),
                "sufficient": entry.get("coercionSufficient", False),
                "on_failure": entry.get("coercionOnFailure", "RETHROW"),
                "enabled": entry.get("dicomInstalled", True) is not False,
                "description": entry.get("description", ""),
            }
        )
    rows.sort(key=lambda row: (-int(row["priority"]), row["rule"]))
    return rows


def _norm(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


@dataclass
class Problems:
    """What keeps a change from being written: per attribute, and the rest."""

    by_field: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, what: str) -> None:
        """Note *what* against attribute *name* (or GENERAL)."""
        self.by_field.setdefault(name, []).append(what)

    def __bool__(self) -> bool:
        return bool(self.by_field)


def _ldap_value(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def to_entry(dn: str, values: dict[str, Any], kind: str = "coercionRule") -> Entry:
    """The LDAP form of an entry's JSON *values*: text lists, TRUE/FALSE; empty ones left out."""
    attrs: dict[str, list[str]] = {"objectClass": [kind]}
    for name, value in values.items():
        if name in _FIXED or value is None or value in ("", []):
            continue
        items = value if isinstance(value, list) else [value]
        attrs[name] = [_ldap_value(item) for item in items]
    return dn, attrs


class RuleStore:
    """Reads the directory's rules and writes checked changes to it (its own connection)."""

    def __init__(
        self, source: DirectorySource, env: ActionEnv, device: str, read_only: str = ""
    ) -> None:
        self.source = source
        #: Why changes are refused (the shipped configuration), or "" when they are not.
        self.read_only = read_only
        self.env = env
        self.device = device
        self._lock = threading.RLock()  # one change at a time, on one connection

    def parent_dn(self, configuration: Configuration, ae_title: str | None) -> str:
        """The DN a rule for *ae_title* (None: every AE title of the node) goes under."""
        if not ae_title:
            return configuration.device.dn
        for ae in configuration.device.aes:
            if ae.title == ae_title:
                return ae.dn
        raise KeyError(ae_title)

    def rule_dn(self, parent: str, name: str) -> str:
        """The DN of the rule *name* under *parent*."""
        return f"cn={escape_rdn_value(name)},{parent}"

    def entry(self, dn: str, kind: str = "coercionRule") -> EntryJSON | None:
        """The entry *dn* of *kind* as the directory holds it now (JSON), or None."""
        configuration = self.check([], [])
        for entry in configuration.entries:
            if _norm(entry["dn"]) == _norm(dn) and kind_of(entry) == kind:
                return entry
        return None

    def check(self, changed: list[Entry], removed: list[str]) -> Configuration:
        """Build the directory as it would be with *changed* and without *removed* entries.

        Raises ConfigError with every problem of the result.
        """
        with self._lock:
            return self._check(changed, removed)

    def _check(self, changed: list[Entry], removed: list[str]) -> Configuration:
        raw = read_node_entries_after(
            self.source.entries(self.device),
            self.source.devices(),
            changed,
            removed,
            self.device,
            self.source.origin,
        )
        env = self.env.derive()
        try:
            return build_configuration(
                raw, self.source.origin, env, self.device, source=self.source
            )
        finally:
            env.close()

    def problems_of(self, dn: str, exc: ConfigError) -> Problems:
        """The lines of *exc* sorted per attribute of *dn* (others under GENERAL)."""
        problems = Problems()
        for line in str(exc).splitlines():
            if _norm(dn) in _norm(line):
                found = _ATTRIBUTE.search(line)
                if found:
                    for name in found[1].split(","):
                        problems.add(name.strip(), found[2])
                    continue
            problems.add(GENERAL, line)
        return problems

    def save(self, entry: Entry) -> Problems:
        """Check *entry* with the whole directory; write it when it passes. Returns problems."""
        with self._lock:
            return self._save(entry)

    def _save(self, entry: Entry) -> Problems:
        if self.read_only:
            raise ConfigError(self.read_only)
        try:
            self.check([entry], [])
        except ConfigError as exc:
            return self.problems_of(entry[0], exc)
        self._write(entry)
        return Problems()

    def delete(self, dn: str) -> Problems:
        """Check the directory without *dn*; delete it when that passes."""
        with self._lock:
            return self._delete(dn)

    def _delete(self, dn: str) -> Problems:
        if self.read_only:
            raise ConfigError(self.read_only)
        try:
            self.check([], [dn])
        except ConfigError as exc:
            return self.problems_of(dn, exc)
        if isinstance(self.source, EmbeddedDirectory):
            remove_entry(self.source.folder, dn)
        elif isinstance(self.source, LdapDirectory):
            from coercion.directory.update import delete_entry

            delete_entry(self.source, dn)
        else:
            raise ConfigError(f"{self.source.origin}: cannot be written")
        return Problems()

    def _write(self, entry: Entry) -> None:
        if isinstance(self.source, EmbeddedDirectory):
            put_entry(self.source.folder, entry)
        elif isinstance(self.source, LdapDirectory):
            from coercion.directory.update import import_entries

            import_entries(self.source, [entry])
        else:
            raise ConfigError(f"{self.source.origin}: cannot be written")

    def close(self) -> None:
        """Close the connection to the directory."""
        self.source.close()
