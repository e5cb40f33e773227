"""Convert mercure anonymizer settings into a ``coercionTagScript`` entry.

mercure-anonymizer's settings are the language of ``script:NAME``
(:mod:`coercion.script.language`); each item is read as mercure reads it
(mercure-anonymizer at commit 60c90747b65f6ba4cb5ee4fc7e2954dba06cd2f5) and
written as the command that does the same here. The rule: the imported script
never keeps what mercure would remove or change. Reported, one line each:

* commands mercure reads by their start (``"removed"`` is ``remove``); commands
  it does not know, which stop its whole job: ``remove``;
* short or upper-case keys (``"(10,10)"``): the full tag; when mercure's
  unknown-tag pass would remove the attribute anyway (it looks keys up as
  ``(gggg,eeee)`` in lower case), ``remove``;
* ``truncdate`` on an attribute that is no date: ``clear``;
* Study, Series and SOP Instance UID: mercure always writes new ones, so
  ``set(@random_uid@)`` in every section that names one, and in general;
* option values other than "true"/"false", presets other than default/none,
  as mercure reads them; items mercure ignores (dropped);
* of project keys that differ only in case, the one mercure selects (it looks
  the lower-cased AE title up as written).

What has no counterpart (``set`` of a value the attribute's VR cannot hold, an
unknown macro, a key mercure refuses) makes the conversion fail and nothing is
written, unless *lenient*: then that tag is removed and reported. A task or
rule file holding the settings under ``process.settings`` or ``settings`` is
unwrapped. The result is checked as the directory will check it. Report lines
name sections, keys and tags, never a value a command sets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coercion.dicom.elements import dictionary_vr
from coercion.dicom.tags import format_tag, parse_tag
from coercion.directory.config import script_body
from coercion.directory.entries import default_syntaxes, to_json, validate
from coercion.directory.ldifio import Entry, escape_rdn_value
from coercion.errors import ConfigError
from coercion.script.language import (
    GENERAL,
    Kind,
    Options,
    load_json,
    parse_command,
    parse_script,
    preset_kinds,
)

__all__ = ["convert_mercure"]

_OPTIONS = tuple(Options.__dataclass_fields__)
_TEXTS = ("name", "owner", "prefix")
_PRESETS = ("default", "none")
_COUNTER = re.compile(r"__COUNTER-\d+__")
_SOP_CLASS_UID = 0x00080016
#: mercure gives every object a new Study, Series and SOP Instance UID, whatever the script says.
_NEW_UIDS = (0x0020000D, 0x0020000E, 0x00080018)
_PRESET_KINDS = preset_kinds()


def convert_mercure(
    text: str, name: str, parent_dn: str, origin: str = "", *, lenient: bool = False
) -> tuple[Entry, list[str]]:
    """The ``coercionTagScript`` entry *name* (under *parent_dn*) for mercure settings *text*.

    Returns the entry and the report of what was mapped or dropped. A
    ConfigError names *origin* when the text is not JSON settings, when the
    converted script would not load, or when a command mercure runs has no
    counterpart here (unless *lenient*: then that tag is removed).
    """
    where = origin or "settings"
    settings = _unwrap(load_json(text, where), where)
    conversion = _Conversion(lenient)
    body: dict[str, Any] = {}
    for key in _selectable(settings, conversion.report):
        body[key] = conversion.section(key, settings[key], settings)
    if conversion.missing:
        raise ConfigError(
            f"{where}: {len(conversion.missing)} commands mercure runs have no counterpart here; "
            "nothing written (--lenient writes the entry with those tags removed):\n"
            + "\n".join(conversion.missing)
        )
    dn = f"cn={escape_rdn_value(name)},{parent_dn}"
    source = Path(origin).name if origin else "a settings file"
    attrs = {
        "objectClass": ["coercionTagScript"],
        "cn": [name],
        "coercionScript": [json.dumps(body)],
        "description": [f"Imported from mercure anonymizer settings ({source})"],
    }
    _check((dn, attrs), name, where)
    return (dn, attrs), conversion.report


def _selectable(settings: Mapping[str, Any], report: list[str]) -> list[str]:
    """The sections mercure can select: it looks the lower-cased AE title up as written.

    Of keys that differ only in case, mercure selects the one in lower case (the
    later one when none is); a lone key with capitals is kept, as this node
    selects sections in any case.
    """
    chosen: dict[str, str] = {}
    for key, value in settings.items():
        if not isinstance(value, Mapping):
            report.append(f"{key!r}: not a section (an object); dropped")
            continue
        lowered = key if key == GENERAL else key.lower()
        first = chosen.get(lowered)
        if first is not None and first == lowered:
            report.append(f"section {key}: mercure selects section {first} instead; dropped")
            continue
        if first is not None:
            report.append(f"section {first}: mercure selects section {key} instead; dropped")
        chosen[lowered] = key
    return list(chosen.values())


class _Conversion:
    """Section by section, mercure's reading of each item mapped onto this node's language."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient
        self.report: list[str] = []
        self.missing: list[str] = []

    def section(
        self, key: str, data: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The items of one section as mercure reads them; what changes is reported."""
        where = f"section {key}"
        kept: dict[str, Any] = {}
        general = settings.get(GENERAL, {})
        context = (_removes_unknown(general, data), _preset_commands(general, data))
        for item, value in data.items():
            if item.startswith("(") and item.endswith(")"):
                self._tag(where, item, value, context, kept)
            elif item in _OPTIONS:
                kept[item] = _mercure_option(item, value)
                if not isinstance(value, str) or value.strip().lower() not in ("true", "false"):
                    read = json.dumps(kept[item])
                    self.report.append(f"{where}: {item}: mercure reads {_shown(value)} as {read}")
            elif item == "preset":
                kept[item] = "none" if str(value).strip().lower() == "none" else "default"
                if not isinstance(value, str) or value.strip().lower() not in _PRESETS:
                    self.report.append(f"{where}: preset: mercure reads {_shown(value)} as default")
            elif item in _TEXTS:
                kept[item] = value if isinstance(value, str) else ""
                if not isinstance(value, str):
                    self.report.append(f"{where}: {item}: not a string; empty, as in mercure")
            elif item == "mode" and key == GENERAL:
                kept[item] = "whitelist" if value == "whitelist" else "blacklist"
            else:
                self.report.append(f"{where}: {item!r}: mercure ignores it here; dropped")
        if key == GENERAL or any(parse_tag(item, compact=True) in _NEW_UIDS for item in data):
            for tag in _NEW_UIDS:
                kept[format_tag(tag).lower()] = "set(@random_uid@)"
        return kept

    def _tag(
        self,
        where: str,
        item: str,
        value: object,
        context: tuple[bool, Mapping[int, Kind]],
        kept: dict[str, Any],
    ) -> None:
        tag = parse_tag(item, compact=True)
        shown = f"{where}: {item}"
        if tag is None:
            self._missing(shown, "mercure refuses the key (it stops the whole job)", kept, item)
            return
        full = format_tag(tag).lower()
        command, note = _mercure_command(value if isinstance(value, str) else "", tag)
        if full != item:
            second, note = _second_key(command, note, tag, context)
            if second is None:
                self.report.append(f"{shown}: {note}")
                return
            command = second
        if tag in _NEW_UIDS:
            note = "mercure always writes a new UID; set(@random_uid@)"
        if note:
            self.report.append(f"{shown}: {note}")
        try:
            parse_command(command, tag, GENERAL)
        except ValueError as exc:
            self._missing(shown, str(exc), kept, full)
            return
        if tag == _SOP_CLASS_UID and command in ("remove", "clear"):
            self._missing(shown, "removing SOP Class UID breaks the object", kept, full, "keep")
            return
        kept[full] = command

    def _missing(
        self, shown: str, why: str, kept: dict[str, Any], item: str, lenient: str = "remove"
    ) -> None:
        if not self.lenient:
            self.missing.append(f"{shown}: {why}")
            return
        self.report.append(f"{shown}: {why}; {lenient} (--lenient)")
        tag = parse_tag(item, compact=True)
        if tag is not None:
            kept[format_tag(tag).lower()] = lenient


def _mercure_command(value: str, tag: int) -> tuple[str, str]:
    """The command mercure runs for *value* (it matches the start), and a note when it differs."""
    for name in ("keep", "safe", "remove", "clear"):
        if value.startswith(name):
            return name, "" if value == name else f"mercure reads the command as {name}"
    if value.startswith("set(") and value.endswith(")"):
        return value, ""
    if value.startswith("truncdate"):
        if dictionary_vr(tag) in ("DA", "DT"):
            return "truncdate", ""
        return "clear", "truncdate on no date: mercure writes YYYY0101 or empty; clear"
    if _COUNTER.search(value) and not value.startswith("s"):
        return value, ""  # this node's counter: a pseudonym, never the value
    return "remove", "mercure does not know the command (it stops the whole job); remove"


def _second_key(
    command: str, note: str, tag: int, context: tuple[bool, Mapping[int, Kind]]
) -> tuple[str | None, str]:
    """A key not written ``(gggg,eeee)`` in lower case: mercure runs it beside its own entries.

    The preset's entry for the tag runs as well, and the unknown-tag pass, which
    looks keys up in lower case, removes the attribute when nothing else names
    it. Returns the command that does what both do (None: the preset's alone).
    """
    unknown_go, preset = context
    own = preset.get(tag)
    if own is None:
        if unknown_go and command != "remove":
            return "remove", "mercure's unknown-tag pass removes it (the key is not lower case)"
        return command, note or "written as the full tag"
    if own in (Kind.KEEP, Kind.SAFE) or command.startswith(("remove", "set(", "clear")):
        return command, note or "written as the full tag"
    return None, "mercure runs the preset's command for the tag as well; the preset's applies"


def _preset_commands(general: object, section: Mapping[str, Any]) -> Mapping[int, Kind]:
    """The default preset's command kinds when it applies to a section, else nothing."""
    preset = "default"
    for data in (general, section):
        if isinstance(data, Mapping) and "preset" in data:
            preset = str(data["preset"]).strip().lower()
    return _PRESET_KINDS if preset != "none" else {}


def _mercure_option(item: str, value: object) -> bool:
    """mercure: print_assignment is on for "true" only; the others are off for "false" only."""
    text = value.strip().lower() if isinstance(value, str) else ""
    return text == "true" if item == "print_assignment" else text != "false"


def _removes_unknown(general: object, section: Mapping[str, Any]) -> bool:
    """Whether mercure's unknown-tag pass runs for a project (preset none turns it off)."""
    result = True
    for data in (general, section):
        if not isinstance(data, Mapping):
            continue
        if str(data.get("preset", "")).strip().lower() == "none":
            result = False
        if "remove_unknown_tags" in data:
            result = _mercure_option("remove_unknown_tags", data["remove_unknown_tags"])
    return result


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
