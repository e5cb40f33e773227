"""Convert dcm4chee-arc attribute coercion entries into our rules, never widening one.

Both ``dcmArchiveAttributeCoercion2`` and the older ``dcmArchiveAttributeCoercion``
entries are read. A rule keeps its place: under ``dicomAETitle=X`` it goes under
our network AE X, under the device under our device. dcm4chee-arc names the
*peer's* role in ``dicomTransferRole`` (SCU for data it receives); ours names
this node's own role, so the role is flipped.

An entry is imported as an active rule only when every attribute, condition
and value is carried over with its meaning. Otherwise it is written with
``dicomInstalled: FALSE`` and a ``description`` saying what is missing, and
each missing item is reported: a rule is never widened by dropping a
condition. What the conversion does with each dcm4chee-arc attribute is in the
tables below; the URI schemes come from the engine's registry
(:func:`coercion.engine.schemes`), so a scheme registered there is picked up.

Two things a rule names outside itself are carried over with it:

* a stylesheet named by one of dcm4chee-arc's system properties
  (``xslt:${jboss.server.temp.url}/dcm4chee-arc/NAME.xsl``) is looked up in the
  folder :attr:`Placement.stylesheets` (where the administrator copied
  dcm4chee-arc's stylesheets); the rule names the file found there;
* a device a ``sup-from-dev:`` rule references that the directory lacks but the
  export holds becomes a remote device of the directory: its descriptive
  attributes (PS3.15 H.4.1), network AEs and connections (:attr:`Conversion.devices`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from coercion.directory.convert.carried import (
    carry_device,
    devices_of,
    resolve_stylesheet,
)
from coercion.directory.ldifio import Change, Entry, escape_rdn_value, parent_dn
from coercion.engine import ActionEnv, Dimse, build_action, parse_condition, schemes
from coercion.errors import ConfigError

__all__ = ["Conversion", "Placement", "convert_dcm4chee", "referenced_devices", "settle"]

_FLIP = {"SCU": "SCP", "SCP": "SCU"}
_V2, _V1 = "dcmarchiveattributecoercion2", "dcmarchiveattributecoercion"
#: What a rule's scheme reads besides its URI in dcm4chee-arc; it ignores the other attributes.
_SCHEME_READS: dict[str, frozenset[str]] = {
    "deidentify": frozenset(),
    "merge-attrs": frozenset({"dcmMergeAttribute"}),
    "sup-from-dev": frozenset({"dcmSupplementFromDeviceReference"}),
    "leading-arc": frozenset({"dcmAttributeUpdatePolicy"}),
    "xslt": frozenset({"dcmCoercionParam"}),
    "merge-mwl": frozenset({"dcmCoercionParam"}),
    "use-calling-aet-as": frozenset(),
    "trim-ISO2022": frozenset(),
    "change-charset": frozenset(),
    "nullify-pixel-data": frozenset(),
    "retrieve-as-received": frozenset(),
}
#: Attributes carried into our rule's ``coercionParam``, for the scheme that reads them: as a
#: parameter of the name given, or (None) each value being a parameter itself: ``KEY=VALUE``, or
#: ``KEY!`` (a merge attribute that removes; written ``KEY!=``).
_AS_PARAMS: dict[str, str | None] = {
    "dcmCoercionParam": None,
    "dcmMergeAttribute": None,
    "dcmSupplementFromDeviceReference": "device",
    "dcmAttributeUpdatePolicy": "update-policy",
}
#: Attributes every entry may have that are converted field by field below.
_FIELDS = frozenset(
    {"objectClass", "cn", "dicomDescription", "description", "dcmURI", "dcmDIMSE"}
    | {"dicomTransferRole", "dcmRulePriority", "dcmSOPClass", "dcmProperty"}
    | {"dcmCoercionSufficient", "dcmCoercionOnFailure"}
)
#: The attributes of dcm4chee-arc's schema that only its coercion entries have: a change record
#: touching one changes a coercion.
_COERCION_ONLY = frozenset(
    name.lower()
    for name in (
        "dcmDIMSE",
        "dcmHostname",
        "dcmSOPClass",
        "dcmRetrieveAsReceived",
        "dcmDeIdentification",
        "dcmMergeMWLMatchingKey",
        "dcmMergeMWLTemplateURI",
        "dcmMergeLocalMWLSCP",
        "dcmMergeLocalMWLWorklistLabel",
        "dcmMergeLocalMWLWithStatus",
        "dcmLeadingCFindSCP",
        "dcmTrimISO2022CharacterSet",
        "dcmUseCallingAETitleAs",
        "dcmMergeAttribute",
        "dcmNullifyTag",
        "dcmIssuerOfPatientIDFormat",
        "dcmSupplementFromDeviceReference",
        "dcmCoercionParam",
        "dcmCoercionSufficient",
        "dcmCoercionOnFailure",
    )
)
#: The legacy entry's operations: attribute -> the scheme and the URI's specific part.
_LEGACY_OPERATIONS: dict[str, tuple[str, Callable[[list[str]], str]]] = {
    "dcmDeIdentification": ("deidentify", ",".join),
    "dcmRetrieveAsReceived": ("retrieve-as-received", lambda _v: ""),
    "dcmURI": ("xslt", lambda v: v[0]),
    "dcmLeadingCFindSCP": ("leading-arc", lambda v: v[0]),
    "dcmMergeMWLTemplateURI": ("merge-mwl", lambda v: v[0]),
    "dcmTrimISO2022CharacterSet": ("trim-ISO2022", lambda _v: ""),
    "dcmUseCallingAETitleAs": ("use-calling-aet-as", lambda v: v[0]),
    "dcmNullifyTag": ("nullify-tag", ",".join),
    "dcmMergeAttribute": ("merge-attrs", lambda _v: ""),
    "dcmSupplementFromDeviceReference": ("sup-from-dev", lambda _v: ""),
}
#: Legacy attributes that became ``dcmCoercionParam`` values of the newer entry.
_LEGACY_PARAMS = {
    "dcmNoKeywords": "xsl-no-keyword",
    "dcmMergeMWLMatchingKey": "match-by",
    "dcmMergeMWLSCP": "mwl-scp",
    "dcmMergeLocalMWLWorklistLabel": "local-mwl-worklist-label",
    "dcmMergeLocalMWLWithStatus": "local-mwl-status",
}
_BOOLEAN_OPERATIONS = frozenset({"dcmRetrieveAsReceived", "dcmTrimISO2022CharacterSet"})
#: dcm4che names the Basic Profile as an option; here it is what ``deidentify:`` always does.
_BASIC_PROFILE = "BasicApplicationConfidentialityProfile"


@dataclass(frozen=True)
class Placement:
    """Where converted rules go: our device, and our network AEs by AE title."""

    device_dn: str
    ae_dns: Mapping[str, str] = field(default_factory=dict)
    devices: frozenset[str] = frozenset()  # the devices of the directory, by name
    stylesheets: Path | None = None  # the folder with dcm4chee-arc's stylesheets


@dataclass
class Conversion:
    """The converted rules, the devices carried over for them, the report (one line per item),
    and how many rules were not carried over."""

    entries: list[Entry] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    not_carried_over: int = 0
    devices: list[Entry] = field(default_factory=list)  # each device, then its connections, AEs

    @property
    def complete(self) -> bool:
        """Whether every rule was carried over exactly (and is written active)."""
        return self.not_carried_over == 0


@dataclass
class _Rule:
    """One entry being converted: our attributes and what could not be carried over."""

    dn: str
    attrs: dict[str, list[str]]
    source: str  # the dcm4chee-arc DN, as reports name the entry
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    carry: str = ""  # the name of a device of the export to carry over for the rule


def referenced_devices(entries: list[Entry]) -> frozenset[str]:
    """The names of the devices the coercion entries of *entries* supplement from."""
    return frozenset(
        _rdns(value)[0][1]
        for _dn, attrs in entries
        for value in _values(attrs, "dcmSupplementFromDeviceReference")
    )


def convert_dcm4chee(
    entries: list[Entry], placement: Placement, changes: list[Change] | None = None
) -> Conversion:
    """Convert the coercion entries of *entries* into our rules under *placement*.

    *changes* are the change records of an update file other than additions: one
    that touches a coercion attribute cannot be carried over and is reported.
    """
    result = Conversion()
    env = ActionEnv(b"\0" * 32, store_override="sqlite:///:memory:")  # URIs are only checked
    written: set[str] = set()
    coercions: set[str] = set()
    exported = devices_of(entries)
    try:
        for dn, attrs in entries:
            classes = {c.lower() for c in _values(attrs, "objectClass")}
            if _V2 not in classes and _V1 not in classes:
                continue
            coercions.add(_key(dn))
            rule = _convert(dn, attrs, _V2 in classes, placement, env)
            if rule is None:
                result.report.append(f"{dn}: names no operation, so does nothing; not converted")
                continue
            if rule.carry:
                _carry(rule, exported, placement, result)
            _finish(rule, written, result)
    finally:
        env.close()
    for dn, kind, touched in changes or []:
        if _key(dn) in coercions or {t.lower() for t in touched} & _COERCION_ONLY:
            result.report.append(f"{dn}: a {kind} record of a coercion entry; not applied")
            result.not_carried_over += 1
    return result


def _carry(
    rule: _Rule, exported: Mapping[str, list[Entry]], placement: Placement, result: Conversion
) -> None:
    """Carry the export's device the rule supplements from into the directory (once)."""
    entries = exported.get(rule.carry)
    if not entries:
        rule.missing.append(f"the device {rule.carry} (neither here nor in the export)")
        return
    devices_dn = parent_dn(placement.device_dn)
    if any(_rdns(dn)[0][1] == rule.carry for dn, _attrs in result.devices):
        return
    carried, left = carry_device(entries, devices_dn)
    result.devices += carried
    result.report.append(
        f"{entries[0][0]}: device carried over as {carried[0][0]} "
        f"({len(carried) - 1} network AEs and connections), for sup-from-dev:"
    )
    result.report += left


def _finish(rule: _Rule, written: set[str], result: Conversion) -> None:
    for note in rule.notes:
        result.report.append(f"{rule.source}: {note}")
    key = _key(rule.dn)
    if key in written:
        result.report.append(f"{rule.source}: a second rule as {rule.dn}; not written")
        result.not_carried_over += 1
        return
    for item in rule.missing:
        result.report.append(f"{rule.source}: {item}")
    if "coercionDIMSE" not in rule.attrs or "dicomTransferRole" not in rule.attrs:
        result.report.append(f"{rule.source}: no DIMSE or role to write it with; not written")
        result.not_carried_over += 1
        return
    if rule.missing:
        result.not_carried_over += 1
        _deactivate(rule.attrs, rule.missing)
    written.add(key)
    result.entries.append((rule.dn, rule.attrs))


def _deactivate(attrs: dict[str, list[str]], missing: list[str]) -> None:
    """Make the rule *attrs* inactive, its description saying what is *missing*."""
    attrs["dicomInstalled"] = ["FALSE"]
    given = attrs.get("description", [""])[0]
    why = "Not active: imported from dcm4chee-arc without " + "; ".join(missing)
    attrs["description"] = [f"{why}. {given}".strip()]


def settle(conversion: Conversion, load: Callable[[list[Entry]], None]) -> None:
    """Make inactive each active rule that the directory would refuse to load.

    *load* loads the converted entries with the directory they are for, raising
    :class:`ConfigError` with one problem a line, each naming its entry's DN (as
    the loader does). A problem that names no converted rule is the directory's
    own: it is raised.
    """
    for _round in range(len(conversion.entries) + 1):
        try:
            load([*conversion.devices, *conversion.entries])
        except ConfigError as exc:
            lines = str(exc).splitlines()
        else:
            return
        refused = False
        for dn, attrs in conversion.entries:
            found = [line.split(dn, 1)[1].lstrip(": ") for line in lines if dn in line]
            if found and "dicomInstalled" not in attrs:
                reason = "; ".join(found)
                _deactivate(attrs, [f"a load with the directory ({reason})"])
                conversion.report.append(f"{dn}: refused when loaded with the directory: {reason}")
                conversion.not_carried_over += 1
                refused = True
        if not refused:
            raise ConfigError("\n".join(lines))


def _convert(
    dn: str, attrs: dict[str, list[str]], v2: bool, placement: Placement, env: ActionEnv
) -> _Rule | None:
    """The entry converted; None for a legacy entry that does nothing."""
    cn = (_values(attrs, "cn") or [_rdns(dn)[0][1]])[0]
    parent, ae_missing = _place(dn, placement)
    if ae_missing:  # kept apart from the device's own rules of the same name
        cn = f"{cn} ({ae_missing})"
    attrs_out = {"objectClass": ["coercionRule"], "cn": [cn]}
    rule = _Rule(f"cn={escape_rdn_value(cn)},{parent}", attrs_out, dn)
    if ae_missing:
        rule.missing.append(f"its network AE {ae_missing} (none here by that title)")
    description = _values(attrs, "dicomDescription") or _values(attrs, "description")
    if description:
        rule.attrs["description"] = description[:1]
    found = _uri(attrs) if v2 else _legacy_uri(attrs, rule)
    if found is None:
        return None
    uri, used = found
    uri = _stylesheet(uri, placement.stylesheets, rule)
    _dimse_and_role(attrs, rule)
    _simple_fields(attrs, rule)
    _conditions(attrs, rule)
    scheme = uri.partition(":")[0]
    _scheme_attributes(attrs, scheme, used, rule, placement.devices)
    rule.attrs["coercionURI"] = [uri]
    if rule.params:
        rule.attrs["coercionParam"] = [f"{k}={v}" for k, v in rule.params.items()]
    _check_action(uri, scheme, rule, env)
    return rule


def _place(dn: str, placement: Placement) -> tuple[str, str]:
    """Our parent DN for the entry *dn*, and the AE title it belongs to when we have no such AE.

    An entry that is under neither a device nor a network AE is placed under our device.
    """
    rdns = _rdns(dn)
    name, value = rdns[1] if len(rdns) > 1 else ("", "")
    if name.lower() == "dicomaetitle" and value not in placement.ae_dns:
        return placement.device_dn, value
    if name.lower() == "dicomaetitle":
        return placement.ae_dns[value], ""
    return placement.device_dn, ""


def _uri(attrs: dict[str, list[str]]) -> tuple[str, set[str]]:
    uri = (_values(attrs, "dcmURI") or [""])[0]
    if uri.startswith("deidentify:"):
        uri = _deidentify_uri(uri.partition(":")[2])
    return uri, {"dcmURI"}


def _stylesheet(uri: str, folder: Path | None, rule: _Rule) -> str:
    """*uri* with a stylesheet named by a dcm4chee-arc system property found in *folder*."""
    scheme, _colon, spec = uri.partition(":")
    if scheme not in ("xslt", "merge-mwl") or "${" not in spec:
        return uri
    try:
        return f"{scheme}:{resolve_stylesheet(spec, folder)}"
    except ValueError as exc:
        rule.missing.append(str(exc))
        return uri


def _deidentify_uri(spec: str) -> str:
    names = [n.strip() for n in spec.split(",") if n.strip() and n.strip() != _BASIC_PROFILE]
    return "deidentify:" + ",".join(names)


def _legacy_uri(attrs: dict[str, list[str]], rule: _Rule) -> tuple[str, set[str]] | None:
    """The URI of a legacy entry's one operation (the first one when it has several)."""
    found = []
    for name, (scheme, spec) in _LEGACY_OPERATIONS.items():
        values = _values(attrs, name)
        if not values or (name in _BOOLEAN_OPERATIONS and values[0].upper() != "TRUE"):
            continue
        found.append((name, f"{scheme}:{spec(values)}"))
    for name, param in _LEGACY_PARAMS.items():
        values = _values(attrs, name)
        if name == "dcmNoKeywords":
            values = ["true"] if values and values[0].upper() == "TRUE" else []
        if values:
            rule.params[param] = ",".join(values)
    used = {*_LEGACY_OPERATIONS, *_LEGACY_PARAMS}
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        rule.missing.append(f"all but one of its operations ({names}); a rule here does one")
    name, uri = found[0]
    if name in _AS_PARAMS:
        used.discard(name)  # the operation's own attribute: carried as parameters
    if uri.startswith("deidentify:"):
        uri = _deidentify_uri(uri.partition(":")[2])
    return uri, used


def _dimse_and_role(attrs: dict[str, list[str]], rule: _Rule) -> None:
    dimse = []
    for value in _values(attrs, "dcmDIMSE"):
        if value in Dimse.__members__:
            dimse.append(value)
        else:
            rule.missing.append(f"dcmDIMSE {value} (no such event here)")
    if dimse:
        rule.attrs["coercionDIMSE"] = dimse
    role = (_values(attrs, "dicomTransferRole") or [""])[0]
    if role in _FLIP:
        rule.attrs["dicomTransferRole"] = [_FLIP[role]]
    else:
        rule.missing.append(f"dicomTransferRole {role or '(none)'} (not SCU or SCP)")


def _simple_fields(attrs: dict[str, list[str]], rule: _Rule) -> None:
    fields = {
        "coercionSOPClass": _values(attrs, "dcmSOPClass"),
        "coercionPriority": _values(attrs, "dcmRulePriority")[:1],
        "coercionSufficient": [v.upper() for v in _values(attrs, "dcmCoercionSufficient")[:1]],
        "coercionOnFailure": _values(attrs, "dcmCoercionOnFailure")[:1],
    }
    rule.attrs.update({k: v for k, v in fields.items() if v})


def _conditions(attrs: dict[str, list[str]], rule: _Rule) -> None:
    kept = []
    for prop in _values(attrs, "dcmProperty"):
        try:
            parse_condition(prop)
        except ValueError as exc:
            rule.missing.append(f"dcmProperty '{prop}' ({exc})")
            if "=" in prop and not prop.startswith(("=", "!")):
                kept.append(prop)  # kept on the inactive entry, to be corrected there
            continue
        kept.append(prop)
    if kept:
        rule.attrs["coercionCondition"] = kept


def _scheme_attributes(
    attrs: dict[str, list[str]], scheme: str, used: set[str], rule: _Rule, devices: frozenset[str]
) -> None:
    """Carry the attributes the scheme reads into parameters; report the others."""
    reads = _SCHEME_READS.get(scheme, frozenset(_AS_PARAMS))
    known = {k.lower(): k for k in (*_FIELDS, *_AS_PARAMS, *used)}
    for written_name, values in attrs.items():
        name = known.get(written_name.lower(), written_name)
        if name in used or name in _FIELDS or not values:
            continue
        if name not in reads:
            if name in _AS_PARAMS:
                rule.notes.append(f"{name}: dcm4chee-arc ignores it for {scheme}:, so do we")
            else:
                rule.missing.append(f"{name} (no equivalent here)")
            continue
        param = _AS_PARAMS[name]
        if param is not None:
            value = values[0]
            if name == "dcmSupplementFromDeviceReference":
                value = _rdns(value)[0][1]  # the device's name
                if value not in devices:
                    rule.carry = value
            rule.params[param] = value
            continue
        for item in values:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not (sep or key.endswith("!")) or key in rule.params:
                rule.missing.append(f"{name} '{item}' (not one KEY=VALUE or KEY!)")
                continue
            rule.params[key] = value


def _check_action(uri: str, scheme: str, rule: _Rule, env: ActionEnv) -> None:
    if "${" in uri:
        return  # a stylesheet not found: reported as such
    if scheme not in schemes():
        rule.missing.append(f"the URI scheme {scheme}: (not implemented here)")
        return
    try:
        build_action(uri, rule.params, env, rule.attrs["cn"][0])
    except Exception as exc:  # a factory's refusal names what is wrong, whatever its class
        rule.missing.append(f"coercionURI '{uri}' as given ({exc})")


def _values(attrs: Mapping[str, list[str]], name: str) -> list[str]:
    for key, values in attrs.items():
        if key.lower() == name.lower():
            return [str(v) for v in values]
    return []


_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")


def _key(dn: str) -> str:
    """*dn* as two DNs are compared: types and values in lower case, escapes resolved."""
    return ",".join(f"{name.lower()}={value.lower()}" for name, value in _rdns(dn))


def _rdns(dn: str) -> list[tuple[str, str]]:
    """The (type, unescaped value) of each RDN of *dn*; [("", dn)] when it is not a DN."""
    try:
        parts = parse_dn(dn, escape=True)
    except LDAPInvalidDnError:
        return [("", dn)]
    return [(name, _ESCAPE.sub(_unescaped, value)) for name, value, _sep in parts]


def _unescaped(found: re.Match[str]) -> str:
    text = found[1]
    return bytes.fromhex(text).decode("utf-8", "replace") if len(text) == 2 else text
