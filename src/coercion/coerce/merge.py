"""``merge-attrs:``: set, empty or remove attributes from templates (dcm4chee's dcmMergeAttribute).

Each rule parameter is one merge, applied in order:

- ``PATH=TEMPLATE``: the attribute at PATH gets the template filled from the
  object (:mod:`.template`); sequences and items on the way are made. A value
  equal to the current one changes nothing.
- ``PATH=`` (no template): the attribute, when it has a value, is emptied.
- ``PATH!`` (no value): the attribute is removed.

PATH is an attribute path (:mod:`.paths`): ``Seq[2].Attr`` is the second item.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from coercion.coerce.paths import TagPath, parse_path
from coercion.coerce.template import Template, parse_template
from coercion.dicom.elements import dictionary_vr, put_value
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.profile import Action, Change

__all__ = ["MergeAttribute", "MergeAttributesAction", "parse_merge"]

log = logging.getLogger(__name__)
_SPECIFIC_CHARACTER_SET = 0x00080005


@dataclass(frozen=True)
class MergeAttribute:
    """One merge: PATH with a template to set, or nothing (empty it) or removal."""

    path: TagPath
    template: Template | None
    remove: bool = False

    def apply(self, ds: Dataset) -> Change | None:
        """Merge into *ds*; the change made, or None."""
        where = tuple((tag, index or 0) for tag, index in self.path.items)
        tag = self.path.tag
        if self.template is not None:
            value = self.template.render(ds)
            item = self.path.ensure_item(ds)
            old = item.get(tag)
            if old is not None and _text(old.value) == value:
                return None
            vr = dictionary_vr(tag) if tag not in item else str(item[tag].VR)
            if tag == _SPECIFIC_CHARACTER_SET:
                item.SpecificCharacterSet = value.split("\\") if "\\" in value else value
            else:
                put_value(item, tag, vr if vr != "UN" else "LO", value.split("\\"))
            return Change(where, tag, Action.D)
        found = self.path.item(ds)
        if found is None or tag not in found:
            return None
        if self.remove:
            del found[tag]
            return Change(where, tag, Action.X)
        if found[tag].value in (None, "", b"") or found[tag].VM == 0:
            return None
        put_value(found, tag, str(found[tag].VR), b"")
        return Change(where, tag, Action.Z)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def parse_merge(key: str, value: str) -> MergeAttribute:
    """One ``PATH=TEMPLATE``, ``PATH=`` or ``PATH!`` parameter; ValueError saying what to fix."""
    remove = key.endswith("!")
    if remove and value:
        raise ValueError(f"{key}: PATH! removes the attribute and takes no value")
    path = parse_path(key[:-1] if remove else key)
    template = parse_template(value) if value else None
    return MergeAttribute(path, template, remove)


class MergeAttributesAction:
    """The action of ``merge-attrs:``."""

    def __init__(self, merges: tuple[MergeAttribute, ...]) -> None:
        self.merges = merges

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Apply every merge in order."""
        changes = [change for merge in self.merges if (change := merge.apply(ds)) is not None]
        log.debug("merge-attrs: %d of %d attributes changed", len(changes), len(self.merges))
        return changes


def _merge_attrs(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    if spec.strip():
        raise ValueError(
            "merge-attrs: the URI takes nothing after the colon; give each attribute as a "
            "parameter PATH=TEMPLATE (e.g. IssuerOfPatientID=SITE.{PatientID,hash}), PATH= or PATH!"
        )
    if not params:
        raise ValueError(
            "merge-attrs: no attribute to merge; give PATH=TEMPLATE, PATH= or PATH! parameters"
        )
    merges = []
    for key, value in params.items():
        try:
            merges.append(parse_merge(key, value))
        except ValueError as exc:
            raise ValueError(f"merge-attrs: parameter {exc}") from None
    return MergeAttributesAction(tuple(merges))


register_scheme("merge-attrs", _merge_attrs)
