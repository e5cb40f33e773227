"""Directory entries as JSON, validated against the JSON Schemas of ``schema/``.

An LDAP entry is a DN and attributes with lists of text values. Converted to
JSON, single-valued attributes become scalars, Boolean and Integer syntaxes
become ``true``/``false`` and numbers, and the rest stay lists of strings;
what is single-valued and which syntax an attribute has is read from the
schema LDIF files (``olcAttributeTypes``), not restated here. The JSON form is
then validated against the schema of the entry's structural object class.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from coercion.directory.ldifio import Entry, read_ldif_folder
from coercion.errors import ConfigError, map_errors
from coercion.resources import default_ldif_dir, schema_dir

__all__ = [
    "KINDS",
    "SCRIPT_BODY_SCHEMA",
    "EntryJSON",
    "Syntaxes",
    "default_syntaxes",
    "kind_of",
    "to_json",
    "validate",
    "validate_value",
]

EntryJSON = dict[str, Any]

#: Structural object class -> JSON Schema file, for the entries coercion reads.
KINDS = {
    "dicomConfigurationRoot": "dicom-configuration-root.schema.json",
    "dicomDevicesRoot": "dicom-devices-root.schema.json",
    "dicomDevice": "dicom-device.schema.json",
    "dicomNetworkConnection": "dicom-network-connection.schema.json",
    "dicomNetworkAE": "dicom-network-ae.schema.json",
    "coercionRule": "coercion-rule.schema.json",
    "coercionTagScript": "coercion-tag-script.schema.json",
    "coercionPseudonymScope": "coercion-pseudonym-scope.schema.json",
    "coercionForwardRule": "coercion-forward-rule.schema.json",
}
#: The JSON Schema of a tag script's body (``coercionScript``), checked when the scripts load.
SCRIPT_BODY_SCHEMA = "coercion-tag-script-body.schema.json"
_KINDS_FOLDED = {name.lower(): name for name in KINDS}
_BOOLEAN = "1.3.6.1.4.1.1466.115.121.1.7"
_INTEGER = "1.3.6.1.4.1.1466.115.121.1.27"
#: Core attributes used single-valued in our entries (RFC 4519 allows several values).
_SINGLE_CORE = ("cn", "description")
_NAME_RE = re.compile(r"NAME\s+(?:'([^']+)'|\(\s*'([^']+)')")
_SYNTAX_RE = re.compile(r"SYNTAX\s+([0-9.]+)")
_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class _Syntax:
    name: str
    single: bool
    kind: str  # "boolean", "integer" or "string"


class Syntaxes:
    """What the schema says of each attribute: canonical name, single-valued, type."""

    def __init__(self, schema_entries: Iterable[Entry]) -> None:
        self._by_folded: dict[str, _Syntax] = {
            name: _Syntax(name, True, "string") for name in _SINGLE_CORE
        }
        for _dn, attrs in schema_entries:
            for attr, values in attrs.items():
                if attr.lower() != "olcattributetypes":
                    continue
                for definition in values:
                    self._add(definition)

    def _add(self, definition: str) -> None:
        named = _NAME_RE.search(definition)
        if named is None:
            return
        name = named[1] or named[2]
        syntax = _SYNTAX_RE.search(definition)
        oid = syntax[1] if syntax else ""
        kind = "boolean" if oid == _BOOLEAN else "integer" if oid == _INTEGER else "string"
        self._by_folded[name.lower()] = _Syntax(name, "SINGLE-VALUE" in definition, kind)

    def canonical(self, name: str) -> str:
        """The attribute's name as the schema spells it (LDAP names ignore case)."""
        known = self._by_folded.get(name.lower())
        return known.name if known else ("objectClass" if name.lower() == "objectclass" else name)

    def convert(self, dn: str, name: str, values: list[str]) -> Any:
        """The JSON value of one attribute; a ConfigError names the DN and attribute."""
        known = self._by_folded.get(name.lower())
        if known is None:
            return list(values)
        converted: list[Any] = []
        for value in values:
            if known.kind == "boolean":
                if value not in ("TRUE", "FALSE"):
                    raise ConfigError(
                        f"{dn}: attribute {known.name}: {value!r} is not TRUE or FALSE"
                    )
                converted.append(value == "TRUE")
            elif known.kind == "integer":
                try:
                    converted.append(int(value))
                except ValueError:
                    raise ConfigError(
                        f"{dn}: attribute {known.name}: {value!r} is not an integer"
                    ) from None
            else:
                converted.append(value)
        if known.single:
            if len(converted) != 1:
                raise ConfigError(
                    f"{dn}: attribute {known.name}: has {len(converted)} values; "
                    "it takes exactly one"
                )
            return converted[0]
        return converted


@functools.lru_cache(maxsize=1)
def default_syntaxes() -> Syntaxes:
    """The syntaxes of the shipped schema files (``ldif/*-schema.ldif``)."""
    schema, _data = read_ldif_folder(default_ldif_dir())
    return Syntaxes(schema)


def kind_of(attrs: EntryJSON | dict[str, list[str]]) -> str | None:
    """The structural object class coercion knows this entry by, or None."""
    classes = attrs.get("objectClass") or next(
        (v for k, v in attrs.items() if k.lower() == "objectclass"), []
    )
    for name in classes:
        kind = _KINDS_FOLDED.get(str(name).lower())
        if kind is not None:
            return kind
    return None


def to_json(dn: str, attrs: dict[str, list[str]], syntaxes: Syntaxes) -> EntryJSON:
    """The JSON form of an entry: ``dn``, ``objectClass`` and each attribute by canonical name."""
    result: EntryJSON = {"dn": dn}
    for name, values in attrs.items():
        canonical = syntaxes.canonical(name)
        if canonical == "objectClass":
            result["objectClass"] = [str(v) for v in values]
        else:
            result[canonical] = syntaxes.convert(dn, canonical, [str(v) for v in values])
    return result


@functools.cache
def _validator(schema_file: str) -> Draft202012Validator:
    path = Path(schema_dir()) / schema_file
    where = f"{path}: cannot load the JSON Schema"
    with map_errors({(OSError, ValueError): ConfigError}, where, reason=str):
        schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(entry: EntryJSON, origin: str = "") -> list[str]:
    """Validate *entry* against its kind's JSON Schema; return the problems (empty if none).

    Each problem names the entry's DN (after *origin*, the file or server it
    came from) and the attribute: ``<origin> <dn>: attribute <name>: <what>``.
    """
    kind = kind_of(entry)
    if kind is None:
        return []
    where = f"{origin} {entry['dn']}".strip()
    problems = []
    for error in sorted(_validator(KINDS[kind]).iter_errors(entry), key=lambda e: e.path):
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            problems.append(f"{where}: attribute {missing}: missing (required for {kind})")
        elif error.validator == "additionalProperties":
            extra = sorted(set(entry) - set(error.schema.get("properties", {})))
            problems.append(f"{where}: attribute {', '.join(extra)}: not allowed in a {kind}")
        else:
            attribute = str(error.path[0]) if error.path else "(entry)"
            problems.append(f"{where}: attribute {attribute}: {_describe(error)}")
    return problems


def validate_value(value: Any, schema_file: str, where: str) -> list[str]:
    """Validate a JSON *value* an attribute holds (a script's body) against *schema_file*.

    Each problem is ``<where>: <JSON path>: <what>``, *where* naming the entry
    and the attribute, e.g. ``... attribute coercionScript: $.general.mode:
    not allowed; ...``. A message repeats a value only where the schema gives
    a pattern or a list of choices (a preset), never a tag's command.
    """
    found: list[tuple[list[str | int], str]] = []  # (path, what), sorted by path
    for error in _validator(schema_file).iter_errors(value):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            hint = error.schema.get("description")
            for extra in _unexpected(error):
                close = difflib.get_close_matches(extra, allowed, n=1)
                what = "not allowed" + (f" (did you mean {close[0]}?)" if close else "")
                found.append(([*path, extra], what + (f"; {hint}" if hint else "")))
        else:
            found.append((path, _describe(error)))
    found.sort(key=lambda item: [str(part) for part in item[0]])
    return [f"{where}: {_json_path(path)}: {what}" for path, what in found]


def _unexpected(error: Any) -> list[str]:
    """The keys an ``additionalProperties: false`` error is about."""
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
    known = error.schema.get("properties", {})
    return sorted(
        str(key)
        for key in error.instance
        if key not in known and not any(p.search(str(key)) for p in patterns)
    )


def _json_path(parts: Iterable[Any]) -> str:
    """A JSON path as jsonschema writes it (``$.general['(0010,0010)']``)."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            path += f".{part}"
        else:
            path += "['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return path


def _describe(error: Any) -> str:
    if error.validator == "type":
        expected = error.validator_value
        names = expected if isinstance(expected, list) else [expected]
        return f"must be of type {' or '.join(names)}"
    if error.validator in ("anyOf", "oneOf") and error.schema.get("description"):
        return f"must be {error.schema['description']}"
    if error.validator == "minLength":
        return "must not be empty" if error.validator_value == 1 else str(error.message)
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "pattern":
        hint = error.schema.get("description")
        return f"{error.instance!r} is not in the expected form" + (f" ({hint})" if hint else "")
    return str(error.message)
