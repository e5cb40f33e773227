"""Command-line pieces for the configuration directory: options, ``config ...`` and ``explain``."""

from __future__ import annotations

import functools
import json
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydicom.datadict import keyword_for_tag
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coercion.cli.checks import check_ldap_url
from coercion.dicom.outputs import output_file
from coercion.dicom.part10 import read_file
from coercion.dicom.tags import format_tag
from coercion.directory import DEFAULT_DEVICE
from coercion.engine import ActionEnv, Dimse, Engine, EventContext, Role
from coercion.errors import ConfigError, IncompleteConversionError, map_errors
from coercion.resources import default_ldif_dir

if TYPE_CHECKING:
    from coercion.directory.config import Configuration
    from coercion.directory.ldifio import Entry
    from coercion.directory.sources import DirectorySource

# The directory modules (ldap3, jsonschema) are imported where they are used, so that
# the commands that do not read the directory start quickly.

__all__ = [
    "config",
    "directory_options",
    "explain",
    "format_option",
    "open_source",
    "with_options",
]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
_F = TypeVar("_F", bound=Callable[..., Any])


def format_option(function: _F) -> _F:
    """Add ``--format table|json`` (as ``output_format``) to a command that prints a table."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table: for people (full values when not on a terminal); json: for programs.",
    )(function)


def directory_options(function: _F) -> _F:
    """Add the options that choose the configuration directory to a command."""
    options = [
        click.option(
            "--config-dir",
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            help="A folder of LDIF files for the embedded directory (default: the shipped ldif/).",
        ),
        click.option(
            "--ldap", "ldap_url", metavar="URL", help="A live directory: ldap:// or ldaps://"
        ),
        click.option("--bind-dn", metavar="DN", help="Bind DN for --ldap (default: anonymous)."),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="File holding the bind password (default: $COERCION_LDAP_PASSWORD).",
        ),
        click.option(
            "--start-tls", is_flag=True, help="Upgrade the --ldap connection with StartTLS."
        ),
        click.option(
            "--ca-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="CA certificates to check the LDAP server's certificate.",
        ),
        click.option(
            "--base-dn", metavar="DN", help="Base DN (default: the server's naming context)."
        ),
        click.option(
            "--device",
            default=DEFAULT_DEVICE,
            show_default=True,
            help="The dicomDeviceName of this node in the directory.",
        ),
    ]
    return with_options(function, options)


def with_options(function: _F, options: Sequence[Callable[[Any], Any]]) -> _F:
    """*function* with the click *options* applied, the first listed shown first in --help."""
    for option in reversed(options):
        function = option(function)
    return function


def open_source(kwargs: dict[str, Any]) -> DirectorySource:
    """The directory source the directory options name (and remove them from *kwargs*)."""
    from coercion.directory.sources import EmbeddedDirectory, LdapDirectory, LdapSettings

    config_dir = kwargs.pop("config_dir")
    url = kwargs.pop("ldap_url")
    settings = LdapSettings(
        url or "",
        kwargs.pop("bind_dn"),
        kwargs.pop("password_file"),
        kwargs.pop("start_tls"),
        kwargs.pop("base_dn"),
        kwargs.pop("ca_file"),
    )
    if config_dir is not None and url:
        raise click.UsageError("give --config-dir or --ldap, not both")
    if url:
        check_ldap_url(url)
        return LdapDirectory(settings)
    return EmbeddedDirectory(config_dir or default_ldif_dir())


def _load(kwargs: dict[str, Any], secret: bytes | None = None) -> Configuration:
    from coercion.directory.config import load_configuration

    source = open_source(kwargs)
    try:
        # Without a key the actions are only checked or previewed: a throwaway key will do,
        # and a throwaway store, so that a preview takes no counter number or pseudonym.
        env = ActionEnv(
            secret if secret is not None else secrets.token_bytes(32),
            store_override="sqlite:///:memory:",
        )
        return load_configuration(source, env, kwargs.pop("device"))
    finally:
        source.close()


def _with_source(function: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(function)
    def wrapper(**kwargs: Any) -> None:
        function(**kwargs)

    return directory_options(wrapper)


@click.group()
def config() -> None:
    """Check, show, export and import the configuration directory."""


@config.command(name="validate")
@_with_source
def validate_(**kwargs: Any) -> None:
    """Validate every entry and rule; list every problem (DN and attribute)."""
    configuration = _load(kwargs)
    _out.print(
        f"{escape(configuration.origin)}: valid: {len(configuration.entries)} entries, "
        f"{len(configuration.devices)} devices, {len(configuration.rules)} rules for device "
        f"{escape(configuration.device.name)}"
    )


@config.command()
@format_option
@_with_source
def show(output_format: str, **kwargs: Any) -> None:
    """Print the node's rules as a table, in the order they apply, then its tag scripts."""
    configuration = _load(kwargs)
    if output_format == "json":
        sys.stdout.write(json.dumps(_show_json(configuration), indent=2) + "\n")
        return
    # Piped or redirected, a table as wide as its values: nothing cut to the terminal's width.
    out = _out if _out.is_terminal else Console(highlight=False, width=_UNLIMITED)
    table = Table(title=f"rules of {configuration.device.name} ({configuration.origin})")
    for column in (
        "priority",
        "rule",
        "AE",
        "DIMSE",
        "role",
        "SOP classes",
        "conditions",
        "URI",
        "sufficient",
        "on failure",
    ):
        table.add_column(column)
    for rule in configuration.rules.rules:
        table.add_row(
            str(rule.priority),
            escape(rule.name),
            escape(rule.ae_title or "*"),
            ", ".join(sorted(rule.dimse)),
            str(rule.role),
            "\n".join(sorted(rule.sop_classes)) or "*",
            escape("\n".join(c.text for c in rule.conditions)) or "-",
            escape(rule.uri),
            "yes" if rule.sufficient else "no",
            str(rule.on_failure),
        )
    out.print(table)
    if configuration.scripts:
        out.print(_scripts_table(configuration))


#: The width of a console that is not a terminal: wide enough for any value.
_UNLIMITED = 1_000_000


def _show_json(configuration: Configuration) -> dict[str, Any]:
    """What ``config show`` prints, as JSON: the rules in order, then the scripts' sections."""
    rules = [
        {
            "priority": rule.priority,
            "rule": rule.name,
            "ae_title": rule.ae_title or None,
            "dimse": sorted(str(d) for d in rule.dimse),
            "role": str(rule.role),
            "sop_classes": sorted(rule.sop_classes),
            "conditions": [c.text for c in rule.conditions],
            "uri": rule.uri,
            "sufficient": rule.sufficient,
            "on_failure": str(rule.on_failure),
        }
        for rule in configuration.rules.rules
    ]
    scripts = [
        {
            "script": name,
            "section": section.key,
            "name": section.name,
            "owner": section.owner,
            "prefix": section.prefix,
            "preset": script.assignment(section.key).preset.value,
            "preset_set": bool(section.preset),
            "tag_commands": len(section.commands),
        }
        for name, script in sorted(configuration.scripts.items())
        for section in (script.general, *script.projects.values())
    ]
    return {
        "device": configuration.device.name,
        "origin": configuration.origin,
        "rules": rules,
        "scripts": scripts,
    }


def _scripts_table(configuration: Configuration) -> Table:
    """The tag scripts, one row per section; the number of its tag commands, not the commands."""
    table = Table(title=f"tag scripts ({configuration.origin})")
    for column in ("script", "section", "name", "owner", "prefix", "preset", "tag commands"):
        table.add_column(column)
    for name, script in sorted(configuration.scripts.items()):
        for section in (script.general, *script.projects.values()):
            preset = script.assignment(section.key).preset.value
            table.add_row(
                escape(name),
                escape(section.key),
                escape(section.name) or "-",
                escape(section.owner) or "-",
                escape(section.prefix) or "-",
                preset if section.preset else f"{preset} (not set)",
                str(len(section.commands)),
            )
    return table


@config.command()
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write here instead of stdout (- for stdout).",
)
@_with_source
def export(out_path: Path | None, **kwargs: Any) -> None:
    """Write the configuration entries (validated) as LDIF."""
    from coercion.directory.ldifio import format_ldif

    configuration = _load(kwargs)
    text = format_ldif(configuration.raw)
    if out_path is None:
        sys.stdout.write(text)
        return
    _write_output(out_path, text)
    _err.print(f"{len(configuration.raw)} entries written to {escape(str(out_path))}")


def _write_output(path: Path, text: str) -> None:
    """Write *text* to *path* atomically (``-``: stdout; a device or FIFO: written through)."""
    hint = "give a path in a folder you can write"
    with (
        output_file(path, hint=hint) as fd,
        open(fd, "w", encoding="utf-8", closefd=False) as out,
    ):
        out.write(text)


@config.command(name="import")
@click.argument("ldif_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_with_source
def import_(ldif_file: Path, **kwargs: Any) -> None:
    """Validate FILE.ldif, then add or update its entries in the --ldap directory."""
    from coercion.directory.config import load_configuration
    from coercion.directory.entries import default_syntaxes, kind_of, to_json, validate
    from coercion.directory.ldifio import duplicate_dns, read_ldif
    from coercion.directory.sources import LdapDirectory
    from coercion.directory.update import import_entries

    if not kwargs.get("ldap_url"):
        raise click.UsageError("import writes to a live directory: give --ldap URL")
    entries = read_ldif(ldif_file)
    syntaxes = default_syntaxes()
    problems = [
        f"{ldif_file}: entry {dn}: given more than once; give each entry once"
        for dn in duplicate_dns(entries)
    ]
    for dn, attrs in entries:
        if kind_of(attrs) is not None:
            problems.extend(validate(to_json(dn, attrs, syntaxes), str(ldif_file)))
    if problems:
        raise ConfigError("\n".join(problems))
    source = open_source(kwargs)
    assert isinstance(source, LdapDirectory)
    try:
        added, modified, unchanged = import_entries(source, entries)
        # The result must load as a whole: report what the node would see.
        configuration = load_configuration(
            source, ActionEnv(secrets.token_bytes(32)), kwargs["device"]
        )
    finally:
        source.close()
    _out.print(
        f"{escape(str(ldif_file))}: {added} added, {modified} modified, {unchanged} unchanged; "
        f"{len(configuration.rules)} rules for device {escape(configuration.device.name)}"
    )


def _out_option(function: _F) -> _F:
    """``--out``: where a command that converts into LDIF writes it (default: stdout)."""
    return click.option(
        "--out",
        "out_path",
        type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
        help="Write the LDIF here instead of stdout (- for stdout).",
    )(function)


def _conversion_options(goes: str) -> Callable[[_F], _F]:
    """The options of the import-... commands that convert into LDIF: --parent-dn and --out."""

    def decorate(function: _F) -> _F:
        return click.option(
            "--parent-dn",
            default=f"dicomDeviceName={DEFAULT_DEVICE},cn=Devices,cn=DICOM Configuration,"
            "dc=coercion,dc=local",
            show_default=True,
            help=f"Where {goes} (the node's device or one of its network AEs).",
        )(_out_option(function))

    return decorate


def _devices_present(kwargs: dict[str, Any], names: frozenset[str]) -> frozenset[str]:
    """Those of the devices *names* that the directory the options name holds."""
    source = open_source(kwargs)
    try:
        return frozenset(
            name
            for name in names
            if any(attrs.get("dicomDeviceName") == [name] for _dn, attrs in source.entries(name))
        )
    finally:
        source.close()


def _write_converted(
    entries: list[Entry], report: list[str], label: str, out_path: Path | None
) -> None:
    """Print *report* on stderr (each line after *label*), then write *entries* as LDIF."""
    from coercion.directory.ldifio import format_ldif

    for line in report:
        _err.print(f"[yellow]{label}:[/] {escape(line)}")
    text = format_ldif(entries)
    if out_path is None:
        sys.stdout.write(text)
    else:
        _write_output(out_path, text)


@config.command(name="import-dcm4chee")
@click.argument("ldif_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--strict",
    is_flag=True,
    help="Write nothing unless every rule is carried over exactly.",
)
@click.option(
    "--stylesheets",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The folder with a copy of dcm4chee-arc's stylesheets, for the rules that name "
    "them as ${jboss.server.temp.url}/dcm4chee-arc/NAME.xsl.",
)
@_out_option
@_with_source
def import_dcm4chee(
    ldif_file: Path,
    strict: bool,
    stylesheets: Path | None,
    out_path: Path | None,
    **kwargs: Any,
) -> None:
    """Convert dcm4chee-arc attribute coercion entries (FILE.ldif) into coercion rules (LDIF).

    Rules keep their place: under a dcm4chee-arc network AE they go under the
    node's network AE of that title, under the device under the node's device
    (both read from the directory the options name). A stylesheet named by a
    dcm4chee-arc system property is looked up in --stylesheets; a device a
    sup-from-dev: rule supplements from is carried over from FILE when the
    directory lacks it (written before the rules). A rule not carried over
    exactly is written inactive (dicomInstalled: FALSE) with a description of
    what is missing; the command then exits 9 (with --strict, writing nothing).
    """
    from coercion.directory.config import build_configuration
    from coercion.directory.convert.dcm4chee import (
        Placement,
        convert_dcm4chee,
        referenced_devices,
        settle,
    )
    from coercion.directory.ldifio import read_ldif_update

    entries, changes = read_ldif_update(ldif_file)
    device_name = kwargs["device"]
    present = _devices_present(dict(kwargs), referenced_devices(entries))
    ours = _load(kwargs)
    device = ours.device
    placement = Placement(
        device.dn,
        {ae.title: ae.dn for ae in device.aes},
        frozenset(ours.devices) | present,
        stylesheets,
    )
    conversion = convert_dcm4chee(entries, placement, changes)
    if not conversion.entries and not conversion.report:
        raise ConfigError(
            f"{ldif_file}: no dcmArchiveAttributeCoercion2 or dcmArchiveAttributeCoercion "
            "entry; give an LDIF export of dcm4chee-arc's configuration"
        )

    def load(converted: list[Entry]) -> None:
        env = ActionEnv(secrets.token_bytes(32), store_override="sqlite:///:memory:")
        try:
            build_configuration([*ours.raw, *converted], ours.origin, env, device_name)
        finally:
            env.close()

    settle(conversion, load)  # what the node would refuse to load is not written active
    active = sum(1 for _dn, attrs in conversion.entries if "dicomInstalled" not in attrs)
    carried = sum(1 for _dn, attrs in conversion.devices if "dicomDeviceName" in attrs)
    summary = (
        f"{len(conversion.entries)} rules written ({active} active, "
        f"{len(conversion.entries) - active} inactive), {carried} "
        f"{'device' if carried == 1 else 'devices'} carried over, "
        f"{conversion.not_carried_over} not carried over exactly, "
        f"{len(conversion.report)} items reported"
    )
    if strict and not conversion.complete:
        for line in conversion.report:
            _err.print(f"[yellow]reported:[/] {escape(line)}")
        raise IncompleteConversionError(
            f"{ldif_file}: {conversion.not_carried_over} rules not carried over exactly; "
            "nothing written (--strict); run without --strict to write them inactive"
        )
    _write_converted(
        [*conversion.devices, *conversion.entries], conversion.report, "reported", out_path
    )
    _err.print(summary)
    if not conversion.complete:
        raise IncompleteConversionError(
            f"{ldif_file}: {conversion.not_carried_over} rules not carried over exactly; "
            "they are written inactive (dicomInstalled: FALSE) with a description of what is "
            "missing: correct them and set dicomInstalled: TRUE"
        )


def _script_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value or value != value.strip():
        raise click.BadParameter("must not be empty nor begin or end with a space")
    return value


@config.command(name="import-mercure")
@click.argument("settings_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--name",
    required=True,
    callback=_script_name,
    help="The script's name (cn), as rules name it: script:NAME.",
)
@click.option(
    "--lenient",
    is_flag=True,
    help="Write the entry even when commands have no counterpart here (those tags removed).",
)
@_conversion_options("the script goes")
def import_mercure(
    settings_file: Path, name: str, lenient: bool, parent_dn: str, out_path: Path | None
) -> None:
    """Convert mercure anonymizer settings (or a task file with them) into a tag script (LDIF).

    Exits 2 and writes nothing when a command mercure runs has no counterpart here,
    unless --lenient.
    """
    from coercion.directory.convert.mercure import convert_mercure

    failures = (OSError, UnicodeDecodeError)
    with map_errors({failures: ConfigError}, f"{settings_file}: cannot read", reason=str):
        text = settings_file.read_text(encoding="utf-8")
    entry, report = convert_mercure(text, name, parent_dn, str(settings_file), lenient=lenient)
    _write_converted([entry], report, "mapped", out_path)
    _err.print(f"1 script converted, {len(report)} items mapped or dropped")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--calling", default="", help="Calling AE title (the sender).")
@click.option("--called", default="", help="Called AE title (this node's AE title).")
@click.option(
    "--dimse",
    type=click.Choice([d.value for d in Dimse]),
    default=Dimse.C_STORE_RQ.value,
    show_default=True,
)
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default=Role.SCP.value, show_default=True
)
@click.option("--remote-host", default="", help="Host of the peer.")
@click.option("--local-host", default="", help="Host of this node.")
@_with_source
def explain(
    file: Path,
    calling: str,
    called: str,
    dimse: str,
    role: str,
    remote_host: str,
    local_host: str,
    **kwargs: Any,
) -> None:
    """Show which rules apply to FILE and, per tag, the action and the rule; never a value."""
    configuration = _load(kwargs)
    ds = read_file(file)
    sop_class = ds.get("SOPClassUID")
    ctx = EventContext(
        Dimse(dimse), Role(role), calling, called, remote_host, local_host, str(sop_class or "")
    )
    outcome = Engine(configuration.rules).apply(ds, ctx)
    if not outcome.applied:
        _out.print(f"no rule applies to {escape(str(file))} for {escape(ctx.describe())}")
        return
    rules = Table(title=f"rules applied for {ctx.describe()}")
    for column in ("order", "rule", "URI", "changes", "result"):
        rules.add_column(column)
    for index, applied in enumerate(outcome.applied, 1):
        rules.add_row(
            str(index),
            escape(applied.rule.name),
            escape(applied.rule.uri),
            str(len(applied.changes)),
            "failed: " + escape(applied.failure) if applied.failure else "applied",
        )
    _out.print(rules)
    tags = Table(title="per tag")
    for column in ("tag", "keyword", "action", "rule"):
        tags.add_column(column)
    for applied in outcome.applied:
        for change in applied.changes:
            where = "".join(f"{format_tag(t)}[{i}]." for t, i in change.path)
            tags.add_row(
                where + format_tag(change.tag),
                keyword_for_tag(change.tag) or ("(private)" if change.tag >> 16 & 1 else "-"),
                change.action.value,
                escape(applied.rule.name),
            )
    _out.print(tags)
    if any(applied.rule.uri.startswith("script:") for applied in outcome.applied):
        from coercion.script.language import NESTING_RULE

        _out.print(escape(NESTING_RULE))
