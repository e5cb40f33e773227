"""Run a project's assignment on a dataset, at every sequence depth.

Each dataset level first computes its new values from the values as they
arrived (so ``@value@``, ``@value(gggg,eeee)@``, counters and fake values
always read originals, whatever order the commands come in), then walks the
sequences it keeps, then makes its changes. Commands that remove or blank
apply at every depth; commands that write a value (``set``) apply at the top
level, and inside items only where a path key names the attribute
(:meth:`Assignment.at`). Specific Character Set stays while a value still
needs it, whatever the script says.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydicom.charset import encode_string
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from coercion.dicom.elements import (
    dictionary_vr,
    joined_text,
    key,
    put_value,
    simple_codec,
    text_values,
    vr_of,
)
from coercion.dicom.tags import format_tag
from coercion.errors import RuleFailedError
from coercion.profile import Action, Change, ItemPath
from coercion.script.language import Assignment, Command, Counter, Kind, Macro, Template

__all__ = ["Resources", "ScriptRunner"]

log = logging.getLogger(__name__)

_PATIENT_ID = 0x00100020
_ISSUER_OF_PATIENT_ID = 0x00100021
_ACCESSION_NUMBER = 0x00080050
_STUDY_INSTANCE_UID = 0x0020000D
_SPECIFIC_CHARACTER_SET = 0x00080005
_CHARSET_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
#: Commands of the default preset that, on a sequence, apply to its items (as PS3.15 does).
_ON_ITEMS = frozenset({Kind.DUMMY, Kind.UID})
_GREEK = (
    "Alpha",
    "Beta",
    "Gamma",
    "Delta",
    "Epsilon",
    "Zeta",
    "Eta",
    "Theta",
    "Iota",
    "Kappa",
    "Lambda",
    "Mu",
    "Nu",
    "Xi",
    "Omicron",
    "Pi",
    "Rho",
    "Sigma",
    "Tau",
    "Upsilon",
    "Phi",
    "Chi",
    "Psi",
    "Omega",
)


@dataclass
class Resources:
    """What a running script draws on beyond the dataset.

    ``number(counter, original)`` gives the project's persistent number of an
    original value (the store); ``uid(original)`` the project's keyed new UID;
    ``dummy(tag, vr, ds)`` the de-identifier's dummy value; ``keyed_hash(text)``
    the project's keyed hash (16 upper-case hex digits); ``now()`` the clock.
    """

    number: Callable[[str, str], int]
    uid: Callable[[str], str]
    dummy: Callable[[int, str, Dataset], list[str] | bytes]
    keyed_hash: Callable[[str], str]
    now: Callable[[], datetime] = datetime.now


def fake_name(number: int) -> str:
    """The *number*-th fake patient name (``Family^Given``), unique per number."""
    index = number - 1
    family, given = _GREEK[index % 24], _GREEK[(index // 24) % 24]
    rounds = index // (24 * 24)
    return f"{family}^{given}" + (f" {rounds + 1}" if rounds else "")


def truncate_date(value: str, vr: str) -> str:
    """Month and day to January 1st (each side of a DA range); ValueError when not a date."""
    sides = value.split("-") if vr == "DA" and "-" in value else [value]
    out: list[str] = []
    for side in sides:
        if not side:
            out.append(side)
            continue
        whole_date = len(side) == 8 and side.isdigit()
        if not side[:4].isdigit() or len(side) < 4 or (vr == "DA" and not whole_date):
            raise ValueError("not a date")
        out.append(side[:4] + "0101" + side[8:])
    return "-".join(out)


class ScriptRunner:
    """Apply one :class:`Assignment`; one instance serves any number of objects."""

    def __init__(self, assignment: Assignment, resources: Resources) -> None:
        self.assignment = assignment
        self.resources = resources
        self.options = assignment.options
        self.commands = assignment.commands
        self._where = f"script:{assignment.script} project {assignment.project}"

    def run(self, ds: Dataset) -> list[Change]:
        """Apply the assignment to *ds* in place; return what changed."""
        changes: list[Change] = []
        self._level(ds, (), (), changes)
        return changes

    # -- one dataset level ---------------------------------------------------------------------

    def _level(
        self, ds: Dataset, parents: tuple[Dataset, ...], path: ItemPath, changes: list[Change]
    ) -> None:
        chain = (ds, *parents)
        sequences = tuple(tag for tag, _ in path)
        commands = self.assignment.at(sequences)
        charset = ds._dict.get(key(_SPECIFIC_CHARACTER_SET))
        planned: list[tuple[BaseTag, Command, list[str] | None]] = []
        removed: list[BaseTag] = []
        nested: list[BaseTag] = []
        creators: list[BaseTag] = []
        kept_blocks: set[tuple[int, int]] = set()
        for tag_key, elem in list(ds._dict.items()):
            tag = int(tag_key)
            command = commands.get(tag)
            group, element = tag >> 16, tag & 0xFFFF
            if command is None:
                if group & 1 and 0x10 <= element <= 0xFF:
                    creators.append(tag_key)
                elif self.assignment.removes_unnamed(tag):
                    removed.append(tag_key)
                else:
                    if group & 1:
                        kept_blocks.add((group, element >> 8))
                    if vr_of(elem) == "SQ":
                        nested.append(tag_key)
                continue
            kind = command.kind
            if kind is Kind.SAFE and self.options.remove_safe_tags:
                kind = Kind.REMOVE
            if kind is Kind.REMOVE:
                removed.append(tag_key)
                continue
            if group & 1:
                kept_blocks.add((group, element >> 8))
            is_sequence = vr_of(elem) == "SQ"
            if kind in (Kind.KEEP, Kind.SAFE) or (is_sequence and kind in _ON_ITEMS):
                # A sequence kept, or given D or U by the preset: the items are processed.
                changes.append(Change(path, tag, kind.action))
                if is_sequence:
                    nested.append(tag_key)
                continue
            template = command.template if kind is Kind.SET else None
            values = self._render(template, tag, chain) if template is not None else None
            planned.append((tag_key, command, values))
        planned += self._added(commands, chain)
        for index_key in nested:
            for index, item in enumerate(ds[index_key].value or ()):
                self._level(item, chain, (*path, (int(index_key), index)), changes)
        for tag_key in removed:
            del ds._dict[tag_key]
            changes.append(Change(path, int(tag_key), Action.X))
        for tag_key in creators:
            group, element = int(tag_key) >> 16, int(tag_key) & 0xFFFF
            if (group, element) not in kept_blocks:
                del ds._dict[tag_key]
        for tag_key, command, values in planned:
            self._change(chain, tag_key, command, values, path, changes)
        if charset is not None and not text_values(ds, _SPECIFIC_CHARACTER_SET):
            self._keep_charset(ds, charset, path, changes)  # removed or emptied

    def _keep_charset(
        self,
        ds: Dataset,
        charset: DataElement | RawDataElement,
        path: ItemPath,
        changes: list[Change],
    ) -> None:
        """Put Specific Character Set back when a value left in *ds* still needs it."""
        if not _needs_charset(ds):
            return
        ds._dict[charset.tag] = charset
        changes[:] = [c for c in changes if (c.path, c.tag) != (path, _SPECIFIC_CHARACTER_SET)]
        changes.append(Change(path, _SPECIFIC_CHARACTER_SET, Action.K))
        log.debug("%s: (0008,0005) kept: values left need the character set", self._where)

    def _added(
        self, commands: Mapping[int, Command], chain: tuple[Dataset, ...]
    ) -> list[tuple[BaseTag, Command, list[str] | None]]:
        """``set`` on attributes *chain[0]* lacks (inside items: path commands only)."""
        ds = chain[0]
        return [
            (key(tag), command, self._render(command.template, tag, chain))
            for tag, command in commands.items()
            if command.kind is Kind.SET
            and command.template is not None
            and key(tag) not in ds._dict
            and not tag >> 16 & 1
        ]

    # -- the changes ---------------------------------------------------------------------------

    def _change(
        self,
        chain: tuple[Dataset, ...],
        tag_key: BaseTag,
        command: Command,
        values: list[str] | None,
        path: ItemPath,
        changes: list[Change],
    ) -> None:
        ds = chain[0]
        tag = int(tag_key)
        elem = ds._dict.get(tag_key)
        vr = vr_of(elem) if elem is not None else dictionary_vr(tag)
        kind = command.kind
        if kind is Kind.CLEAR:
            put_value(ds, tag, vr, [] if vr != "SQ" else b"")
        elif kind is Kind.SET:
            assert values is not None
            self._write(chain, tag, vr, values)
        elif kind is Kind.TRUNCDATE:
            if not self._truncate(ds, tag_key, vr):
                changes.append(Change(path, tag, Action.X))
                return
        elif kind is Kind.REWRITE:
            assert command.rewrite is not None
            rewrite = command.rewrite
            self._write(chain, tag, vr, [rewrite.apply(v) for v in text_values(ds, tag)])
        elif kind is Kind.DUMMY:
            put_value(ds, tag, vr, self.resources.dummy(tag, vr, ds))
        elif kind is Kind.UID:
            if vr != "UI":
                put_value(ds, tag, vr, self.resources.dummy(tag, vr, ds))
            else:
                originals = text_values(ds, tag)
                put_value(ds, tag, vr, [self.resources.uid(v) for v in originals] or [_random()])
        changes.append(Change(path, tag, kind.action))

    def _truncate(self, ds: Dataset, tag_key: BaseTag, vr: str) -> bool:
        """truncdate; an element that holds no date is removed (False)."""
        tag = int(tag_key)
        if vr not in ("DA", "DT"):
            del ds._dict[tag_key]
            log.debug("%s: (%04X,%04X) is %s, not a date: removed", self._where, *_split(tag), vr)
            return False
        try:
            values = [truncate_date(v, vr) for v in text_values(ds, tag)]
        except ValueError:
            del ds._dict[tag_key]
            log.debug("%s: (%04X,%04X) holds no date: removed", self._where, *_split(tag))
            return False
        put_value(ds, tag, vr, values)
        return True

    def _write(self, chain: tuple[Dataset, ...], tag: int, vr: str, values: list[str]) -> None:
        """Write text *values* as the VR needs: numbers checked, text in the character set."""
        ds = chain[0]
        where = f"{self._where}: {format_tag(tag)}"
        if vr in _NUMBER_VRS or vr in _FLOAT_VRS:
            try:
                numbers = [float(v) if vr in _FLOAT_VRS else int(v) for v in values]
            except ValueError:
                raise RuleFailedError(
                    f"{where}: the value set is not a number, as VR {vr} needs",
                    kind=f"value for VR {vr} not a number",
                ) from None
            number_value: object = (
                numbers if len(numbers) > 1 else (numbers[0] if numbers else None)
            )
            ds[key(tag)] = DataElement(key(tag), vr, number_value)
            return
        if vr == "SQ" or (vr not in ("UN",) and vr.startswith("O")):
            raise RuleFailedError(
                f"{where}: a value cannot be written to VR {vr}", kind=f"cannot write VR {vr}"
            )
        text = "\\".join(values)
        if not text.isascii() and vr in _CHARSET_TEXT_VRS:
            _check_encodable(chain, text, where)
        put_value(ds, tag, vr, values)

    # -- values --------------------------------------------------------------------------------

    def _render(self, template: Template, tag: int, chain: tuple[Dataset, ...]) -> list[str]:
        """The values of a ``set`` template for *tag*, from the originals in *chain*."""
        text = []
        for part in template.parts:
            if isinstance(part, str):
                text.append(part)
            elif isinstance(part, Counter):
                original = joined_text(chain[0], tag)
                name = format_tag(tag)
                text.append(part.format(self.resources.number(name, original)))
            else:
                text.append(self._macro(part, tag, chain))
        joined = "".join(text)
        return joined.split("\\") if joined else []

    def _macro(self, macro: Macro, tag: int, chain: tuple[Dataset, ...]) -> str:
        name = macro.name
        assignment = self.assignment
        if name == "value":
            wanted = tag if macro.tag is None else macro.tag
            for ds in chain:
                if key(wanted) in ds._dict:
                    return joined_text(ds, wanted)
            return ""
        if name == "project_name":
            return assignment.name
        if name == "project_owner":
            return assignment.owner
        if name == "project_prefix":
            return assignment.prefix
        if name == "process_date":
            return self.resources.now().strftime("%m%d%Y")
        if name == "process_time":
            now = self.resources.now()
            return now.strftime("%H%M%S") + f"{now.microsecond // 1000:03d}"
        if name == "random_uid":
            original = joined_text(chain[0], tag)
            return self.resources.uid(original) if original else _random()
        top = chain[-1]
        if name in ("fake_name", "fake_mrn"):
            patient = "\x00".join(
                (joined_text(top, _PATIENT_ID), joined_text(top, _ISSUER_OF_PATIENT_ID))
            )
            number = self.resources.number("@patient", patient)
            return fake_name(number) if name == "fake_name" else f"{number:08d}"
        if name == "hash_acc":
            return self.resources.keyed_hash(joined_text(top, _ACCESSION_NUMBER).lower())
        study = joined_text(top, _ACCESSION_NUMBER) or joined_text(top, _STUDY_INSTANCE_UID)
        return f"ACC{self.resources.number('@study', study):07d}"  # fake_acc


def _check_encodable(chain: tuple[Dataset, ...], text: str, where: str) -> None:
    """RuleFailedError unless non-ASCII *text* can be written in the declared character set."""
    ds = chain[0]
    if not any(key(_SPECIFIC_CHARACTER_SET) in level._dict for level in chain):
        raise RuleFailedError(
            f"{where}: the value is not ASCII and the object declares no Specific Character "
            "Set (0008,0005); set (0008,0005) too, e.g. to ISO_IR 192",
            kind="non-ASCII value without character set",
        )
    codec = simple_codec(ds)
    try:
        if codec is not None:
            text.encode(codec)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                encode_string(text, ds._character_set)
    except (UnicodeEncodeError, UserWarning, LookupError):
        raise RuleFailedError(
            f"{where}: the value cannot be written in the object's Specific Character Set "
            "(0008,0005); set (0008,0005) to a set that holds it, e.g. ISO_IR 192",
            kind="value not in the character set",
        ) from None


def _needs_charset(ds: Dataset) -> bool:
    """Whether a text value of *ds* or its items (without their own set) is not ASCII."""
    for elem in ds._dict.values():
        vr = vr_of(elem)
        if vr == "SQ":
            items = ds[elem.tag].value or ()
            own = key(_SPECIFIC_CHARACTER_SET)
            if any(own not in item._dict and _needs_charset(item) for item in items):
                return True
        elif vr in _CHARSET_TEXT_VRS:
            value = elem.value
            if isinstance(value, bytes) and any(byte > 0x7F or byte == 0x1B for byte in value):
                return True
            if isinstance(value, str) and not value.isascii():
                return True
            if isinstance(value, list) and not all(str(v).isascii() for v in value):
                return True
    return False


def _split(tag: int) -> tuple[int, int]:
    return tag >> 16, tag & 0xFFFF


def _random() -> str:
    return str(generate_uid(prefix=None))
