"""Running ``coercion serve``'s node: in this process, or as N worker processes.

With several workers (``--workers``, default one per core) each is a process
with its own copy of the rules, accepting associations from the one listening
socket (:mod:`coercion.net.workers`); forwarding, association limits, the
audit trail and the pseudonym store stay one across them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from coercion.cli.checks import bind_error
from coercion.cli.config import open_source
from coercion.cli.logs import configure_logging
from coercion.engine import ActionEnv
from coercion.errors import CoercionError

if TYPE_CHECKING:
    from coercion.net.node import Node, NodeSettings

#: What runs beside the node while it serves (the console), given the node's AE titles
#: (read when needed) and the address it listens on ("host:port").
Beside = Callable[[Callable[[], list[str]], str], AbstractContextManager[object]]

__all__ = ["Beside", "serve_one", "serve_workers", "stop_on_signals", "worker_node"]

log = logging.getLogger("coercion.cli")
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set (the node then stops cleanly)."""
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stopping


def _nothing(_titles: Callable[[], list[str]], _address: str) -> AbstractContextManager[object]:
    return nullcontext()


def serve_one(
    node: Node, origin: str, stopping: threading.Event, beside: Beside = _nothing
) -> None:
    """Run *node* in this process until *stopping*, with *beside* while it listens."""
    settings = node.settings
    try:
        bound_host, bound_port = node.start()
    except OSError as exc:
        raise bind_error(exc, settings.host, settings.port) from None
    _listening(node.ae_titles, bound_host, bound_port, origin, settings.data)
    try:
        with beside(lambda: node.ae_titles, f"{bound_host}:{bound_port}"):
            while not stopping.wait(0.5):
                pass
    finally:
        _err.print("stopping: letting associations finish")
        node.stop()
        _err.print("stopped")


def _listening(titles: list[str], host: str, port: int, origin: str, data: Path) -> None:
    _err.print(
        f"coercion node {escape(', '.join(titles))} listening on "
        f"{host}:{port}; rules from {escape(origin)}; data in {escape(str(data))}"
    )


def serve_workers(
    count: int,
    factory: Callable[[int], Node],
    settings: NodeSettings,
    origin: str,
    stopping: threading.Event,
    beside: Beside = _nothing,
) -> None:
    """Listen, run *count* worker processes until *stopping*, then stop them all.

    *beside* runs in this process while they serve.
    """
    from coercion.net.node import remove_stale
    from coercion.net.workers import Supervisor, WorkerFailedError, listen

    try:
        listener = listen(settings.host, settings.port)
    except OSError as exc:
        raise bind_error(exc, settings.host, settings.port) from None
    remove_stale(settings.data)  # before any worker writes
    supervisor = Supervisor(count, factory, listener)
    try:
        titles = supervisor.start()
    except WorkerFailedError as exc:
        raise CoercionError(f"coercion serve: {exc}") from None
    bound_host, bound_port = listener.getsockname()[:2]
    _listening(titles, str(bound_host), int(bound_port), origin, settings.data)
    log.info("%d workers, pids %s", count, ", ".join(map(str, supervisor.pids())))
    try:
        with beside(lambda: titles, f"{bound_host}:{bound_port}"):
            supervisor.wait(stopping)
    finally:
        _err.print("stopping: letting associations finish")
        supervisor.stop()
        _err.print("stopped")


def worker_node(
    directory: dict[str, Any],
    device: str,
    poll_interval: float | None,
    env_folders: tuple[str, str],
    settings: NodeSettings,
    verbosity: int,
    index: int,
) -> Node:
    """Worker *index*'s node, built in its own process: its own directory watcher and engine.

    *env_folders* are the data and worklist folders the command line named ("": none).
    """
    from coercion.directory.watch import SNAPSHOT_NAME, ConfigurationWatcher
    from coercion.net.node import Node

    configure_logging(verbosity, index)
    data_directory, worklist_directory = env_folders
    env = ActionEnv(
        settings.secret,
        data_directory=data_directory,
        worklist_directory=worklist_directory,
        client_tls=settings.tls.client(),  # merge-mwl: asks TLS peers as the node sends to them
    )
    source = open_source(dict(directory))
    snapshot = settings.data / SNAPSHOT_NAME
    watcher = ConfigurationWatcher(source, env, device, poll_interval, snapshot)
    watcher.load_initial()
    return Node(watcher, replace(settings, worker=index))
