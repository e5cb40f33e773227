"""``nullify-tag:`` (empty the listed attributes) and ``nullify-pixel-data:`` (empty the pixels).

``nullify-tag:PatientName,00100030,RequestAttributesSequence.AccessionNumber``
empties each listed attribute that has a value, as dcm4chee's
``dcmNullifyTag`` does; a path through a sequence without ``[n]`` reaches
every item. ``nullify-pixel-data:`` empties Pixel Data (and Float and Double
Float Pixel Data), keeping the rest of the object, as dcm4chee-arc does for
objects sent where the pixels must not go.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from coercion.coerce.paths import TagPath, parse_path
from coercion.dicom.elements import key, put_value, vr_of
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_fixed_scheme, register_scheme
from coercion.engine.rules import RuleAction
from coercion.profile import Action, Change

__all__ = ["NullifyAction", "NullifyPixelDataAction"]

#: Pixel Data, Float Pixel Data, Double Float Pixel Data.
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


class NullifyAction:
    """The action of ``nullify-tag:``: each listed attribute with a value is emptied."""

    def __init__(self, paths: tuple[TagPath, ...]) -> None:
        self.paths = paths

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Empty every listed attribute (in every item its path reaches)."""
        changes = []
        for path in self.paths:
            for where, item in path.items_of(ds):
                raw = item._dict.get(key(path.tag))  # not decoded: only its length matters
                if raw is None or not raw.value:
                    continue
                put_value(item, path.tag, vr_of(raw), b"")
                changes.append(Change(where, path.tag, Action.Z))
        return changes


class NullifyPixelDataAction:
    """The action of ``nullify-pixel-data:``."""

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Empty the pixel data elements that have a value."""
        changes = []
        for tag in _PIXEL_TAGS:
            raw = ds._dict.get(key(tag))
            if raw is None or not raw.value:
                continue
            put_value(ds, tag, vr_of(raw) if tag != 0x7FE00010 else "OW", b"")
            changes.append(Change((), tag, Action.Z))
        return changes


def _nullify_tag(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    if params:
        raise ValueError(
            f"nullify-tag: unknown parameter {', '.join(sorted(params))}; list the attributes "
            "in the URI, e.g. nullify-tag:PatientBirthDate,00101040"
        )
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError(
            "nullify-tag: no attribute; list keywords, tags or paths, e.g. "
            "nullify-tag:PatientBirthDate,00101040,RequestAttributesSequence.AccessionNumber"
        )
    paths = []
    for name in names:
        try:
            paths.append(parse_path(name, every_item=True))
        except ValueError as exc:
            raise ValueError(f"nullify-tag: {exc}") from None
    return NullifyAction(tuple(paths))


register_scheme("nullify-tag", _nullify_tag)
register_fixed_scheme("nullify-pixel-data", NullifyPixelDataAction)
