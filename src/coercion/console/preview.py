"""Preview: which rules apply to an uploaded object and, per attribute, the action and values.

The object is read from memory and never written anywhere: the rules run in
an environment of their own (the node's key, so UIDs and dates come out as
the node's would, but a throwaway in-memory pseudonym store, so nothing is
numbered or remembered for real). Values go back to the one person who
uploaded; nothing here logs them.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from coercion.dicom.part10 import read_bytes
from coercion.directory.config import Configuration, build_configuration
from coercion.engine import ActionEnv, Dimse, Engine, EventContext, Role

__all__ = ["MAX_UPLOAD", "context", "preview"]

#: The largest object previewed (bytes): it is held in memory.
MAX_UPLOAD = 64 * 1024 * 1024
#: Values longer than this are cut (a preview is for reading).
_SHOWN = 200
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _value(ds: Dataset | None, path: tuple[tuple[int, int], ...], tag: int) -> str | None:
    """The value at *path*/*tag* of *ds* as text, or None when the element is absent."""
    for seq_tag, index in path:
        if ds is None or seq_tag not in ds:
            return None
        items = ds[seq_tag].value
        ds = items[index] if index < len(items) else None
    if ds is None or tag not in ds:
        return None
    elem = ds[tag]
    if elem.VR in _BINARY_VRS:
        return f"({len(elem.value or b'')} bytes)"
    if elem.VR == "SQ":
        return f"({len(elem.value)} items)"
    text = str(elem.value) if elem.value is not None else ""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def preview(
    data: bytes,
    configuration: Configuration,
    secret: bytes,
    ctx: EventContext,
) -> dict[str, Any]:
    """The rules that apply to *data* for *ctx*, each change with the value before and after.

    Raises CoercionError when *data* is not a DICOM object or the rules fail on it.
    """
    # The node's folders and TLS context (merge-mwl: reads and asks as the node would), its
    # key, and a throwaway pseudonym store (a preview numbers nothing for real).
    env = configuration.env.derive() if configuration.env is not None else ActionEnv(secret)
    env.secret = secret
    env.store_override = "sqlite:///:memory:"
    try:
        rules = build_configuration(
            configuration.raw, configuration.origin, env, configuration.device.name
        ).rules
        original = read_bytes(data, "the uploaded file")
        ds = read_bytes(data, "the uploaded file")
        sop_class = str(ds.get("SOPClassUID") or "")
        ctx = EventContext(ctx.dimse, ctx.role, ctx.calling_ae, ctx.called_ae, "", "", sop_class)
        outcome = Engine(rules).apply(ds, ctx)
    finally:
        env.close()
    applied = []
    for rule in outcome.applied:
        changes = []
        for change in rule.changes:
            where = "".join(f"{_tag(t)}[{i}]." for t, i in change.path)
            changes.append(
                {
                    "tag": where + _tag(change.tag),
                    "keyword": keyword_for_tag(change.tag) or "",
                    "action": change.action.value,
                    "before": _value(original, change.path, change.tag),
                    "after": _value(outcome.dataset, change.path, change.tag),
                }
            )
        applied.append(
            {
                "rule": rule.rule.name,
                "uri": rule.rule.uri,
                "failure": rule.failure,
                "changes": changes,
            }
        )
    return {"context": ctx.describe(), "rules": applied}


def context(calling: str, called: str, dimse: str, role: str) -> EventContext:
    """The event context a preview runs in; a ValueError names a DIMSE or role not known."""
    try:
        return EventContext(Dimse(dimse), Role(role), calling.strip(), called.strip())
    except ValueError:
        raise ValueError(
            f"DIMSE one of {', '.join(d.value for d in Dimse)}; role SCU or SCP"
        ) from None
