"""Run a batch on a Dask cluster: chunks of files go to the workers of one scheduler.

``coercion deidentify --cluster tcp://HOST:8786`` plans the files here, sends
chunks of them (:func:`coercion.batch.chunks`) to the cluster and records the
results as they complete. Each chunk runs :meth:`coercion.batch.Worker.process`,
the same per-file work as a local run, so the outputs are the same bytes: the
values are derived from the key, which every worker reads from the same path
(the secret itself never travels to the scheduler), and the worker checks its
key's fingerprint against the client's. Sources and destination are local
paths every worker sees (a shared file system) or fsspec URLs (``s3://``).

A worker that dies is replaced by the scheduler, which runs its chunks again
elsewhere; every output is written atomically (:mod:`coercion.locations`), so
a file written twice holds the same bytes and no partial file stays. After the
client dies, ``--resume`` skips the outputs that exist.

dask and distributed are imported only here, and only for ``--cluster``.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from coercion.batch import (
    BatchSettings,
    FileResult,
    Results,
    Summary,
    Task,
    Worker,
    chunks,
    remove_partial_outputs,
)
from coercion.errors import CoercionError, ConfigError, map_errors
from coercion.profile.keys import fingerprint, load_or_create_secret

__all__ = ["run"]

log = logging.getLogger(__name__)

#: How long the client waits for the scheduler to answer.
CONNECT_TIMEOUT = "10s"

#: Per worker thread: the state of the run it serves, as (run id, worker).
_local = threading.local()


def run(
    tasks: list[Task],
    settings: BatchSettings,
    address: str,
    key_path: Path,
    on_result: Callable[[FileResult], None] | None = None,
) -> Summary:
    """Process *tasks* on the workers of the Dask scheduler at *address*.

    Workers read the key from *key_path* (the same file on every machine).
    On Ctrl-C the chunks not done are cancelled and left for ``resume``.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError(
            "--cluster needs the cluster extra; pip install 'coercion[cluster]'"
        ) from None
    results = Results(on_result)
    if settings.resume:
        remove_partial_outputs(settings.destination)
    remote = dataclasses.replace(settings, secret=b"")
    expected = fingerprint(settings.secret)
    run_id = secrets.token_hex(8)
    with map_errors(
        {(OSError, TimeoutError, ValueError): ConfigError},
        f"--cluster {address}: cannot reach the Dask scheduler",
        hint="start one with 'dask scheduler' and give its address",
    ):
        client = Client(address, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    lost = map_errors(
        {Exception: CoercionError},
        f"--cluster {address}: the cluster failed",
        hint="the outputs written are complete; run again with --resume",
    )
    with client, lost:
        shared = client.scatter(remote, broadcast=True)  # type: ignore[no-untyped-call]
        key = str(key_path.resolve())
        futures = [
            client.submit(run_chunk, chunk, shared, key, expected, run_id, pure=False)
            for chunk in chunks(tasks)
        ]
        log.info("%d chunks sent to %s", len(futures), address)
        try:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                for result in future.result():
                    results.note(result)
        except KeyboardInterrupt:
            results.summary.interrupted = True
            client.cancel(futures)  # type: ignore[no-untyped-call]
    summary = results.finish(settings)
    if not summary.interrupted:
        remove_partial_outputs(settings.destination)  # left by a worker killed mid-write
    return summary


def run_chunk(
    chunk: list[Task], settings: BatchSettings, key_path: str, expected: str, run_id: str
) -> list[FileResult]:
    """On a worker: process *chunk* with the run's settings and this machine's key file."""
    current: tuple[str, Worker] | None = getattr(_local, "current", None)
    if current is None or current[0] != run_id:
        secret = load_or_create_secret(Path(key_path), create=False)
        if fingerprint(secret) != expected:
            raise ConfigError(
                f"{key_path}: this worker's key (fingerprint {fingerprint(secret)}) is not "
                f"the client's ({expected}); give every worker a copy of the same key file"
            )
        current = (run_id, Worker(dataclasses.replace(settings, secret=secret)))
        _local.current = current
    worker = current[1]
    return [worker.process(task) for task in chunk]
