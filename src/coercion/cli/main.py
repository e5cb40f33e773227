"""The ``coercion`` command line: the only module that prints or exits."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from coercion import __version__, batch
from coercion.cli.checks import check_tls, prepare_data_folder
from coercion.cli.config import config, directory_options, explain, open_source, with_options
from coercion.cli.console import console, console_running, http_options, split_options
from coercion.cli.logs import configure_logging
from coercion.cli.profile import profile
from coercion.cli.store import store
from coercion.defaults import DATA_DIRECTORY
from coercion.engine import ActionEnv
from coercion.errors import CoercionError
from coercion.locations import Location, parse
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


_VERIFY_OPTION = click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each de-identified output for its source's identifying values: one that "
    "still holds any fails and is not written.",
)
_KEY_OPTION = click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Secret key file; created (mode 0600) when absent. Default: {DEFAULT_KEY_PATH}",
)


_PATHS_ARGUMENT = click.argument("paths", nargs=-1, required=True)


def _storage_options(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> dict[str, Any]:
    if not value:
        return {}
    try:
        options = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg})") from None
    if not isinstance(options, dict):
        raise click.BadParameter('a JSON object, e.g. {"endpoint_url": "http://HOST:9000"}')
    return options


def _cluster_options(function: Any) -> Any:
    """--cluster, --store and --storage-options: a batch beyond one machine."""
    options = [
        click.option(
            "--cluster",
            metavar="ADDRESS",
            envvar="COERCION_CLUSTER",
            help="Run on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786; "
            "$COERCION_CLUSTER). Every worker reads --key from the same path.",
        ),
        click.option(
            "--store",
            "store_url",
            metavar="URL",
            default="",
            help="The pseudonym store of every rule, instead of the directory's "
            "(postgresql+psycopg://USER:PW@HOST/DB: a cluster's workers share one).",
        ),
        click.option(
            "--storage-options",
            metavar="JSON",
            envvar="COERCION_STORAGE_OPTIONS",
            callback=_storage_options,
            help="fsspec options for s3://... (and other URL) sources and destinations, "
            'e.g. {"endpoint_url": "http://HOST:9000"} ($COERCION_STORAGE_OPTIONS).',
        ),
    ]
    return with_options(function, options)


def _locations(paths: tuple[str, ...]) -> tuple[list[Location], Location]:
    """SRC... and DST: local paths or fsspec URLs."""
    if len(paths) < 2:
        raise click.UsageError("give at least one SRC and a DST")
    *sources, destination = (parse(p) for p in paths)
    return sources, destination


@cli.command()
@_PATHS_ARGUMENT
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
@_VERIFY_OPTION
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
@_cluster_options
@directory_options
def deidentify(
    paths: tuple[str, ...],
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
    cluster: str | None,
    store_url: str,
    storage_options: dict[str, Any],
    **directory: Any,
) -> None:
    """De-identify DICOM files under SRC... into DST (the last path).

    With --option (or nothing) every file gets the PS3.15 Basic Profile and
    the options. With --rules (implied by --config-dir, --ldap, --calling or
    --called) every file goes through the directory's rules as a C-STORE
    received by this node (C_STORE_RQ, SCP) from --calling to --called.
    """
    sources, destination = _locations(paths)
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
        entries, origin = _read_directory(directory, device)
        from coercion.directory.config import build_configuration

        # Fail early, with every problem listed, before any worker starts.
        env = ActionEnv(secret, store_override=store_url)
        configuration = build_configuration(entries, origin, env, device)
        log.info("%d rules from %s", len(configuration.rules), origin)
        _check_shared_store(cluster, env)
    tasks = batch.plan(sources, destination, storage_options)
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
        store_url=store_url,
        storage_options=storage_options,
    )
    started = time.perf_counter()
    summary = _run_with_progress(tasks, settings, workers, cluster, key)
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


def _read_directory(directory: dict[str, Any], device: str) -> tuple[list[Any], str]:
    """The entries node *device* reads from the directory the options name, and their origin."""
    source = open_source(directory)
    try:
        return source.entries(device), source.origin
    finally:
        source.close()


def _check_shared_store(cluster: str | None, env: ActionEnv) -> None:
    """Refuse a cluster run whose workers would each number pseudonyms in a store of their own."""
    urls = [env.store_url, *env.store_urls.values()]
    if cluster and any(url.startswith("sqlite") for url in urls):
        raise click.UsageError(
            "--cluster: the directory's pseudonym store is a SQLite file, one per worker; "
            "give every worker one shared store with --store postgresql+psycopg://..."
        )


def _run(
    tasks: list[batch.Task],
    settings: batch.BatchSettings,
    workers: int,
    cluster: str | None,
    key: Path | None,
    on_result: Callable[[batch.FileResult], None] | None = None,
) -> batch.Summary:
    """The batch on this machine's processes, or on the Dask cluster at *cluster*."""
    if cluster is None:
        return batch.run(tasks, settings, workers, on_result=on_result)
    from coercion import cluster as dask_cluster  # dask only for --cluster

    return dask_cluster.run(tasks, settings, cluster, key or DEFAULT_KEY_PATH, on_result)


def _run_with_progress(
    tasks: list[batch.Task],
    settings: batch.BatchSettings,
    workers: int,
    cluster: str | None = None,
    key: Path | None = None,
) -> batch.Summary:
    if not _err.is_terminal:
        return _run(tasks, settings, workers, cluster, key)
    from rich.progress import (  # a bar only on a terminal: imported then
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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

        return _run(tasks, settings, workers, cluster, key, advance)


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
@_PATHS_ARGUMENT
@_KEY_OPTION
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, help="Processes (0: one per core)."
)
@click.option("--resume", is_flag=True, help="Skip outputs that already exist.")
@_cluster_options
@directory_options
def reidentify(
    scope: str,
    paths: tuple[str, ...],
    key: Path | None,
    workers: int,
    resume: bool,
    cluster: str | None,
    store_url: str,
    storage_options: dict[str, Any],
    **directory: Any,
) -> None:
    """Re-identify objects returning from SCOPE under SRC... into DST (the last path).

    Every file goes through reidentify:SCOPE: identity, UIDs, dates and study-level
    values come back from the store; a file whose pseudonym the scope does not know
    fails. The scope (and the store) are the directory's.
    """
    sources, destination = _locations(paths)
    device = directory.pop("device")
    secret = load_or_create_secret(key)
    entries, origin = _read_directory(directory, device)
    from coercion.directory.config import build_configuration

    env = ActionEnv(secret, store_override=store_url)
    build_configuration(entries, origin, env, device)  # the scopes, every problem listed
    batch.command_line_rule(f"reidentify:{scope}", env)  # an unknown scope fails here
    _check_shared_store(cluster, env)
    tasks = batch.plan(sources, destination, storage_options)
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
        store_url=store_url,
        storage_options=storage_options,
    )
    started = time.perf_counter()
    summary = _run_with_progress(tasks, settings, workers, cluster, key)
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
    help=f"Data folder (default: the device's coercionDataDirectory, {DATA_DIRECTORY}).",
)
@click.option(
    "--worklist",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Worklist items (*.dcm) answered by the worklist SCP (default: DATA/worklist).",
)
@_KEY_OPTION
@_VERIFY_OPTION
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
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    help="Processes accepting associations on the one address (0: one per core).",
)
@http_options
@directory_options
def serve(
    host: str | None,
    port: int | None,
    data: Path | None,
    worklist: Path | None,
    key: Path | None,
    verify: bool,
    poll_interval: float | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    workers: int,
    **directory: Any,
) -> None:
    """Run the DICOM node: C-ECHO, storage, worklist and MPPS, coerced by the directory's rules.

    With several workers (the default: one per core) each is a process with
    its own copy of the rules, accepting associations from the one listening
    socket; forwarding, the audit trail and the pseudonym store stay one.
    """
    from coercion.cli import serving
    from coercion.directory.watch import SNAPSHOT_NAME, ConfigurationWatcher
    from coercion.net import metrics
    from coercion.net.node import Node, NodeSettings
    from coercion.net.peers import TLSFiles
    from coercion.net.workers import worker_count

    # Every file the node makes is private, also those a library creates with its own
    # mode (the metrics files of prometheus_client, SQLite's journals): the workers inherit it.
    os.umask(0o077)
    http, console_directory = split_options(directory)
    device = directory.pop("device")
    directory_choice = dict(directory)  # open_source takes its options out
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    check_tls(tls_cert, tls_key, tls_ca)
    secret = load_or_create_secret(key)
    source = open_source(directory)
    env = ActionEnv(
        secret,
        data_directory=str(data) if data is not None else "",
        worklist_directory=str(worklist) if worklist is not None else "",
        client_tls=TLSFiles(tls_cert, tls_key, tls_ca).client(),  # as the node calls TLS peers
    )
    # The snapshot of the last good configuration is known before the directory is read: it
    # stands in when the directory is down or invalid. Without --data, the default folder's
    # (only when it is there: the device may name another data folder).
    if data is not None:
        prepare_data_folder(data)
    snapshot: Path | None = (data or Path(DATA_DIRECTORY)) / SNAPSHOT_NAME
    if data is None and snapshot is not None and not snapshot.exists():
        snapshot = None
    watcher = ConfigurationWatcher(source, env, device, poll_interval, snapshot)
    configuration = watcher.load_initial()
    data = data or Path(configuration.settings.data_directory)
    prepare_data_folder(data)
    if data / SNAPSHOT_NAME != snapshot:  # the device names another data folder
        watcher.snapshot = data / SNAPSHOT_NAME
        if not watcher.from_snapshot:
            watcher.keep_snapshot(configuration)
    first = configuration.device.aes[0] if configuration.device.aes else None
    host = host or (first.hostname if first and first.hostname else "127.0.0.1")
    port = port if port is not None else (first.port if first and first.port else 11112)
    node_settings = NodeSettings(
        host=host,
        port=port,
        data=data,
        worklist=worklist,
        secret=secret,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        verify=verify,
    )
    stopping = serving.stop_on_signals()
    count = worker_count(workers)

    def with_console(
        titles: Callable[[], list[str]], address: str
    ) -> AbstractContextManager[object]:
        return console_running(http, console_directory, watcher, node_settings, titles, address)

    with metrics.counting(data):  # before any count; the workers inherit it
        if count == 1:
            node = Node(watcher, node_settings)
            serving.serve_one(node, configuration.origin, stopping, with_console)
            return
        # Each worker watches the directory itself; this watcher is the console's view of it.
        if not http["no_http"]:
            watcher.start()
        factory = functools.partial(
            serving.worker_node,
            directory_choice,
            device,
            poll_interval,
            (env.data_directory, env.worklist_directory),
            node_settings,
            _verbosity(),
        )
        try:
            serving.serve_workers(
                count, factory, node_settings, configuration.origin, stopping, with_console
            )
        finally:
            watcher.stop()


def _verbosity() -> int:
    """The -v/-q level the command line was given (for the worker processes' logging)."""
    params = click.get_current_context().find_root().params
    return -1 if params.get("quiet") else int(params.get("verbose") or 0)


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
