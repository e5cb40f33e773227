"""The tag-script language: mercure-anonymizer's settings format, parsed and checked once.

A script is a JSON object with a ``general`` section and project sections::

    {
      "general": {"preset": "default", "remove_unknown_tags": "true",
                  "(0010,0010)": "set(@fake_name@)"},
      "myproject": {"name": "My project", "owner": "Lab", "prefix": "MP",
                    "(0010,0020)": "MP-__COUNTER-001__",
                    "(0008,1030)": "s/(\\w{3}).*/$1??/"}
    }

Each section may name a ``preset`` (``default``: the PS3.15 Basic Profile
from the generated table; ``none``), the options of :class:`Options` (as
strings ``"true"``/``"false"``, or JSON booleans), and tag assignments
``"(gggg,eeee)": "command"`` or, for an attribute inside sequence items,
``"(gggg,eeee)/(gggg,eeee)": "command"`` (each step but the last a sequence).
The general section may say ``"mode": "whitelist"``. Commands: ``keep``, ``safe``, ``remove``,
``clear``, ``set(value)``, ``truncdate``, a Perl-style substitution
``s/pattern/replacement/flags`` and a Cimar counter ``PREFIX__COUNTER-001__``
(alone or inside ``set(...)``). Values of ``set`` may hold the macros of
:data:`MACROS`.

Everything is parsed here, when the rules load; every problem of a script is
reported at once, naming its section and tag. A project's assignment is
resolved as preset < general < project.
"""

from __future__ import annotations

import difflib
import enum
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coercion.dicom.elements import dictionary_vr
from coercion.dicom.tags import format_tag, format_tags, parse_tag
from coercion.errors import ConfigError
from coercion.profile import Action, compile_profile

__all__ = [
    "GENERAL",
    "MACROS",
    "NESTING_RULE",
    "REQUIRED",
    "TYPE1",
    "Assignment",
    "Command",
    "Counter",
    "Kind",
    "Macro",
    "Mode",
    "Options",
    "Preset",
    "Rewrite",
    "Script",
    "Section",
    "Template",
    "load_json",
    "parse_boolean",
    "parse_key",
    "parse_script",
    "preset_kinds",
    "project_key",
]

GENERAL = "general"
#: The macros ``set(...)`` values may use (``value`` also as ``@value(gggg,eeee)@``).
MACROS = frozenset(
    {
        "project_name",
        "project_owner",
        "project_prefix",
        "process_date",
        "process_time",
        "random_uid",
        "fake_name",
        "fake_mrn",
        "fake_acc",
        "hash_acc",
        "value",
    }
)
_SECTION_KEYS = frozenset({"name", "owner", "prefix", "preset", "mode"})
#: How far commands reach, as ``coercion explain`` states it.
NESTING_RULE = (
    "script: commands that remove or blank (remove, clear, the preset's X/Z/D/U, truncdate, "
    "substitutions) apply at every sequence depth; commands that write a value (set, counters, "
    "fake values, @value@) apply at the top level only, and inside sequence items only where a "
    "path key names the attribute, e.g. (0040,0275)/(0032,1060)."
)
#: What a project is called, and owned by, when no section says (as in mercure).
UNDEFINED_NAME, UNKNOWN_OWNER = "Undefined", "Unknown"
_SOP_CLASS_UID, _SOP_INSTANCE_UID = 0x00080016, 0x00080018
#: Type 1 attributes a script may replace but never remove or empty.
TYPE1 = frozenset({_SOP_CLASS_UID, _SOP_INSTANCE_UID})
#: What an object needs to stay valid: kept in whitelist mode, and never removed as unnamed.
#: SOP Common's Type 1 UIDs, Specific Character Set, and the Image Pixel module (with Number of
#: Frames); the transfer syntax lives in the file meta, which scripts do not touch.
REQUIRED = frozenset(
    {0x00080005, _SOP_CLASS_UID, _SOP_INSTANCE_UID, 0x00280002, 0x00280004, 0x00280006}
    | {0x00280008, 0x00280010, 0x00280011, 0x00280034, 0x00280100, 0x00280101, 0x00280102}
    | {0x00280103, 0x00280106, 0x00280107, 0x00281101, 0x00281102, 0x00281103, 0x00281201}
    | {0x00281202, 0x00281203, 0x00282000, 0x00287FE0, 0x7FE00001, 0x7FE00002, 0x7FE00008}
    | {0x7FE00009, 0x7FE00010}
)
_MACRO = re.compile(r"@([a-z_]+)(?:\(([^)]*)\))?@")
_COUNTER = re.compile(r"__COUNTER-(\d+)__")
_SET = re.compile(r"^set\((.*)\)$", re.DOTALL)
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST"})
_TEXT_VRS |= frozenset({"TM", "UC", "UI", "UR", "UT"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_PERL_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


class Kind(enum.Enum):
    """What a command does; ``action`` is the PS3.15 letter reported for it."""

    KEEP = "keep"
    SAFE = "safe"
    REMOVE = "remove"
    CLEAR = "clear"
    SET = "set"
    TRUNCDATE = "truncdate"
    REWRITE = "rewrite"
    DUMMY = "dummy"  # the default preset's D: a dummy value, as deidentify: makes it
    UID = "uid"  # the default preset's U: a new UID from the project's key

    @property
    def action(self) -> Action:
        """The action letter audit trails and ``explain`` show for this command."""
        return _ACTIONS[self]

    @property
    def writes(self) -> bool:
        """Whether the command writes a value (``set``, counters, macros): top level only."""
        return self is Kind.SET


_ACTIONS = {
    Kind.KEEP: Action.K,
    Kind.SAFE: Action.K,
    Kind.REMOVE: Action.X,
    Kind.CLEAR: Action.Z,
    Kind.SET: Action.D,
    Kind.TRUNCDATE: Action.C,
    Kind.REWRITE: Action.C,
    Kind.DUMMY: Action.D,
    Kind.UID: Action.U,
}


class Preset(enum.Enum):
    """The presets a section may start from."""

    DEFAULT = "default"
    NONE = "none"


class Mode(enum.Enum):
    """``blacklist`` (the default): what the script does not name follows the options and preset;
    ``whitelist``: only what the script names (and :data:`REQUIRED`) stays."""

    BLACKLIST = "blacklist"
    WHITELIST = "whitelist"


@dataclass(frozen=True)
class Macro:
    """``@name@`` or ``@value(gggg,eeee)@`` inside a ``set`` value."""

    name: str
    tag: int | None = None


@dataclass(frozen=True)
class Counter:
    """``__COUNTER-001__``: the digits give the width and the step (``0010``: 0010, 0020, ...)."""

    width: int
    step: int

    def format(self, number: int) -> str:
        """The text of the *number*-th value."""
        return str(number * self.step).zfill(self.width)


Part = str | Macro | Counter


@dataclass(frozen=True)
class Template:
    """A ``set`` value: literal text, macros and at most one counter."""

    parts: tuple[Part, ...]

    @property
    def literal(self) -> str | None:
        """The value when it holds no macro and no counter, else None."""
        if all(isinstance(part, str) for part in self.parts):
            return "".join(str(part) for part in self.parts)
        return None

    @property
    def counter(self) -> Counter | None:
        """The counter of the template, if any."""
        return next((p for p in self.parts if isinstance(p, Counter)), None)


@dataclass(frozen=True)
class Rewrite:
    """A Perl-style substitution ``s/pattern/replacement/flags``, compiled."""

    pattern: re.Pattern[str]
    replacement: tuple[str | int, ...]  # literal text and group numbers (0 for $&)
    count: int  # 0: every match (flag g), 1: the first

    def apply(self, text: str) -> str:
        """*text* rewritten; unmatched optional groups give the empty string."""

        def expand(match: re.Match[str]) -> str:
            return "".join(
                part if isinstance(part, str) else (match.group(part) or "")
                for part in self.replacement
            )

        return self.pattern.sub(expand, text, count=self.count)


@dataclass(frozen=True)
class Command:
    """One tag's command and where it comes from (``preset default``, ``general``, a project)."""

    kind: Kind
    source: str
    template: Template | None = None
    rewrite: Rewrite | None = None

    def describe(self) -> str:
        """The command's name without its parameter (parameters may be site-specific text)."""
        return self.kind.value


@dataclass(frozen=True)
class Options:
    """The options of a section after resolution."""

    remove_unknown_tags: bool = True
    remove_safe_tags: bool = False
    remove_curves: bool = True
    remove_overlays: bool = True
    print_assignment: bool = False


_OPTION_NAMES = tuple(Options.__dataclass_fields__)
#: Under preset none, as in mercure, nothing is removed unless the script says so.
_PRESET_OPTIONS = {
    Preset.DEFAULT: Options(),
    Preset.NONE: Options(remove_unknown_tags=False, remove_curves=False, remove_overlays=False),
}


@dataclass(frozen=True)
class Section:
    """One section of a script, as written."""

    key: str
    name: str = ""
    owner: str = ""
    prefix: str = ""
    preset: Preset | None = None
    options: Mapping[str, bool] = field(default_factory=dict)
    commands: Mapping[int, Command] = field(default_factory=dict)
    paths: Mapping[tuple[int, ...], Command] = field(default_factory=dict)
    mode: Mode | None = None


@dataclass(frozen=True)
class Assignment:
    """What runs for one project: every tag's command and the options, resolved."""

    script: str
    project: str  # the section's key, or "general"
    name: str
    owner: str
    prefix: str
    preset: Preset
    options: Options
    commands: Mapping[int, Command]
    #: The commands in sequence items: those of *commands* that do not write a value, each
    #: writing command replaced by the nearest layer's (project, general, preset) that does not.
    nested: Mapping[int, Command] = field(default_factory=dict)
    #: Commands for attributes at a path: (sequence, ..., attribute).
    paths: Mapping[tuple[int, ...], Command] = field(default_factory=dict)
    mode: Mode = Mode.BLACKLIST

    @property
    def store_scope(self) -> str:
        """The store scope of the project's counters and fake values."""
        return f"SCRIPT/{self.script}/{self.project}"[:64]

    def describe(self) -> list[str]:
        """One line per tag or path: key, command name and source; no parameter is shown."""
        lines = [
            f"{format_tag(tag)} {command.describe()} [{command.source}]"
            for tag, command in sorted(self.commands.items())
        ]
        lines += [
            f"{format_tags(path)} {command.describe()} [{command.source}]"
            for path, command in sorted(self.paths.items())
        ]
        return lines

    def removes_unnamed(self, tag: int) -> bool:
        """Whether an attribute the script does not name goes (its private creator aside)."""
        group, element = tag >> 16, tag & 0xFFFF
        if tag in REQUIRED:
            return False
        if not element:
            return True  # group length: wrong once anything changes
        if self.mode is Mode.WHITELIST:
            return True
        if 0x5000 <= group <= 0x501E and not group & 1:
            return self.options.remove_curves
        if 0x6000 <= group <= 0x601E and not group & 1:
            return self.options.remove_overlays
        if not self.options.remove_unknown_tags:
            return False
        return bool(group & 1) or self.preset is Preset.NONE or dictionary_vr(tag) == "UN"

    @functools.cached_property
    def retained(self) -> frozenset[int]:
        """The tags whose original values the script carries through to its output."""
        kept = {Kind.KEEP} if self.options.remove_safe_tags else {Kind.KEEP, Kind.SAFE}
        tags = {tag for tag, command in self.commands.items() if command.kind in kept}
        tags |= {path[-1] for path, command in self.paths.items() if command.kind in kept}
        for tag, command in [*self.commands.items(), *((p[-1], c) for p, c in self.paths.items())]:
            for part in command.template.parts if command.template else ():
                if isinstance(part, Macro) and part.name == "value":
                    tags.add(tag if part.tag is None else part.tag)
        return frozenset(tags)

    def action_for(self, tag: int) -> Action | None:
        """For output verification: K where the original value survives, else what is done."""
        if tag in self.retained:
            return Action.K
        command = self.commands.get(tag)
        if command is not None:
            return command.kind.action
        return None if self.removes_unnamed(tag) else Action.K

    def at(self, sequences: tuple[int, ...]) -> Mapping[int, Command]:
        """The commands inside the items of the sequences *sequences* (outermost first)."""
        base = self.nested if sequences else self.commands
        here = {path[-1]: c for path, c in self.paths.items() if path[:-1] == sequences}
        return {**base, **here} if here else base

    @functools.cached_property
    def path_steps(self) -> frozenset[tuple[int, ...]]:
        """Every sequence path a path command goes through (its items are walked)."""
        return frozenset(path[:end] for path in self.paths for end in range(1, len(path)))


@dataclass(frozen=True)
class Script:
    """A parsed script: its general section and its project sections by key."""

    name: str
    general: Section
    projects: Mapping[str, Section]
    _cache: dict[str, Assignment] = field(default_factory=dict, compare=False, repr=False)
    _by_ae: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def project_for(self, called_ae: str) -> str:
        """The project section chosen by *called_ae*, or general (see :func:`project_key`)."""
        found = self._by_ae.get(called_ae)
        if found is None:
            wanted = project_key(called_ae)
            found = next((key for key in self.projects if key.lower() == wanted), GENERAL)
            self._by_ae[called_ae] = found
        return found

    def assignment(self, project: str = GENERAL) -> Assignment:
        """The resolved assignment of *project* (a section key, or ``general``)."""
        found = self._cache.get(project)
        if found is None:
            found = self._cache[project] = self._resolve(project)
        return found

    def _resolve(self, project: str) -> Assignment:
        section = self.projects.get(project)
        if section is None and project != GENERAL:
            raise ConfigError(f"script {self.name}: no project section {project!r}")
        general = self.general
        preset = (section.preset if section else None) or general.preset or Preset.DEFAULT
        options = _PRESET_OPTIONS[preset].__dict__.copy()
        given = dict(general.options) if section is None or section.preset is None else {}
        given.update(section.options if section is not None else {})
        options.update(given)
        if preset is Preset.NONE and options["remove_unknown_tags"]:
            # Every attribute the script does not name goes: curves and overlays too.
            for name in ("remove_curves", "remove_overlays"):
                options[name] = given.get(name, True)
        mode = general.mode or Mode.BLACKLIST
        layers = [_preset_commands(preset), general.commands]
        layers += [section.commands] if section is not None else []
        commands: dict[int, Command] = {}
        nested: dict[int, Command] = {}
        if mode is Mode.WHITELIST:
            layers[0] = {tag: c for tag, c in layers[0].items() if tag in REQUIRED}
        for layer in layers:
            commands.update(layer)
            nested.update({tag: c for tag, c in layer.items() if not c.kind.writes})
        paths = dict(general.paths)
        paths.update(section.paths if section is not None else {})
        own = section or general
        return Assignment(
            script=self.name,
            project=project,
            name=own.name or general.name or UNDEFINED_NAME,
            owner=own.owner or general.owner or UNKNOWN_OWNER,
            prefix=own.prefix or general.prefix,
            preset=preset,
            options=Options(**options),
            commands=commands,
            nested=nested,
            paths=paths,
            mode=mode,
        )


def project_key(text: str) -> str:
    """The section key a called AE title selects, as mercure selects it.

    The AE title in lower case, without one leading ``az_``; it selects the
    section whose key is that in any case (mercure: in lower case).
    """
    text = text.strip().lower()
    return text[3:] if text.startswith("az_") else text


def parse_key(text: str) -> tuple[int, ...] | None:
    """The tags of a key: ``(gggg,eeee)``, or a path into items ``(gggg,eeee)/(gggg,eeee)``.

    Each step of a path but the last is a sequence; spaces may stand around
    the slashes. None when *text* is not a key.
    """
    steps = text.split("/")
    if len(steps) > 1:
        steps = [steps[0].rstrip(), *(step.strip() for step in steps[1:-1]), steps[-1].lstrip()]
    tags = [parse_tag(step) for step in steps]
    return tuple(tag for tag in tags if tag is not None) if None not in tags else None


def preset_kinds() -> dict[int, Kind]:
    """The default preset's command kind of each tag it names."""
    return {tag: command.kind for tag, command in _preset_commands(Preset.DEFAULT).items()}


def _preset_commands(preset: Preset) -> dict[int, Command]:
    """The default preset: the Basic Profile action of every exact tag of Table E.1-1."""
    if preset is Preset.NONE:
        return {}
    kinds = {
        Action.X: Kind.REMOVE,
        Action.Z: Kind.CLEAR,
        Action.D: Kind.DUMMY,
        Action.U: Kind.UID,
        Action.K: Kind.KEEP,
        Action.C: Kind.KEEP,
    }
    return {
        tag: Command(kinds[action], "preset default")
        for tag, action in compile_profile().actions.items()
    }


# -- parsing ---------------------------------------------------------------------------------


def load_json(text: str, where: str = "") -> Any:
    """The JSON value of *text*; ConfigError (``<where>: not JSON (... at line L column C)``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


def parse_script(name: str, body: str | Mapping[str, Any]) -> Script:
    """Parse and check a script's JSON *body*; ConfigError lists every problem (one a line)."""
    problems: list[str] = []
    data = load_json(body) if isinstance(body, str) else body
    if not isinstance(data, Mapping):
        raise ConfigError("the script must be a JSON object of sections")
    general: Section | None = None
    projects: dict[str, Section] = {}
    for key, value in data.items():
        if not isinstance(value, Mapping):
            problems.append(f"section {key}: must be an object")
            continue
        section = _section(str(key), value, problems)
        if key == GENERAL:
            general = section
        else:
            projects[str(key)] = section
    keys = [k.lower() for k in projects]
    for duplicate in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"sections {duplicate!r}: two project sections with one key")
    if problems:
        raise ConfigError("\n".join(problems))
    script = Script(name, general or Section(GENERAL), projects)
    for project in (GENERAL, *projects):
        _check_type1(script.assignment(project), problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return script


def _check_type1(assignment: Assignment, problems: list[str]) -> None:
    """SOP Class and SOP Instance UID may get new values, never go or be emptied."""
    gone = {Kind.REMOVE, Kind.CLEAR}
    if assignment.options.remove_safe_tags:
        gone.add(Kind.SAFE)
    for tag in sorted(TYPE1):
        command = assignment.commands.get(tag)
        if command is not None and command.kind in gone:
            problems.append(
                f"section {assignment.project}: {format_tag(tag)}: {command.kind.value} "
                f"(from {command.source}) would leave the object without this Type 1 "
                "attribute; keep it or set(...) a new value"
            )


def _section(key: str, data: Mapping[str, Any], problems: list[str]) -> Section:
    where = f"section {key}"
    texts: dict[str, str] = {}
    options: dict[str, bool] = {}
    commands: dict[int, Command] = {}
    paths: dict[tuple[int, ...], Command] = {}
    preset: Preset | None = None
    mode: Mode | None = None
    source = GENERAL if key == GENERAL else f"project {key}"
    for item, value in data.items():
        tags = parse_key(item)
        if tags:
            command = _keyed_command(item, tags, value, source, problems)
            if command is not None and len(tags) == 1:
                commands[tags[0]] = command
            elif command is not None:
                paths[tags] = command
        elif item == "mode":
            if key != GENERAL:
                problems.append(f"{where}: mode: only the general section chooses the mode")
            elif str(value).strip().lower() not in ("blacklist", "whitelist"):
                problems.append(f"{where}: mode: {value!r} is not blacklist or whitelist")
            else:
                mode = Mode(str(value).strip().lower())
        elif item in _OPTION_NAMES:
            parsed = parse_boolean(value)
            if parsed is None:
                problems.append(f'{where}: {item}: expected "true" or "false"')
            else:
                options[item] = parsed
        elif item == "preset":
            try:
                preset = Preset(str(value).strip().lower())
            except ValueError:
                problems.append(f"{where}: preset: {value!r} is not one of default, none")
        elif item in _SECTION_KEYS:
            if not isinstance(value, str):
                problems.append(f"{where}: {item}: must be a string")
            else:
                texts[item] = value
        else:
            known = [*_OPTION_NAMES, *_SECTION_KEYS]
            close = difflib.get_close_matches(item, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(
                f"{where}: {item!r} is neither a tag (gggg,eeee), an option nor one of "
                f"{', '.join(sorted(_SECTION_KEYS))}{hint}"
            )
    return Section(
        key,
        texts.get("name", ""),
        texts.get("owner", ""),
        texts.get("prefix", ""),
        preset,
        options,
        commands,
        paths,
        mode,
    )


def _keyed_command(
    item: str, tags: tuple[int, ...], value: object, source: str, problems: list[str]
) -> Command | None:
    """The command of a tag or path key, or None with the problem added."""
    where = f"section {source.removeprefix('project ')}: {item}"
    if not isinstance(value, str):
        problems.append(f"{where}: the command must be a string")
        return None
    try:
        _check_path(tags)
        return parse_command(value, tags[-1], source)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _check_path(tags: tuple[int, ...]) -> None:
    """Each step of a path but the last must be a standard sequence."""
    for step in tags[:-1]:
        if dictionary_vr(step) != "SQ":
            raise ValueError(f"{format_tag(step)} in a path is not a sequence")


def parse_boolean(value: object) -> bool | None:
    """An option value: ``"true"``/``"false"`` in any case, or a JSON boolean; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def parse_command(text: str, tag: int, source: str = GENERAL) -> Command:
    """Parse one command for *tag*; ValueError says what is wrong."""
    stripped = text.strip()
    # None for a private or unknown tag: its element's VR decides.
    vr = None if tag >> 16 & 1 else dictionary_vr(tag, None)
    lowered = stripped.lower()
    if lowered in ("keep", "safe", "remove", "clear", "truncdate"):
        kind = Kind(lowered)
        if kind is Kind.TRUNCDATE and vr not in (None, "DA", "DT"):
            raise ValueError(f"truncdate needs a DA or DT attribute, not {vr}")
        return Command(kind, source)
    set_match = _SET.match(stripped)
    if set_match or _COUNTER.search(stripped):
        template = parse_template(set_match.group(1) if set_match else stripped)
        _check_set(template, vr)
        return Command(Kind.SET, source, template=template)
    if stripped.startswith("s") and len(stripped) > 1 and not stripped[1].isalnum():
        if vr is not None and vr not in _TEXT_VRS:
            raise ValueError(f"a substitution needs a text attribute, not {vr}")
        return Command(Kind.REWRITE, source, rewrite=parse_rewrite(stripped))
    raise ValueError(
        f"unknown command {stripped.split('(')[0][:20]!r}; commands are keep, safe, remove, "
        "clear, set(value), truncdate, s/pattern/replacement/flags and PREFIX__COUNTER-001__"
    )


def _check_set(template: Template, vr: str | None) -> None:
    if vr is None:
        return
    if vr == "SQ" or vr not in _TEXT_VRS | _NUMBER_VRS:
        raise ValueError(f"set cannot write a value of VR {vr}")
    if template.counter is not None and vr not in _TEXT_VRS:
        raise ValueError(f"a counter needs a text attribute, not {vr}")
    literal = template.literal
    if literal is not None and literal and vr in _NUMBER_VRS | {"IS", "DS"}:
        for number in literal.split("\\"):
            try:
                float(number) if vr in ("FL", "FD", "DS") else int(number)
            except ValueError:
                raise ValueError(f"set value is not a number, as VR {vr} needs") from None


def parse_template(text: str) -> Template:
    """Split a ``set`` value into literal text, macros and a counter."""
    parts: list[Part] = []
    position = 0
    tokens = sorted([*_MACRO.finditer(text), *_COUNTER.finditer(text)], key=lambda m: m.start())
    counters = 0
    for token in tokens:
        if token.start() < position:
            continue
        if token.start() > position:
            parts.append(text[position : token.start()])
        if token.re is _COUNTER:
            digits = token.group(1)
            if int(digits) == 0:
                raise ValueError(f"counter __COUNTER-{digits}__ counts in steps of 0")
            parts.append(Counter(len(digits), int(digits)))
            counters += 1
        else:
            parts.append(_macro(token.group(1), token.group(2)))
        position = token.end()
    if position < len(text):
        parts.append(text[position:])
    if counters > 1:
        raise ValueError("a value may hold one counter")
    return Template(tuple(parts))


def _macro(name: str, argument: str | None) -> Macro:
    if name not in MACROS:
        close = difflib.get_close_matches(name, sorted(MACROS), n=1)
        hint = f" (did you mean @{close[0]}@?)" if close else ""
        raise ValueError(f"unknown macro @{name}@{hint}")
    if argument is None:
        return Macro(name)
    if name != "value":
        raise ValueError(f"macro @{name}@ takes no argument")
    tag = parse_tag(f"({argument.strip().strip('()')})")
    if tag is None:
        raise ValueError(f"@value({argument})@: the argument must be a tag gggg,eeee")
    return Macro(name, tag)


def parse_rewrite(text: str) -> Rewrite:
    """Parse ``s/pattern/replacement/flags`` (any delimiter); ValueError names the problem."""
    delimiter = text[1]
    fields = _split_unescaped(text[2:], delimiter)
    if len(fields) != 3:
        raise ValueError(
            f"a substitution is s{delimiter}pattern{delimiter}replacement{delimiter}flags"
        )
    pattern, replacement, flags = fields
    unknown = sorted(set(flags) - {"g", *_PERL_FLAGS})
    if unknown:
        raise ValueError(f"unknown substitution flag {''.join(unknown)!r}; flags are g i m s x")
    bits = 0
    for flag in flags:
        bits |= _PERL_FLAGS.get(flag, 0)
    try:
        compiled = re.compile(pattern, bits)
    except re.error as exc:
        raise ValueError(f"invalid pattern: {exc.msg} at position {exc.pos}") from None
    parts = _replacement(replacement, compiled.groups)
    return Rewrite(compiled, parts, 0 if "g" in flags else 1)


def _split_unescaped(text: str, delimiter: str) -> list[str]:
    """Split on *delimiter* not preceded by a backslash; ``\\<delimiter>`` becomes the delimiter."""
    fields: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            current.append(following if following == delimiter else char + following)
            index += 2
            continue
        if char == delimiter:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    fields.append("".join(current))
    return fields


_GROUP_REFERENCE = re.compile(r"\$\{(\d+)\}|\$(\d+)|\$&|\\(\d)|\\(.)|(\$)")


def _replacement(text: str, groups: int) -> tuple[str | int, ...]:
    """Perl replacement text: ``$1``, ``${1}``, ``\\1``, ``$&``; ``\\$`` is a dollar sign."""
    parts: list[str | int] = []
    position = 0
    for match in _GROUP_REFERENCE.finditer(text):
        parts.append(text[position : match.start()])
        position = match.end()
        number_text = match.group(1) or match.group(2) or match.group(3)
        if match.group(0) == "$&":
            parts.append(0)
        elif number_text is not None:
            number = int(number_text)
            if number > groups:
                raise ValueError(
                    f"the replacement refers to group {number}; the pattern has {groups}"
                )
            parts.append(number)
        elif match.group(4) is not None:
            parts.append(match.group(4))  # an escaped character stands for itself
        else:
            parts.append("$")  # a lone dollar sign
    parts.append(text[position:])
    return tuple(part for part in parts if part != "")
