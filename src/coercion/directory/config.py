"""Load a node's configuration from a directory source: devices, AEs and compiled rules.

Every entry is converted to JSON and validated against ``schema/``; every
rule's URI, parameters and conditions are compiled. All problems of a load
are collected and reported together, each naming the entry's DN and the
attribute, so that one run of ``coercion config validate`` shows them all.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from coercion.defaults import sqlite_store_url
from coercion.dicom.outputs import atomic_output
from coercion.directory import DEFAULT_DEVICE
from coercion.directory.entries import (
    SCRIPT_BODY_SCHEMA,
    EntryJSON,
    Syntaxes,
    default_syntaxes,
    kind_of,
    to_json,
    validate,
    validate_value,
)
from coercion.directory.ldifio import DnKey, Entry, dn_key
from coercion.directory.settings import DeviceSettings, device_settings
from coercion.directory.sources import DirectorySource, EmbeddedDirectory
from coercion.engine import (
    ActionEnv,
    Condition,
    Dimse,
    ForwardRule,
    OnFailure,
    PeerDevice,
    Role,
    Rule,
    RuleSet,
    build_action,
    parse_condition,
    parse_conditions,
)
from coercion.engine.scopes import ScopeSettings
from coercion.errors import ConfigError

if TYPE_CHECKING:
    from coercion.script.language import Script

__all__ = [
    "DCM4CHE_DEVICE_INFO",
    "DEFAULT_DEVICE",
    "DEVICE_INFO",
    "Configuration",
    "Device",
    "NetworkAE",
    "load_configuration",
    "script_body",
    "write_snapshot",
]


@dataclass(frozen=True)
class NetworkAE:
    """A network AE of a device, with the host and port of its first connection."""

    title: str
    dn: str
    hostname: str = ""
    port: int | None = None
    initiator: bool = True
    acceptor: bool = True
    tls: bool = False  # its connection names TLS cipher suites (PS3.15 H.4.3)


#: dcm4che's additions to a device: issuers of identifiers and the institution code
#: (``00-dcm4che-device-schema.ldif``; the auxiliary class ``coercionDeviceIssuers``).
DCM4CHE_DEVICE_INFO = (
    "dicomIssuerOfAccessionNumber",
    "dicomIssuerOfAdmissionID",
    "dicomIssuerOfServiceEpisodeID",
    "dicomIssuerOfContainerIdentifier",
    "dicomIssuerOfSpecimenIdentifier",
    "dicomOrderPlacerIdentifier",
    "dicomOrderFillerIdentifier",
    "dicomInstitutionCode",
)
#: The descriptive attributes of a device (PS3.15 H.4.1, and dcm4che's) that actions may use.
DEVICE_INFO = (
    "dicomManufacturer",
    "dicomManufacturerModelName",
    "dicomSoftwareVersion",
    "dicomStationName",
    "dicomDeviceSerialNumber",
    "dicomInstitutionName",
    "dicomInstitutionAddress",
    "dicomInstitutionDepartmentName",
    "dicomIssuerOfPatientID",
    *DCM4CHE_DEVICE_INFO,
)


@dataclass(frozen=True)
class Device:
    """A device of the directory: the node itself or a known remote one.

    ``info`` holds its descriptive attributes (:data:`DEVICE_INFO`) that have values.
    """

    name: str
    dn: str
    description: str = ""
    aes: tuple[NetworkAE, ...] = ()
    settings: dict[str, object] = field(default_factory=dict)
    info: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def peer(self) -> PeerDevice:
        """This device as rules' actions see it."""
        addresses = {ae.title: (ae.hostname, ae.port) for ae in self.aes if ae.hostname and ae.port}
        tls = frozenset(ae.title for ae in self.aes if ae.tls)
        return PeerDevice(self.name, addresses, dict(self.info), tls)


@dataclass(frozen=True)
class Configuration:
    """What a node runs with: its device, the devices it knows, its rules."""

    origin: str
    device: Device
    devices: dict[str, Device]
    rules: RuleSet
    entries: list[EntryJSON]
    raw: list[Entry]
    forward_rules: tuple[ForwardRule, ...] = ()
    scripts: dict[str, Script] = field(default_factory=dict)  # the tag scripts, by name
    env: ActionEnv | None = None  # what the rules' actions use (one per load, never shared)
    #: The node device's settings, typed (read once per load).
    settings: DeviceSettings = field(default_factory=DeviceSettings)

    def known_ae_titles(self) -> set[str]:
        """The AE titles of every device but the node."""
        return {ae.title for d in self.devices.values() if d is not self.device for ae in d.aes}


def _key(dn: str) -> DnKey | None:
    """*dn* for comparing (:func:`~coercion.directory.ldifio.dn_key`); None when not a DN."""
    try:
        return dn_key(dn)
    except ValueError:
        return None


def _parent_key(dn: str) -> DnKey | None:
    """The comparison key of *dn*'s parent; None when *dn* is not a DN."""
    key = _key(dn)
    return key[:-1] if key else None


def _data_folder(env: ActionEnv, device: DeviceSettings) -> str:
    """The device's data folder: the node's ``--data``, else the device's setting."""
    return env.data_directory or device.data_directory


def _scopes(
    entries: list[EntryJSON],
    device: DeviceSettings,
    env: ActionEnv,
    problems: list[str],
    origin: str,
) -> None:
    """Put the pseudonymisation scopes and the store URLs into *env* (for ``pseudonymize:``)."""
    data = _data_folder(env, device)
    env.store_url = env.store_override or device.store_url or sqlite_store_url(data)
    scopes: dict[str, ScopeSettings] = {}
    store_urls: dict[str, str] = {}
    for entry in entries:
        if kind_of(entry) != "coercionPseudonymScope" or entry.get("dicomInstalled") is False:
            continue
        where = f"{origin} {entry['dn']}".strip()
        params = dict(item.partition("=")[::2] for item in entry.get("coercionParam", []))
        unknown = sorted(set(params) - {"id_template", "name_template", "date_offset_range"})
        if unknown:
            problems.append(
                f"{where}: attribute coercionParam: unknown {', '.join(unknown)}; a scope takes "
                "id_template, name_template and date_offset_range=MIN..MAX"
            )
            continue
        try:
            low, _, high = params.get("date_offset_range", "-3650..-1").partition("..")
            settings = ScopeSettings(
                id_template=params.get("id_template", "{scope}-{hash}"),
                name_template=params.get("name_template", "{scope}^{hash}"),
                offset_min=int(low),
                offset_max=int(high),
            )
        except ValueError as exc:
            problems.append(f"{where}: attribute coercionParam: {exc}")
            continue
        scopes[entry["cn"]] = settings
        if entry.get("coercionStoreURL") and not env.store_override:
            store_urls[entry["cn"]] = entry["coercionStoreURL"]
    env.scopes, env.store_urls = scopes, store_urls


def _scripts(
    entries: list[EntryJSON], env: ActionEnv, problems: list[str], origin: str
) -> dict[str, Script]:
    """Parse the tag scripts into *env* (for ``script:``) and return them; problems name entries."""
    from coercion.script.action import log_assignments
    from coercion.script.language import parse_script

    scripts: dict[str, Script] = {}
    for entry in entries:
        if kind_of(entry) != "coercionTagScript" or entry.get("dicomInstalled") is False:
            continue
        where = f"{origin} {entry['dn']}".strip()
        name = entry["cn"]
        if name in scripts:
            problems.append(f"{where}: attribute cn: a second tag script named {name!r}")
            continue
        body = script_body(entry["coercionScript"], f"{where}: attribute coercionScript", problems)
        if body is None:
            continue
        try:
            script = parse_script(name, body)
        except ConfigError as exc:
            problems.extend(
                f"{where}: attribute coercionScript: {line}" for line in str(exc).splitlines()
            )
            continue
        scripts[name] = script
        log_assignments(script)
    env.scripts = scripts
    return scripts


def script_body(text: str, where: str, problems: list[str]) -> dict[str, Any] | None:
    """The JSON of a tag script's body; None when it is not JSON or not as its schema says.

    The body schema is the first check, every problem noted in *problems* as
    ``<where>: <JSON path>: <what>``; :func:`~coercion.script.language.parse_script`
    then checks commands, macros, regular expressions and VRs.
    """
    from coercion.script.language import load_json

    try:
        data = load_json(text, where)
    except ConfigError as exc:
        problems.append(str(exc))
        return None
    found = validate_value(data, SCRIPT_BODY_SCHEMA, where)
    problems.extend(found)
    return None if found else cast(dict[str, Any], data)


def _conditions(entry: EntryJSON, where: str, problems: list[str]) -> list[Condition] | None:
    """The entry's conditions (of two with the same key, the later one); None when one is wrong.

    A problem is noted for each condition that does not parse.
    """
    texts = entry.get("coercionCondition", [])
    ok = True
    for text in texts:
        try:
            parse_condition(text)
        except ValueError as exc:
            problems.append(f"{where}: attribute coercionCondition: {text!r}: {exc}")
            ok = False
    return list(parse_conditions(texts)) if ok else None


def _rule(
    entry: EntryJSON, ae_title: str | None, env: ActionEnv, problems: list[str], origin: str
) -> Rule | None:
    where = f"{origin} {entry['dn']}".strip()
    params: dict[str, str] = {}
    for item in entry.get("coercionParam", []):
        key, _, value = item.partition("=")
        if key in params:
            problems.append(f"{where}: attribute coercionParam: {key!r} given twice")
        params[key] = value
    conditions = _conditions(entry, where, problems)
    try:
        action = build_action(entry["coercionURI"], params, env, entry["cn"])
    except (ValueError, ConfigError) as exc:
        problems.append(f"{where}: attribute coercionURI: {exc}")
        return None
    if conditions is None:
        return None
    return Rule(
        name=entry["cn"],
        dn=entry["dn"],
        uri=entry["coercionURI"],
        action=action,
        dimse=frozenset(Dimse(d) for d in entry["coercionDIMSE"]),
        role=Role(entry["dicomTransferRole"]),
        ae_title=ae_title,
        sop_classes=frozenset(entry.get("coercionSOPClass", [])),
        conditions=tuple(conditions),
        priority=entry.get("coercionPriority", 0),
        sufficient=entry.get("coercionSufficient", False),
        on_failure=OnFailure(entry.get("coercionOnFailure", "RETHROW")),
        params=params,
        description=entry.get("description", ""),
    )


def load_configuration(
    source: DirectorySource,
    env: ActionEnv,
    device_name: str = DEFAULT_DEVICE,
    syntaxes: Syntaxes | None = None,
) -> Configuration:
    """Read, validate and compile the configuration of device *device_name* from *source*.

    Raises :class:`ConfigError` listing every problem found (one per line),
    or :class:`~coercion.errors.DirectoryUnavailableError` when the source
    cannot be read.
    """
    raw = source.entries(device_name)
    return build_configuration(raw, source.origin, env, device_name, syntaxes, source)


def build_configuration(
    raw: Iterable[Entry],
    origin: str,
    env: ActionEnv,
    device_name: str = DEFAULT_DEVICE,
    syntaxes: Syntaxes | None = None,
    source: DirectorySource | None = None,
) -> Configuration:
    """:func:`load_configuration` for entries already read.

    *env* is filled with the scopes, store URLs and scripts of *raw*: give a
    fresh one (:meth:`ActionEnv.derive`), never the environment of a
    configuration that serves; the result keeps it as ``env``.
    """
    raw = list(raw)
    if syntaxes is None:
        schema = getattr(source, "schema", None) if isinstance(source, EmbeddedDirectory) else None
        syntaxes = Syntaxes(schema) if schema else default_syntaxes()
    problems: list[str] = []
    entries = _valid_entries(raw, origin, syntaxes, problems)
    devices = _devices(entries)
    device = devices.get(device_name)
    if device is None:
        names = ", ".join(sorted(devices)) or "none"
        problems.append(f"{origin}: no device {device_name!r} (devices found: {names})")
        raise ConfigError("\n".join(problems))
    device_dn = _key(device.dn)
    settings = device_settings(device.settings)
    env.peers = {ae.title: d.peer() for d in devices.values() if d is not device for ae in d.aes}
    env.worklist_directory = env.worklist_directory or f"{_data_folder(env, settings)}/worklist"
    _scopes(entries, settings, env, problems, origin)
    scripts = _scripts(entries, env, problems, origin)
    ae_by_dn = {_key(ae.dn): ae.title for ae in device.aes}
    rules = []
    for entry in entries:
        if kind_of(entry) != "coercionRule" or entry.get("dicomInstalled") is False:
            continue
        parent = _parent_key(entry["dn"])
        if parent == device_dn:
            ae_title = None
        elif parent in ae_by_dn:
            ae_title = ae_by_dn[parent]
        else:
            continue  # a rule of another device
        rule = _rule(entry, ae_title, env, problems, origin)
        if rule is not None:
            rules.append(rule)
    forwards = []
    known = {ae.title for d in devices.values() if d is not device for ae in d.aes}
    for entry in entries:
        if kind_of(entry) != "coercionForwardRule" or entry.get("dicomInstalled") is False:
            continue
        parent = _parent_key(entry["dn"])
        if parent != device_dn and parent not in ae_by_dn:
            continue
        forward = _forward_rule(entry, ae_by_dn.get(parent), known, problems, origin)
        if forward is not None:
            forwards.append(forward)
    if problems:
        raise ConfigError("\n".join(problems))
    return Configuration(
        origin,
        device,
        devices,
        RuleSet(rules, origin),
        entries,
        raw,
        tuple(forwards),
        scripts,
        env,
        settings,
    )


def _forward_rule(
    entry: EntryJSON, ae_title: str | None, known: set[str], problems: list[str], origin: str
) -> ForwardRule | None:
    where = f"{origin} {entry['dn']}".strip()
    ok = True
    for destination in entry["coercionDestinationAETitle"]:
        if destination not in known:
            close = difflib.get_close_matches(destination, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(
                f"{where}: attribute coercionDestinationAETitle: {destination!r} is not the AE "
                f"title of a known device{hint}"
            )
            ok = False
    conditions = _conditions(entry, where, problems)
    if not ok or conditions is None:
        return None
    return ForwardRule(
        name=entry["cn"],
        dn=entry["dn"],
        destinations=tuple(entry["coercionDestinationAETitle"]),
        ae_title=ae_title,
        sop_classes=frozenset(entry.get("coercionSOPClass", [])),
        conditions=tuple(conditions),
        priority=entry.get("coercionPriority", 0),
        dimse=frozenset(Dimse(d) for d in entry.get("coercionDIMSE", ["C_STORE_RQ"])),
    )


def _valid_entries(
    raw: list[Entry], origin: str, syntaxes: Syntaxes, problems: list[str]
) -> list[EntryJSON]:
    """The entries coercion knows, as JSON, that pass their JSON Schema."""
    entries: list[EntryJSON] = []
    for dn, attrs in raw:
        if kind_of(attrs) is None:
            continue
        try:
            entry = to_json(dn, attrs, syntaxes)
        except ConfigError as exc:
            problems.append(f"{origin} {exc}")
            continue
        found = validate(entry, origin)
        problems.extend(found)
        if not found:
            entries.append(entry)
    return entries


def _devices(entries: list[EntryJSON]) -> dict[str, Device]:
    """Every device with its network AEs (AE titles in order)."""
    by_dn = {key: e for e in entries if (key := _key(e["dn"])) is not None}
    devices: dict[str, Device] = {}
    for entry in entries:
        if kind_of(entry) != "dicomDevice":
            continue
        aes = [
            _network_ae(child, by_dn)
            for child in entries
            if kind_of(child) == "dicomNetworkAE" and _parent_key(child["dn"]) == _key(entry["dn"])
        ]
        settings = {k: v for k, v in entry.items() if k.startswith("coercion")}
        info = {
            name: tuple(str(v) for v in (value if isinstance(value, list) else [value]))
            for name in DEVICE_INFO
            if (value := entry.get(name))
        }
        devices[entry["dicomDeviceName"]] = Device(
            entry["dicomDeviceName"],
            entry["dn"],
            entry.get("dicomDescription", ""),
            tuple(sorted(aes, key=lambda ae: ae.title)),
            settings,
            info,
        )
    return devices


def _network_ae(entry: EntryJSON, by_dn: dict[DnKey, EntryJSON]) -> NetworkAE:
    hostname, port, tls = "", None, False
    for reference in entry.get("dicomNetworkConnectionReference", []):
        key = _key(reference)
        connection = by_dn.get(key) if key is not None else None
        if connection is not None:
            hostname, port = connection.get("dicomHostname", ""), connection.get("dicomPort")
            tls = bool(connection.get("dicomTLSCipherSuite"))
            break
    return NetworkAE(
        entry["dicomAETitle"],
        entry["dn"],
        hostname,
        port,
        entry.get("dicomAssociationInitiator", True),
        entry.get("dicomAssociationAcceptor", True),
        tls,
    )


def write_snapshot(path: Path, raw: Iterable[Entry]) -> None:
    """Keep *raw* entries on disk (atomically, 0600) for a start while the directory is down.

    Only the entries coercion reads are kept (no other entry of the directory, such as a
    person with a ``userPassword``, ends up in the file).
    """
    kept = [(dn, attrs) for dn, attrs in raw if kind_of(attrs) is not None]
    data = {"entries": [{"dn": dn, "attributes": attrs} for dn, attrs in kept]}
    with atomic_output(path) as fd, open(fd, "w", encoding="utf-8", closefd=False) as out:
        json.dump(data, out, indent=1)
