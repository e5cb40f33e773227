"""The console's command-line pieces: ``serve``'s --http options and ``console passwd``."""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from coercion.cli.config import with_options
from coercion.console.accounts import Role
from coercion.console.sessions import SIGNIN_FAILURES
from coercion.errors import ConfigError

if TYPE_CHECKING:
    from coercion.console.server import ConsoleServer
    from coercion.directory.watch import ConfigurationWatcher
    from coercion.net.node import NodeSettings

__all__ = [
    "HTTP_KEYS",
    "PASSWORD_FILE",
    "console",
    "console_running",
    "http_options",
    "split_options",
]

log = logging.getLogger(__name__)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

_F = TypeVar("_F", bound=Callable[..., Any])
#: The console's password file in the data folder, unless --http-password-file names another.
PASSWORD_FILE = "console.passwd"
#: The options http_options adds, as serve receives them.
HTTP_KEYS = (
    "http",
    "no_http",
    "http_password_file",
    "http_admin_group",
    "http_viewer_group",
    "http_session_timeout",
    "http_signin_lockout",
    "metrics_allow",
)


def _address(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter("give HOST:PORT, e.g. 127.0.0.1:11180 (port 0 picks a free one)")
    return host.strip("[]"), int(port)


def _networks(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise click.BadParameter(
            f"{exc}; give an address or a network such as 10.0.0.0/8"
        ) from None


def http_options(function: _F) -> _F:
    """Add the console's options to ``serve``."""
    options = [
        click.option(
            "--http",
            default="127.0.0.1:11180",
            show_default=True,
            metavar="HOST:PORT",
            callback=_address,
            help="Where the web console listens (with --tls-cert: HTTPS).",
        ),
        click.option("--no-http", is_flag=True, help="No web console."),
        click.option(
            "--http-password-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The console's accounts (coercion console passwd); for the embedded directory. "
            f"Default: DATA/{PASSWORD_FILE}.",
        ),
        click.option(
            "--http-admin-group",
            metavar="DN",
            help="With --ldap: the groupOfNames whose members may change rules.",
        ),
        click.option(
            "--http-viewer-group",
            metavar="DN",
            help="With --ldap: the groupOfNames whose members may read the console.",
        ),
        click.option(
            "--http-session-timeout",
            type=click.FloatRange(min=1),
            default=900,
            show_default=True,
            help="Seconds without a request after which a console session ends.",
        ),
        click.option(
            "--http-signin-lockout",
            type=click.FloatRange(min=1),
            default=300,
            show_default=True,
            help=f"After {SIGNIN_FAILURES} failed sign-ins from one address or for one name "
            "within this many seconds, further sign-ins from it or for it wait that long.",
        ),
        click.option(
            "--metrics-allow",
            multiple=True,
            metavar="NETWORK",
            callback=_networks,
            help="Only these addresses or networks may read /metrics and /healthz "
            "(repeat; default: every address).",
        ),
    ]
    return with_options(function, options)


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Take the --http options out of serve's *kwargs*; return them and a copy of the
    directory options (the console opens a connection of its own with them).
    """
    return {key: kwargs.pop(key) for key in HTTP_KEYS}, dict(kwargs)


@contextmanager
def console_running(
    options: dict[str, Any],
    directory: dict[str, Any],
    watcher: ConfigurationWatcher,
    settings: NodeSettings,
    ae_titles: Callable[[], list[str]],
    dicom_address: str,
) -> Iterator[ConsoleServer | None]:
    """The console the --http options describe while the block runs (None with --no-http).

    *directory* holds the directory options as serve received them: the console
    opens its own connection with them. *settings* are the node's; *ae_titles*
    reads its AE titles (of its workers, with several) when a page needs them.
    """
    if options["no_http"]:
        yield None
        return
    from coercion.cli.config import open_source
    from coercion.console.accounts import Authenticator, DirectoryAccounts, PasswordFile
    from coercion.console.rules import RuleStore
    from coercion.console.server import ConsoleServer, HttpSettings
    from coercion.console.sessions import Sessions, SignInThrottle
    from coercion.console.state import ConsoleState
    from coercion.directory.sources import LdapDirectory

    device = directory.pop("device")
    shipped = directory["config_dir"] is None and not directory["ldap_url"]
    source = open_source(dict(directory))
    accounts: Authenticator
    if isinstance(source, LdapDirectory):
        admin, viewer = options["http_admin_group"], options["http_viewer_group"]
        if not admin and not viewer:
            log.warning(
                "console: nobody can sign in; give --http-admin-group and --http-viewer-group"
            )
        accounts = DirectoryAccounts(source.settings, admin or "", viewer or "")
    else:
        path = options["http_password_file"] or settings.data / PASSWORD_FILE
        if not path.exists():
            log.warning(
                "console: %s does not exist: nobody can sign in until "
                "coercion console passwd %s NAME --role admin",
                path,
                path,
            )
        accounts = PasswordFile(path)
    read_only = (
        "the shipped configuration cannot be changed; copy ldif/ and give --config-dir"
        if shipped
        else ""
    )
    state = ConsoleState(
        watcher=watcher,
        rules=RuleStore(source, watcher.env, device, read_only),
        accounts=accounts,
        sessions=Sessions(options["http_session_timeout"]),
        throttle=SignInThrottle(options["http_signin_lockout"]),
        data=settings.data,
        ae_titles=ae_titles,
        dicom_address=dicom_address,
        secret=settings.secret,
        ldap_accounts=isinstance(source, LdapDirectory),
        secure=settings.tls_cert is not None,
        metrics_allow=options["metrics_allow"],
    )
    host, port = options["http"]
    server = ConsoleServer(state, HttpSettings(host, port, settings.tls_cert, settings.tls_key))
    try:
        server.start()
    except ConfigError as exc:  # the node serves on without its console
        log.error("%s; the node runs without its console", exc)
        source.close()
        yield None
        return
    web_host, web_port = server.address
    state.http_address = f"{server.scheme}://{web_host}:{web_port}/"
    _err.print(f"console on {state.http_address}")
    try:
        yield server
    finally:
        server.stop()


@click.group()
def console() -> None:
    """The web console's accounts."""


@console.command()
@click.argument("password_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.VIEWER.value,
    show_default=True,
    help="viewer: reads every page; admin: also changes rules.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
def passwd(password_file: Path, name: str, role: str, password_stdin: bool) -> None:
    """Add NAME to PASSWORD_FILE (or set their password and role); asks for the password."""
    from coercion.console.accounts import set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        set_password(password_file, name, Role(role), password)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{password_file}: {name} ({role}) set", err=True)
