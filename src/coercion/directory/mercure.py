"""Convert mercure anonymizer settings into a ``coercionTagScript`` entry.

mercure-anonymizer's settings are the language of ``script:NAME``
(:mod:`coercion.script.language`), so the body is carried over as written,
except for what this node would refuse or read differently. That is dropped
and reported, one line per item:

* keys that are neither a section (an object) at the top level, nor a tag, an
  option, ``name``, ``owner``, ``prefix`` or ``preset`` in a section (such as
  ``"mode": "whitelist"``);
* commands that do not parse: an unknown macro such as ``@hash_acc@``, a
  misspelled command, an invalid regular expression (the tag's command goes);
* option values other than true/false and presets other than default/none
  (the general section's value, else the default, applies instead);
* a second project section for the same AE title (AE titles choose a project
  in any case, with or without ``AZ_``).

A mercure task or rule file that holds the settings under
``process.settings`` or ``settings`` is unwrapped. The result is checked as
the directory will check it (the entry's schema, the body's schema, then the
script parser) before it is returned. Report lines name sections, keys and
tags; of a command they show at most a misspelled name, never a value it sets.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coercion.directory.config import script_body
from coercion.directory.entries import default_syntaxes, to_json, validate
from coercion.directory.ldifio import Entry, escape_rdn_value
from coercion.errors import ConfigError
from coercion.script.language import (
    GENERAL,
    TAG_PATTERN,
    Options,
    load_json,
    parse_boolean,
    parse_command,
    parse_script,
    project_key,
)

__all__ = ["convert_mercure"]

_OPTIONS = tuple(Options.__dataclass_fields__)
_TEXTS = ("name", "owner", "prefix")
_PRESETS = ("default", "none")


def convert_mercure(
    text: str, name: str, parent_dn: str, origin: str = ""
) -> tuple[Entry, list[str]]:
    """The ``coercionTagScript`` entry *name* (under *parent_dn*) for mercure settings *text*.

    Returns the entry and the report of what was not carried over. A
    ConfigError names *origin* when the text is not JSON settings, or when the
    converted script would not load.
    """
    where = origin or "settings"
    data = load_json(text, where)
    settings = _unwrap(data, where)
    report: list[str] = []
    body: dict[str, Any] = {}
    seen: dict[str, str] = {}  # project key -> the section that has it
    for key, value in settings.items():
        if not isinstance(value, Mapping):
            report.append(f"{key!r}: not a section (an object); dropped")
            continue
        if key != GENERAL:
            first = seen.setdefault(project_key(key), key)
            if first != key:
                report.append(
                    f"section {key}: the same project as section {first} (AE titles choose a "
                    "project in any case, with or without AZ_); dropped"
                )
                continue
        body[key] = _section(key, value, report)
    dn = f"cn={escape_rdn_value(name)},{parent_dn}"
    source = Path(origin).name if origin else "a settings file"
    attrs = {
        "objectClass": ["coercionTagScript"],
        "cn": [name],
        "coercionScript": [json.dumps(body)],
        "description": [f"Imported from mercure anonymizer settings ({source})"],
    }
    _check((dn, attrs), name, where)
    return (dn, attrs), report


def _unwrap(data: object, where: str) -> Mapping[str, Any]:
    """The settings themselves, out of a task (``process.settings``) or rule file.

    Only an object of sections counts as settings there, so that a project
    section named ``settings`` (an object of commands) stays a section.
    """
    if isinstance(data, Mapping) and GENERAL not in data:
        process = data.get("process")
        steps = process if isinstance(process, list) else [process]
        found = [s.get("settings") for s in steps if isinstance(s, Mapping)]
        found = [settings for settings in found if _sections_only(settings)]
        if len(found) > 1:
            raise ConfigError(
                f"{where}: {len(found)} processing steps hold settings; "
                "save the anonymizer's settings alone and convert that file"
            )
        if not found and _sections_only(data.get("settings")):
            found = [data["settings"]]
        data = found[0] if found else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: not mercure anonymizer settings (a JSON object of sections)")
    return data


def _sections_only(value: object) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())


def _section(key: str, data: Mapping[str, Any], report: list[str]) -> dict[str, Any]:
    """The items of one section that carry over; the others are reported."""
    where = f"section {key}"
    source = GENERAL if key == GENERAL else f"project {key}"
    fallback = " (the default applies)" if key == GENERAL else " (the general section's applies)"
    kept: dict[str, Any] = {}
    for item, value in data.items():
        tag = TAG_PATTERN.match(item)
        problem = None
        if tag:
            problem = _command_problem(value, int(tag[1] + tag[2], 16), source)
        elif item in _OPTIONS:
            if parse_boolean(value) is None:
                problem = f'{_shown(value)} is not "true" or "false"; dropped{fallback}'
        elif item == "preset":
            if not isinstance(value, str) or value.strip().lower() not in _PRESETS:
                problem = f"{_shown(value)} is not default or none; dropped{fallback}"
        elif item in _TEXTS:
            if not isinstance(value, str):
                problem = "not a string; dropped"
        else:
            close = difflib.get_close_matches(item, [*_OPTIONS, *_TEXTS, "preset"], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problem = (
                "not a tag (gggg,eeee), an option, name, owner, prefix or preset here"
                f"{hint}; dropped"
            )
        if problem is None:
            kept[item] = value
        else:
            report.append(f"{where}: {item if tag else repr(item)}: {problem}")
    return kept


def _command_problem(value: object, tag: int, source: str) -> str | None:
    """Why a tag's command cannot be carried over, or None."""
    if not isinstance(value, str):
        return "the command is not a string; the tag's command dropped"
    try:
        parse_command(value, tag, source)
    except ValueError as exc:
        return f"{exc}; the tag's command dropped"
    return None


def _shown(value: object) -> str:
    """A short option or preset value as written; anything else by its JSON type."""
    if isinstance(value, str) and len(value) <= 20:
        return repr(value)
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return f"a {type(value).__name__} value"


def _check(entry: Entry, name: str, where: str) -> None:
    """Fail when the converted entry would not load as the directory loads it."""
    dn, attrs = entry
    problems = validate(to_json(dn, attrs, default_syntaxes()), where)
    body = script_body(attrs["coercionScript"][0], f"{dn}: attribute coercionScript", problems)
    if body is not None:
        try:
            parse_script(name, body)
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
    if problems:
        raise ConfigError(
            f"{where}: the converted script does not load; please report this:\n"
            + "\n".join(problems)
        )
