"""Convert dcm4chee-arc attribute coercion rules (``dcmArchiveAttributeCoercion2``) into ours.

dcm4chee-arc names the *peer's* role in ``dicomTransferRole`` (SCU for data
it receives); ours names this node's own role, so the role is flipped.
Everything that cannot be carried over (URI schemes we do not have, DIMSE
values, properties) is reported, one line per item, and the entry is
skipped when its URI cannot be mapped.
"""

from __future__ import annotations

from coercion.directory.ldifio import Entry, escape_rdn_value
from coercion.engine import ActionEnv, Dimse, build_action, parse_condition

__all__ = ["convert_dcm4chee"]

_FLIP = {"SCU": "SCP", "SCP": "SCU"}


def _values(attrs: dict[str, list[str]], name: str) -> list[str]:
    for key, values in attrs.items():
        if key.lower() == name.lower():
            return [str(v) for v in values]
    return []


def convert_dcm4chee(entries: list[Entry], parent_dn: str) -> tuple[list[Entry], list[str]]:
    """Return our rule entries (under *parent_dn*) and the report of what was not mapped."""
    converted: list[Entry] = []
    report: list[str] = []
    env = ActionEnv(b"\0" * 32)  # URIs are only checked here
    for dn, attrs in entries:
        classes = {c.lower() for c in _values(attrs, "objectClass")}
        if "dcmarchiveattributecoercion2" not in classes:
            continue
        cn = (_values(attrs, "cn") or [dn])[0]
        uri = (_values(attrs, "dcmURI") or [""])[0]
        params = {}
        for item in _values(attrs, "dcmCoercionParam"):
            key, _, value = item.partition("=")
            params[key] = value
        try:
            build_action(uri, params, env)
        except ValueError as exc:
            report.append(f"{dn}: dcmURI {uri!r}: {exc}; entry skipped")
            continue
        dimse = []
        for value in _values(attrs, "dcmDIMSE"):
            if value in Dimse.__members__:
                dimse.append(value)
            else:
                report.append(f"{dn}: dcmDIMSE {value!r}: no such event here; dropped")
        if not dimse:
            report.append(f"{dn}: no DIMSE value left; entry skipped")
            continue
        role = (_values(attrs, "dicomTransferRole") or [""])[0]
        if role not in _FLIP:
            report.append(f"{dn}: dicomTransferRole {role!r}: not SCU or SCP; entry skipped")
            continue
        conditions = []
        for prop in _values(attrs, "dcmProperty"):
            try:
                parse_condition(prop)
            except ValueError as exc:
                report.append(f"{dn}: dcmProperty {prop!r}: {exc}; dropped")
                continue
            conditions.append(prop)
        ours: dict[str, list[str]] = {
            "objectClass": ["coercionRule"],
            "cn": [cn],
            "coercionURI": [uri],
            "coercionDIMSE": dimse,
            "dicomTransferRole": [_FLIP[role]],
        }
        description = _values(attrs, "dicomDescription") or _values(attrs, "description")
        if description:
            ours["description"] = description[:1]
        optional = {
            "coercionSOPClass": _values(attrs, "dcmSOPClass"),
            "coercionCondition": conditions,
            "coercionPriority": _values(attrs, "dcmRulePriority")[:1],
            "coercionSufficient": _values(attrs, "dcmCoercionSufficient")[:1],
            "coercionOnFailure": _values(attrs, "dcmCoercionOnFailure")[:1],
            "coercionParam": [f"{k}={v}" for k, v in params.items()],
        }
        ours.update({k: v for k, v in optional.items() if v})
        converted.append((f"cn={escape_rdn_value(cn)},{parent_dn}", ours))
    return converted, report
