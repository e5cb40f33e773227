"""De-identify folders: find DICOM files by content, mirror the tree, keep a key file.

:func:`plan` turns sources and a destination into tasks and refuses layouts
that could touch the sources. :func:`run` processes the tasks on a pool of
worker processes; each output is written atomically, so an interrupted run
leaves complete outputs only and ``resume`` picks up where it stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from coercion.dicom.elements import joined_text
from coercion.dicom.outputs import atomic_output, remove_stale_temporaries
from coercion.dicom.part10 import read_file, sniff
from coercion.directory import DEFAULT_DEVICE
from coercion.engine import (
    ActionEnv,
    Dimse,
    Engine,
    EventContext,
    Role,
    Rule,
    RuleSet,
    build_action,
)
from coercion.engine.pipeline import Coerced, apply_rules, prepare, write
from coercion.errors import (
    CoercionError,
    ConfigError,
    OutputError,
    RuleFailedError,
)
from coercion.profile import CompiledProfile, Deidentifier, Option, compile_profile
from coercion.profile.dicomdir import is_directory, write_directory_file
from coercion.profile.keys import DEFAULT_KEY_SCOPE, KeyScope, deidentify_scope
from coercion.profile.uids import UIDRemapper
from coercion.profile.verify import Retention

if TYPE_CHECKING:
    from coercion.directory.ldifio import Entry

__all__ = [
    "KEY_FILE_COLUMNS",
    "BatchSettings",
    "FileResult",
    "Summary",
    "Task",
    "plan",
    "run",
    "write_key_file",
]

log = logging.getLogger(__name__)

KEY_FILE_COLUMNS = (
    "source",
    "output",
    "original_patient_id",
    "new_patient_id",
    "original_patient_name",
    "new_patient_name",
    "original_study_instance_uid",
    "new_study_instance_uid",
    "original_series_instance_uid",
    "new_series_instance_uid",
    "original_sop_instance_uid",
    "new_sop_instance_uid",
)
_KEY_KEYWORDS = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
_SAFE_COMPONENT = re.compile(r"[^A-Za-z0-9._-]")
#: The status of a DICOMDIR set aside until the files it references are written.
DIRECTORY = "directory"
#: Where a DICOMDIR goes under ``--rename``: the root of the renamed tree, one for all.
DICOMDIR = "DICOMDIR"
_CHUNK_FILES = 32
_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Task:
    """One source file and where its output goes (relative to the destination)."""

    source: Path
    relative: Path
    size: int


@dataclass(frozen=True)
class BatchSettings:
    """What every worker needs: the options, the secret and the output layout."""

    options: frozenset[Option]
    secret: bytes
    destination: Path
    rename: bool = False
    resume: bool = False
    verify: bool = True
    #: Run the objects through the rules of these directory entries instead of ``options``.
    directory: list[Entry] | None = None
    directory_origin: str = ""
    device: str = DEFAULT_DEVICE
    calling_ae: str = ""
    called_ae: str = ""
    #: Apply this one URI (with the directory's scopes) instead of the directory's rules.
    uri: str | None = None
    #: The key scope of ``options`` (``deidentify/<key_scope>``), as a rule's ``key=``.
    key_scope: str = DEFAULT_KEY_SCOPE


@dataclass
class FileResult:
    """The outcome of one file; ``status`` is written, resumed, skipped or failed."""

    source: Path
    status: str
    output: Path | None = None
    reason: str = ""
    key_row: tuple[str, ...] | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    """Totals of a batch run."""

    results: list[FileResult] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        """How many files ended with *status*."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> list[FileResult]:
        """The files that could not be de-identified."""
        return [r for r in self.results if r.status == "failed"]


# -- planning --------------------------------------------------------------------


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def plan(sources: Iterable[Path], destination: Path) -> list[Task]:
    """List the files under *sources*, each with its path relative to *destination*.

    One source folder is mirrored into *destination* itself; several sources
    are mirrored each under its own name. Raises :class:`ConfigError` when the
    destination lies inside a source (or a source inside the destination), or
    when a source is missing.
    """
    roots = [Path(s) for s in sources]
    dst = destination.resolve()
    names: set[str] = set()
    tasks: list[Task] = []
    for root in roots:
        if not root.exists():
            raise ConfigError(f"{root}: no such file or folder")
        resolved = root.resolve()
        if _inside(dst, resolved) or _inside(resolved, dst):
            raise ConfigError(
                f"{destination}: destination overlaps source {root}; choose a folder outside it"
            )
        prefix = Path() if len(roots) == 1 else Path(resolved.name)
        if len(roots) > 1:
            if resolved.name in names:
                raise ConfigError(f"{root}: two sources are named {resolved.name!r}; rename one")
            names.add(resolved.name)
        if root.is_file():
            tasks.append(Task(root, prefix / root.name, root.stat().st_size))
            continue
        for path in _walk(root):
            if path.is_file() and not path.is_symlink():
                tasks.append(Task(path, prefix / path.relative_to(root), path.stat().st_size))
    return tasks


def _chunks(tasks: list[Task]) -> Iterator[list[Task]]:
    chunk: list[Task] = []
    size = 0
    for task in tasks:
        chunk.append(task)
        size += task.size
        if len(chunk) >= _CHUNK_FILES or size >= _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# -- the worker ----------------------------------------------------------------------


class _Worker:
    """Per-process state: the compiled profile and the keyed de-identifier."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        self.profile: CompiledProfile = compile_profile(settings.options)
        self.deidentifier = Deidentifier(
            self.profile, settings.secret, deidentify_scope(settings.key_scope)
        )
        self.engine: Engine | None = None
        if settings.directory is not None:
            from coercion.directory.config import build_configuration

            env = ActionEnv(settings.secret)
            configuration = build_configuration(
                settings.directory, settings.directory_origin, env, settings.device
            )
            rules = configuration.rules
            if settings.uri is not None:
                rules = RuleSet([command_line_rule(settings.uri, env)])
            self.engine = Engine(rules)

    def _coerce(self, ds: Dataset) -> Coerced:
        """Apply the rules or the options; say what the de-identification keeps (to verify)."""
        if self.engine is None:
            record = self.deidentifier.apply(ds)
            return Coerced(ds, True, self.profile, counts=dict(record.counts))
        ctx = EventContext(
            Dimse.C_STORE_RQ,
            Role.SCP,
            self.settings.calling_ae,
            self.settings.called_ae,
            sop_class_uid=joined_text(ds, "SOPClassUID"),
        )
        return apply_rules(self.engine, ctx)(ds)

    def process(self, task: Task) -> FileResult:
        if sniff(task.source) is None:
            return FileResult(task.source, "skipped", reason="not a DICOM file")
        try:
            return self._process(task)
        except RuleFailedError as exc:  # the file, the rule and the kind of failure: no value
            what = f"rule {exc.rule}: {exc.kind}" if exc.rule else str(exc)
            return FileResult(task.source, "failed", reason=f"{task.source}: {what}")
        except CoercionError as exc:
            return FileResult(task.source, "failed", reason=str(exc))
        except Exception as exc:  # any other failure names the file, never a value
            log.debug("unexpected error", exc_info=True)
            return FileResult(
                task.source, "failed", reason=f"{task.source}: {exc.__class__.__name__}"
            )

    def _process(self, task: Task) -> FileResult:
        ds = read_file(task.source)
        if is_directory(ds):
            # Its records copy the files it references: rebuilt once they are written.
            relative = Path(DICOMDIR) if self.settings.rename else task.relative
            return FileResult(task.source, DIRECTORY, relative)
        originals = [joined_text(ds, keyword) for keyword in _KEY_KEYWORDS]
        prepared = prepare(
            ds, self._coerce, verify=self.settings.verify, name=str(task.source), source=task.source
        )
        ds, counts = prepared.dataset, prepared.coerced.counts
        relative = self._output_path(ds, task)
        output = self.settings.destination / relative
        key_row = (
            str(task.source),
            str(relative),
            *(
                v
                for pair in zip(originals, (joined_text(ds, k) for k in _KEY_KEYWORDS), strict=True)
                for v in pair
            ),
        )
        if self.settings.resume and output.exists():
            return FileResult(task.source, "resumed", relative, key_row=key_row)
        encoded = prepared.encode()  # whether or not a rule changed it
        prepared.verify(encoded)
        try:
            # Not fsynced: a batch can be run again from its sources (the node's objects are).
            write(encoded, output, sync=False)
        except OSError as exc:
            raise OutputError(f"{output}: cannot write ({exc.strerror})") from exc
        return FileResult(task.source, "written", relative, key_row=key_row, counts=counts)

    def _output_path(self, ds: Dataset, task: Task) -> Path:
        if not self.settings.rename:
            return task.relative
        parts = [
            joined_text(ds, k) or "UNKNOWN"
            for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")
        ]
        name = (joined_text(ds, "SOPInstanceUID") or task.source.name) + ".dcm"
        return Path(*map(_path_component, [*parts, name]))


def command_line_rule(uri: str, env: ActionEnv) -> Rule:
    """A rule for *uri* on every object of a batch (C_STORE_RQ, SCP); ConfigError when bad."""
    try:
        action = build_action(uri, {}, env)
    except ValueError as exc:
        raise ConfigError(f"{uri}: {exc}") from None
    return Rule(
        name=uri,
        dn="(command line)",
        uri=uri,
        action=action,
        dimse=frozenset({Dimse.C_STORE_RQ}),
        role=Role.SCP,
    )


def _path_component(value: str) -> str:
    """*value* as one file name that stays where it is put.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``, and so does a
    leading dot: ``..`` (a value received as Study UID, kept under RetainUIDsOption)
    must not climb out of DST, nor a name look like a hidden or temporary file.
    """
    safe = _SAFE_COMPONENT.sub("_", value)
    return "_" + safe[1:] if safe.startswith(".") else safe


_WORKER: _Worker | None = None


def _init_worker(settings: BatchSettings) -> None:
    global _WORKER  # noqa: PLW0603 - one per worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _WORKER = _Worker(settings)


def _run_chunk(chunk: list[Task]) -> list[FileResult]:
    assert _WORKER is not None
    return [_WORKER.process(task) for task in chunk]


# -- the run -------------------------------------------------------------------------


def _remove_stale_temporaries(destination: Path) -> None:
    """Remove the temporary files a killed run left (``.NAME.XXXX.part``, never renamed)."""
    for path in remove_stale_temporaries(destination):
        log.info("removed a partial output left by an interrupted run: %s", path)


def run(
    tasks: list[Task],
    settings: BatchSettings,
    workers: int = 0,
    on_result: Callable[[FileResult], None] | None = None,
) -> Summary:
    """Process *tasks*; call *on_result* for each file as it finishes.

    ``workers`` 0 means one process per core; 1 runs in this process. On
    Ctrl-C the files in flight are finished, the rest are left for
    ``resume``, and the summary is marked interrupted.
    """
    summary = Summary()
    workers = workers or os.cpu_count() or 1
    if settings.resume:
        _remove_stale_temporaries(settings.destination)

    directories: list[FileResult] = []

    def note(result: FileResult) -> None:
        if result.status == DIRECTORY:
            directories.append(result)  # written once the files it references are
            return
        summary.results.append(result)  # recorded before anything else can interrupt
        _log_result(result)
        if on_result is not None:
            on_result(result)

    if workers == 1 or len(tasks) <= 1:
        worker = _Worker(settings)
        try:
            for task in tasks:
                note(worker.process(task))
        except KeyboardInterrupt:
            summary.interrupted = True
        return _finish(summary, directories, settings, note)
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("fork"),
        initializer=_init_worker,
        initargs=(settings,),
    )
    submitted: list[Future[list[FileResult]]] = []
    recorded: dict[Future[list[FileResult]], int] = {}

    def drain(future: Future[list[FileResult]]) -> None:
        """Note the results of *future* not noted yet (an interrupt may come mid-way)."""
        results = future.result()
        while recorded.get(future, 0) < len(results):
            index = recorded.get(future, 0)
            recorded[future] = index + 1
            note(results[index])

    pending: set[Future[list[FileResult]]] = set()
    try:
        for chunk in _chunks(tasks):
            future = executor.submit(_run_chunk, chunk)
            submitted.append(future)
            pending.add(future)
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for finished in done:
                    drain(finished)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for finished in done:
                drain(finished)
    except KeyboardInterrupt:
        summary.interrupted = True
        executor.shutdown(wait=True, cancel_futures=True)
        for future in submitted:
            if future.done() and not future.cancelled():
                drain(future)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return _finish(summary, directories, settings, note)


def _log_result(result: FileResult) -> None:
    if result.status == "failed":
        log.info("failed: %s", result.reason)
    elif result.status == "skipped":
        log.info("skipped %s: %s", result.source, result.reason)


def _finish(
    summary: Summary,
    directories: list[FileResult],
    settings: BatchSettings,
    note: Callable[[FileResult], None],
) -> Summary:
    """Write the DICOMDIRs set aside, now that the files they reference are done."""
    if summary.interrupted:
        return summary  # left for resume, with the files still to do
    outputs = {
        r.source.resolve(): settings.destination / r.output
        for r in summary.results
        if r.status in ("written", "resumed") and r.output is not None
    }
    groups: dict[Path, list[FileResult]] = {}
    for result in directories:
        assert result.output is not None
        groups.setdefault(result.output, []).append(result)
    try:
        for relative, results in groups.items():
            sources = [r.source for r in results]
            try:
                status = write_directory_file(
                    settings.destination / relative,
                    sources,
                    outputs,
                    uid=_file_set_uid(settings),
                    resume=settings.resume,
                    retention=_directory_retention(settings),
                )
            except CoercionError as exc:
                for source in sources:
                    note(FileResult(source, "failed", reason=str(exc)))
                continue
            except Exception as exc:  # as for any file: named, never a value
                log.debug("unexpected error", exc_info=True)
                for source in sources:
                    note(FileResult(source, "failed", reason=f"{source}: {exc.__class__.__name__}"))
                continue
            for result in results:
                note(FileResult(result.source, status, relative, key_row=_directory_row(result)))
    except KeyboardInterrupt:
        summary.interrupted = True  # the DICOMDIRs not written are left for resume
    return summary


def _file_set_uid(settings: BatchSettings) -> Callable[[str], str]:
    """The new File-set UID of a source's: kept under RetainUIDsOption, else keyed as U."""
    if settings.directory is None and Option.RetainUIDsOption in settings.options:
        return str
    return UIDRemapper(KeyScope(settings.secret, deidentify_scope(settings.key_scope)).uid).remap


def _directory_retention(settings: BatchSettings) -> Retention | None:
    """What a DICOMDIR's records are verified against (the options); None: not verified.

    Under directory rules, what each rule keeps is known per object only: the
    records, made from outputs verified under their rules, are not checked again.
    """
    if not settings.verify or settings.directory is not None:
        return None
    return compile_profile(settings.options)


def _directory_row(result: FileResult) -> tuple[str, ...]:
    """The key file row of a DICOMDIR: its source and output, no patient of its own."""
    return (str(result.source), str(result.output), *[""] * (len(KEY_FILE_COLUMNS) - 2))


def write_key_file(path: Path, results: Iterable[FileResult]) -> int:
    """Write the key file (CSV, mode 0600, atomically); return the number of rows."""
    rows = sorted(r.key_row for r in results if r.key_row is not None)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(KEY_FILE_COLUMNS)
    writer.writerows(rows)
    try:
        with atomic_output(path, mode=0o600) as fd, open(fd, "wb", closefd=False) as handle:
            handle.write(buffer.getvalue().encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write key file ({exc.strerror})") from exc
    return len(rows)
