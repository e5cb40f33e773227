"""The ``coercion`` command line: the only module that prints or exits."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from coercion import __version__, batch
from coercion.cli.checks import bind_error, check_tls, prepare_data_folder
from coercion.cli.config import config, directory_options, explain, open_source
from coercion.cli.console import console, console_running, http_options, split_options
from coercion.cli.logs import configure_logging
from coercion.cli.profile import profile
from coercion.cli.store import store
from coercion.engine import ActionEnv
from coercion.errors import CoercionError
from coercion.profile import EDITION, Option, parse_options
from coercion.profile.keys import (
    DEFAULT_KEY_PATH,
    DEFAULT_KEY_SCOPE,
    fingerprint,
    load_or_create_secret,
)

__all__ = ["cli", "main"]

log = logging.getLogger("coercion.cli")
_err = Console(stderr=True, highlight=False, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="coercion")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for every element action).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def cli(verbose: int, quiet: bool) -> None:
    """DICOM attribute coercion and PS3.15 de-identification."""
    configure_logging(-1 if quiet else verbose)


_OPTION_HELP = (
    f"A PS3.15 option (Table E.1-1, edition {EDITION}); repeat for several. One of: "
    + ", ".join(option.name for option in Option)
)


_KEY_OPTION = click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Secret key file; created (mode 0600) when absent. Default: {DEFAULT_KEY_PATH}",
)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--option", "option_names", multiple=True, metavar="NAME", help=_OPTION_HELP)
@_KEY_OPTION
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Write the translation table (original -> new ids, UIDs, paths) as CSV (- for stdout). "
    "Holds PHI.",
)
@click.option(
    "--rename", is_flag=True, help="Name outputs from pseudonymous ids, not source names."
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, help="Processes (0: one per core)."
)
@click.option("--resume", is_flag=True, help="Skip outputs that already exist.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Fail any output that still holds its source's identifying values.",
)
@click.option(
    "--key-scope",
    default=DEFAULT_KEY_SCOPE,
    show_default=True,
    metavar="NAME",
    help="With --option: the key scope of tokens, UIDs and date offsets; the same NAME as a "
    "deidentify: rule's key=NAME gives that rule's values, another NAME unlinkable ones.",
)
@click.option("--rules", is_flag=True, help="Apply the directory's rules instead of --option.")
@click.option("--calling", default="", help="With --rules: the calling (sending) AE title.")
@click.option("--called", default="", help="With --rules: the called AE title (this node's).")
@directory_options
def deidentify(
    paths: tuple[Path, ...],
    option_names: tuple[str, ...],
    key: Path | None,
    key_file: Path | None,
    rename: bool,
    workers: int,
    resume: bool,
    verify: bool,
    key_scope: str,
    rules: bool,
    calling: str,
    called: str,
    **directory: Any,
) -> None:
    """De-identify DICOM files under SRC... into DST (the last path).

    With --option (or nothing) every file gets the PS3.15 Basic Profile and
    the options. With --rules (implied by --config-dir, --ldap, --calling or
    --called) every file goes through the directory's rules as a C-STORE
    received by this node (C_STORE_RQ, SCP) from --calling to --called.
    """
    if len(paths) < 2:
        raise click.UsageError("give at least one SRC and a DST")
    *sources, destination = paths
    options = parse_options(option_names, where="--option")
    device = directory.pop("device")
    rules = rules or bool(directory["config_dir"] or directory["ldap_url"] or calling or called)
    if rules and options:
        raise click.UsageError("--option and the directory's rules exclude each other")
    if not key_scope.strip():
        raise click.UsageError("--key-scope needs a name")
    if rules and key_scope != DEFAULT_KEY_SCOPE:
        raise click.UsageError(
            "--key-scope goes with --option; a rule's scope is its key= parameter or its name"
        )
    secret = load_or_create_secret(key)
    entries = None
    origin = ""
    if rules:
        entries, origin = _read_directory(directory)
        from coercion.directory.config import build_configuration

        # Fail early, with every problem listed, before any worker starts.
        configuration = build_configuration(entries, origin, ActionEnv(secret), device)
        log.info("%d rules from %s", len(configuration.rules), origin)
    tasks = batch.plan(sources, destination)
    log.info(
        "de-identifying %d files with %d options, key %s",
        len(tasks),
        len(options),
        fingerprint(secret),
    )
    settings = batch.BatchSettings(
        options,
        secret,
        destination,
        rename,
        resume,
        verify,
        directory=entries,
        directory_origin=origin,
        device=device,
        calling_ae=calling,
        called_ae=called,
        key_scope=key_scope.strip(),
    )
    started = time.perf_counter()
    summary = _run_with_progress(tasks, settings, workers)
    elapsed = time.perf_counter() - started
    if key_file is not None:
        rows = batch.write_key_file(key_file, summary.results)
        _err.print(
            f"[yellow]warning:[/] {escape(str(key_file))} holds PHI "
            f"(original identifiers, {rows} rows); keep it as safe as the originals"
        )
    _report(summary, elapsed)
    if summary.interrupted:
        raise click.Abort()
    if summary.failed:
        sys.exit(1)


def _read_directory(directory: dict[str, Any]) -> tuple[list[Any], str]:
    """Every entry of the directory the options name, and where they came from."""
    source = open_source(directory)
    try:
        return source.entries(), source.origin
    finally:
        source.close()


def _run_with_progress(
    tasks: list[batch.Task], settings: batch.BatchSettings, workers: int
) -> batch.Summary:
    if not _err.is_terminal:
        return batch.run(tasks, settings, workers)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} files/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_err, transient=True) as progress:
        bar = progress.add_task("de-identifying", total=len(tasks), rate="-")
        started = time.perf_counter()

        def advance(_result: batch.FileResult) -> None:
            done = progress.tasks[0].completed + 1
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(bar, advance=1, rate=f"{rate:.0f}")

        return batch.run(tasks, settings, workers, on_result=advance)


def _report(summary: batch.Summary, elapsed: float) -> None:
    for result in summary.results:
        if result.status == "skipped":
            _err.print(f"skipped {escape(str(result.source))}: {escape(result.reason)}")
    for result in summary.failed:
        _err.print(f"[red]failed[/] {escape(result.reason)}")
    written = summary.count("written")
    rate = written / elapsed if elapsed > 0 else 0.0
    _err.print(
        f"{written} written, {summary.count('resumed')} already done, "
        f"{summary.count('skipped')} not DICOM, {len(summary.failed)} failed "
        f"in {elapsed:.2f} s ({rate:.1f} files/s)"
    )


@cli.command()
@click.argument("scope")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_KEY_OPTION
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, help="Processes (0: one per core)."
)
@click.option("--resume", is_flag=True, help="Skip outputs that already exist.")
@directory_options
def reidentify(
    scope: str,
    paths: tuple[Path, ...],
    key: Path | None,
    workers: int,
    resume: bool,
    **directory: Any,
) -> None:
    """Re-identify objects returning from SCOPE under SRC... into DST (the last path).

    Every file goes through reidentify:SCOPE: identity, UIDs, dates and study-level
    values come back from the store; a file whose pseudonym the scope does not know
    fails. The scope (and the store) are the directory's.
    """
    if len(paths) < 2:
        raise click.UsageError("give at least one SRC and a DST")
    *sources, destination = paths
    device = directory.pop("device")
    secret = load_or_create_secret(key)
    entries, origin = _read_directory(directory)
    from coercion.directory.config import build_configuration

    env = ActionEnv(secret)
    build_configuration(entries, origin, env, device)  # the scopes, every problem listed
    batch.command_line_rule(f"reidentify:{scope}", env)  # an unknown scope fails here
    tasks = batch.plan(sources, destination)
    settings = batch.BatchSettings(
        frozenset(),
        secret,
        destination,
        resume=resume,
        verify=False,  # the outputs hold identity on purpose
        directory=entries,
        directory_origin=origin,
        device=device,
        uri=f"reidentify:{scope}",
    )
    started = time.perf_counter()
    summary = _run_with_progress(tasks, settings, workers)
    _report(summary, time.perf_counter() - started)
    if summary.interrupted:
        raise click.Abort()
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.option("--host", default=None, help="Listen address (default: the directory's, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Listen port (default: the directory's, 11112; 0 picks a free one).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder (default: the device's coercionDataDirectory, .coercion/data).",
)
@click.option(
    "--worklist",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Worklist items (*.dcm) answered by the worklist SCP (default: DATA/worklist).",
)
@_KEY_OPTION
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between checks of the directory (default: the device's, 2).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The node's certificate (PEM): the listener uses TLS.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA certificates (PEM) peers must chain to; with --tls-cert clients must present one.",
)
@http_options
@directory_options
def serve(
    host: str | None,
    port: int | None,
    data: Path | None,
    worklist: Path | None,
    key: Path | None,
    poll_interval: float | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    **directory: Any,
) -> None:
    """Run the DICOM node: C-ECHO, storage, worklist and MPPS, coerced by the directory's rules."""
    from coercion.directory.watch import (
        DEFAULT_DATA,
        SNAPSHOT_NAME,
        ConfigurationWatcher,
    )
    from coercion.net.node import Node, NodeSettings

    http, console_directory = split_options(directory)
    device = directory.pop("device")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    check_tls(tls_cert, tls_key, tls_ca)
    secret = load_or_create_secret(key)
    source = open_source(directory)
    env = ActionEnv(secret, data_directory=str(data) if data is not None else "")
    # The snapshot of the last good configuration is known before the directory is read: it
    # stands in when the directory is down or invalid. Without --data, the default folder's
    # (only when it is there: the device may name another data folder).
    if data is not None:
        prepare_data_folder(data)
    snapshot: Path | None = (data or Path(DEFAULT_DATA)) / SNAPSHOT_NAME
    if data is None and snapshot is not None and not snapshot.exists():
        snapshot = None
    watcher = ConfigurationWatcher(source, env, device, poll_interval, snapshot)
    configuration = watcher.load_initial()
    settings = configuration.device.settings
    data = data or Path(str(settings.get("coercionDataDirectory", DEFAULT_DATA)))
    prepare_data_folder(data)
    if data / SNAPSHOT_NAME != snapshot:  # the device names another data folder
        watcher.snapshot = data / SNAPSHOT_NAME
        if not watcher.from_snapshot:
            watcher.keep_snapshot(configuration)
    first = configuration.device.aes[0] if configuration.device.aes else None
    host = host or (first.hostname if first and first.hostname else "127.0.0.1")
    port = port if port is not None else (first.port if first and first.port else 11112)
    node = Node(
        watcher,
        NodeSettings(
            host=host,
            port=port,
            data=data,
            worklist=worklist,
            secret=secret,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
        ),
    )
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        bound_host, bound_port = node.start()
    except OSError as exc:
        raise bind_error(exc, host, port) from None
    _err.print(
        f"coercion node {escape(', '.join(node.ae_titles))} listening on "
        f"{bound_host}:{bound_port}; rules from {escape(configuration.origin)}; "
        f"data in {escape(str(data))}"
    )
    try:
        with console_running(http, console_directory, watcher, node, f"{bound_host}:{bound_port}"):
            while not stopping.wait(0.5):
                pass
    finally:
        _err.print("stopping: letting associations finish")
        node.stop()
        _err.print("stopped")


cli.add_command(config)
cli.add_command(console)
cli.add_command(explain)
cli.add_command(store)
cli.add_command(profile)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to exit statuses."""
    try:
        cli.main(args=argv, prog_name="coercion", standalone_mode=False)
    except click.Abort:
        _err.print("Aborted!")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CoercionError as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err.print("Aborted!")
        sys.exit(130)
