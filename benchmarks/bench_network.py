"""Benchmark the ``coercion serve`` storage SCP against dcmtk's ``storescp``.

Two data sets are generated once (deterministic, cached under ``benchmarks/.data/network``):

* ``small``: 500 small CT-like objects (32x32 pixels, a few KB) with made-up PHI (names, IDs,
  dates, UIDs, sequences nested up to four levels), new UIDs per file, over 10 studies;
* ``ct``: 100 CT slices of 512x512 ``uint16`` (about 0.5 MB each), one series.

All files are Explicit VR Little Endian. Each data set is sent by dcmtk's
``storescu +sd -aec AE -aet CT01 127.0.0.1 PORT DIR`` (one association) to each row's server,
and the whole ``storescu`` process is timed with :func:`time.perf_counter`. Rows:

* ``coercion COERCION``: ``python -m coercion serve``, called AE ``COERCION`` (no rule applies:
  the node stores the bytes as received);
* ``coercion RESEARCH``: another ``coercion serve``, called AE ``RESEARCH`` (its
  ``deidentify:`` rule, PS3.15 de-identification, runs before the object is stored);
* ``storescp``: dcmtk's ``storescp -od OUTDIR -uf PORT``, the baseline.

``TCP_NODELAY=1`` is in the environment of every dcmtk process and of the node (dcmtk on
Debian keeps Nagle's algorithm on without it). Each row's server is started once per data set
and is ready (``echoscu`` answers, one untimed file stored) before the first timed run; its
output folder is wiped before every run. With ``--repeat N`` the rows take turns for N rounds
and the median is reported. After every run the number of stored files must equal the number
sent, and one stored object is read back: still identified on ``COERCION``, de-identified on
``RESEARCH``.

The targets are printed with PASS or MISS; a miss still exits 0. The exit status is 1 when a
run fails (a server does not start, ``storescu`` fails, a stored-file count differs, or the
read-back check fails). No server is left running on any exit path.

``--profile`` adds, after the timed rounds, one run of the small set to each coercion row
under ``_profile_serve.py`` (CPU time of every thread) and prints the top functions.

Usage::

    python benchmarks/bench_network.py [--quick] [--only small|ct] [--repeat N] [--profile]
        [--data DIR] [--work DIR] [--config-dir DIR] [--dcmtk-bin DIR] [--top N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from bench_deidentify import version_of
from make_data import (
    CT_FIXED,
    add_image_pixels,
    add_patient_and_study,
    bench_uid,
    ct_pixels,
    make_patient,
    make_study,
    new_file_dataset,
    set_attributes,
)

BENCH_DIR = Path(__file__).resolve().parent
PROFILE_SCRIPT = BENCH_DIR / "_profile_serve.py"

#: Bump when the content of the generated files changes, so stale data are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".network_data.json"
FULL_SIZES = {"small": 500, "ct": 100}
QUICK_SIZES = {"small": 50, "ct": 10}
DATA_SETS = ("small", "ct")
SMALL_STUDIES = 10
SMALL_SERIES_PER_STUDY = 2
SMALL_MATRIX = 32
SMALL_SEED = 20_240_611
#: A fixed 256-bit key (hex) written to WORK/bench.key.
BENCH_KEY_HEX = "5eed" * 16

HOST = "127.0.0.1"
CALLING_AE = "CT01"
STORESCP_AE = "STORESCP"
DCMTK_ENV = {"TCP_NODELAY": "1"}
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

PASSTHROUGH = "coercion COERCION"
RESEARCH = "coercion RESEARCH"
STORESCP = "storescp"
ORTHANC = "Orthanc"
ORTHANC_AE = "ORTHANC"
#: The concurrent load: this many storescu processes at once share the small set.
CONCURRENT = 8
#: The worker counts of the coercion rows under the concurrent load.
CONCURRENT_WORKERS = (1, 2)


# -- data -------------------------------------------------------------------------------------


def small_dataset(index: int, count: int) -> Dataset:
    """Return small object ``index`` of ``count``: CT-like, 32x32 pixels, PHI, new UIDs."""
    per_study = -(-count // SMALL_STUDIES)  # ceil division
    study_index, local = divmod(index, per_study)
    series = local * SMALL_SERIES_PER_STUDY // per_study
    study = make_study(make_patient(study_index), study_index, "CT")
    study = replace(study, uid=bench_uid("network", "small", "study", study_index))
    series_uid = bench_uid("network", "small", "series", study_index, series)
    ds = new_file_dataset(CTImageStorage, bench_uid("network", "small", "image", index))
    add_patient_and_study(ds, study, series_uid, CTImageStorage)
    set_attributes(ds, CT_FIXED)
    set_attributes(
        ds,
        {
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": series + 1,
            "InstanceNumber": local + 1,
            "FrameOfReferenceUID": bench_uid("network", "small", "frame", study_index),
            "ImagePositionPatient": [-250.0, -250.0, -1.25 * local],
            "ImageComments": f"Scanned for {study.patient.name} by OPERATOR^OLGA",
        },
    )
    rng = np.random.default_rng((SMALL_SEED, index))
    pixels = rng.integers(0, 4096, size=(SMALL_MATRIX, SMALL_MATRIX), dtype=np.uint16)
    add_image_pixels(ds, pixels, bits_stored=12)
    return ds


def ct_slice_dataset(index: int, count: int) -> Dataset:
    """Return slice ``index`` of a ``count``-slice CT series: 512x512 ``uint16`` with PHI."""
    study = make_study(make_patient(SMALL_STUDIES), SMALL_STUDIES, "CT")
    study = replace(study, uid=bench_uid("network", "ct", "study"))
    series_uid = bench_uid("network", "ct", "series")
    ds = new_file_dataset(CTImageStorage, bench_uid("network", "ct", "image", index))
    add_patient_and_study(ds, study, series_uid, CTImageStorage)
    set_attributes(ds, CT_FIXED)
    z = -100.0 - 1.25 * index
    set_attributes(
        ds,
        {
            "SeriesInstanceUID": series_uid,
            "InstanceNumber": index + 1,
            "FrameOfReferenceUID": bench_uid("network", "ct", "frame"),
            "ImagePositionPatient": [-250.0, -250.0, z],
            "SliceLocation": f"{z:.2f}",
            "ImageComments": f"Scanned for {study.patient.name} by OPERATOR^OLGA",
        },
    )
    add_image_pixels(ds, ct_pixels(index, count), bits_stored=12)
    return ds


def ensure_network_data(root: Path, sizes: dict[str, int]) -> None:
    """Write ``root/small`` and ``root/ct`` unless the marker says they are current."""
    marker_path = root / MARKER_NAME
    wanted = {"generator_version": GENERATOR_VERSION, **sizes}
    try:
        if json.loads(marker_path.read_text()) == wanted:
            return
    except (OSError, ValueError):
        pass
    marker_path.unlink(missing_ok=True)
    makers = {"small": small_dataset, "ct": ct_slice_dataset}
    for name in DATA_SETS:
        folder = root / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        total = 0
        for index in range(sizes[name]):
            path = folder / f"IM{index + 1:05d}.dcm"
            dcmwrite(path, makers[name](index, sizes[name]), enforce_file_format=True)
            total += path.stat().st_size
        print(f"data: wrote {sizes[name]} {name} files ({total / 1e6:.1f} MB) to {folder}")
    marker_path.write_text(json.dumps(wanted, indent=2) + "\n")


@dataclass(frozen=True)
class Input:
    """A data set's folder: files and bytes."""

    name: str
    path: Path
    files: list[Path]
    size: int


def scan_and_warm(name: str, path: Path) -> Input:
    """List the files of ``path`` (sorted) and read each once, untimed, to warm the cache."""
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    size = 0
    for file in files:
        size += len(file.read_bytes())
    return Input(name, path, files, size)


def stored_files(folder: Path) -> list[Path]:
    """Return the complete files below ``folder`` (hidden temporary files excluded), sorted."""
    found: list[Path] = []
    for parent, _, filenames in os.walk(folder):
        found.extend(Path(parent) / n for n in filenames if not n.startswith("."))
    return sorted(found)


# -- servers ------------------------------------------------------------------------------------


class BenchError(Exception):
    """A run that failed: the benchmark exits 1."""


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on the loopback interface that are free right now."""
    with ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((HOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def find_dcmtk(explicit: Path | None) -> Path:
    """Return the folder of dcmtk's tools: ``explicit``, else the first on PATH.

    pynetdicom installs Python apps of the same names (``storescu``, ``echoscu``,
    ``storescp``) into the virtual environment, ahead of dcmtk on PATH once it is
    activated; those are skipped (a script starts with ``#!``, a dcmtk tool is a binary).
    """
    folders = [explicit] if explicit else [Path(p) for p in os.get_exec_path() if p]
    for folder in folders:
        tool = folder / "storescu"
        try:
            with tool.open("rb") as handle:
                if handle.read(2) != b"#!" and os.access(tool, os.X_OK):
                    return folder.resolve()
        except OSError:
            continue
    where = explicit or "PATH"
    raise BenchError(f"{where}: no dcmtk storescu; install dcmtk or give --dcmtk-bin DIR")


def child_env() -> dict[str, str]:
    """Return the environment of every child process: ours plus ``TCP_NODELAY=1``."""
    return {**os.environ, **DCMTK_ENV}


@dataclass
class Server:
    """A storage SCP process for one row: how to start it, where it stores objects."""

    row: str
    called_ae: str
    argv: list[str]
    out: Path
    port: int
    log: Path
    dcmtk: Path
    process: subprocess.Popen[bytes] | None = None
    #: Started again with empty storage before every run (Orthanc: its index lives beside it).
    fresh: Path | None = None

    def start(self) -> None:
        """Start the process; return once ``echoscu`` gets an answer."""
        self.out.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            log.write(f"$ {shlex.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=child_env()
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.echo():
            if self.process.poll() is not None:
                raise BenchError(f"{self.row}: server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.row}: no C-ECHO answer in {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def echo(self) -> bool:
        """Return whether a C-ECHO to the server succeeds."""
        argv = [
            str(self.dcmtk / "echoscu"),
            "-aec",
            self.called_ae,
            "-aet",
            CALLING_AE,
            HOST,
            str(self.port),
        ]
        done = subprocess.run(argv, capture_output=True, env=child_env(), check=False)
        return done.returncode == 0

    def stop(self) -> None:
        """Terminate the process (SIGTERM) and wait for it; kill it if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the running process."""
        if self.process is not None:
            self.process.send_signal(signum)

    def wipe(self) -> None:
        """Empty the output folder (the folder itself stays); a fresh server starts again."""
        if self.fresh is not None:
            self.stop()
            shutil.rmtree(self.fresh, ignore_errors=True)
            self.start()
            return
        for child in self.out.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


@dataclass(frozen=True)
class Setup:
    """What the servers need: the work folder, the coercion command and its options."""

    work: Path
    key: Path
    coercion: list[str]
    config_dir: Path | None
    dcmtk: Path
    orthanc: Path | None = None


def coercion_server(
    setup: Setup,
    row: str,
    called_ae: str,
    port: int,
    prefix: Sequence[str],
    workers: int | None = None,
) -> Server:
    """Return the ``coercion serve`` server of ``row`` (``prefix`` runs the CLI).

    ``workers`` adds ``--workers N``; without it the node runs its default (one per core).
    """
    slug = called_ae.lower() + (f"-w{workers}" if workers else "")
    data = setup.work / f"coercion-{slug}"
    argv = [*prefix, "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data", str(data), "--key", str(setup.key)]
    if workers:
        argv += ["--workers", str(workers)]
    if setup.config_dir is not None:
        argv += ["--config-dir", str(setup.config_dir)]
    log = setup.work / "logs" / f"serve-{slug}.log"
    return Server(row, called_ae, argv, data / "objects", port, log, setup.dcmtk)


def storescp_server(setup: Setup, port: int, fork: bool = False) -> Server:
    """Return dcmtk's storescp (``--fork``: one process per association, for concurrent load)."""
    out = setup.work / "storescp"
    argv = [str(setup.dcmtk / "storescp"), *(["--fork"] if fork else [])]
    argv += ["-aet", STORESCP_AE, "-od", str(out), "-uf", str(port)]
    return Server(
        STORESCP, STORESCP_AE, argv, out, port, setup.work / "logs" / "storescp.log", setup.dcmtk
    )


def orthanc_server(setup: Setup, port: int) -> Server:
    """Return Orthanc on a generated configuration (DICOM only, no plugins), empty every run.

    Its settings are Orthanc's defaults otherwise (4 DICOM threads, storage synced to disk).
    """
    if setup.orthanc is None:
        raise BenchError("Orthanc is not installed (apt-get install orthanc) or give --no-orthanc")
    folder = setup.work / "orthanc"
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "state"
    config = {
        "Name": "coercion-bench",
        "StorageDirectory": str(state / "storage"),
        "IndexDirectory": str(state / "index"),
        "HttpServerEnabled": False,
        "DicomAet": ORTHANC_AE,
        "DicomPort": port,
        "Plugins": [],
        "SaveJobs": False,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    log = setup.work / "logs" / "orthanc.log"
    argv = [str(setup.orthanc), str(path)]
    server = Server(ORTHANC, ORTHANC_AE, argv, state / "storage", port, log, setup.dcmtk)
    server.fresh = state
    return server


def build_servers(setup: Setup) -> list[Server]:
    """Return the servers of the single-association rows, in the order they run in a round."""
    ports = free_ports(4)
    servers = [
        coercion_server(setup, PASSTHROUGH, "COERCION", ports[0], setup.coercion),
        coercion_server(setup, RESEARCH, "RESEARCH", ports[1], setup.coercion),
        storescp_server(setup, ports[2]),
    ]
    if setup.orthanc is not None:
        servers.append(orthanc_server(setup, ports[3]))
    return servers


def worker_row(row: str, workers: int) -> str:
    """The name of a coercion row with ``--workers N``."""
    return f"{row} w{workers}"


def build_concurrent_servers(setup: Setup) -> list[Server]:
    """Return the servers of the concurrent rows: storescp --fork, Orthanc, coercion w1 and w2."""
    ports = iter(free_ports(2 + 2 * len(CONCURRENT_WORKERS)))
    servers = [storescp_server(setup, next(ports), fork=True)]
    orthanc_port = next(ports)
    if setup.orthanc is not None:
        servers.append(orthanc_server(setup, orthanc_port))
    for workers in CONCURRENT_WORKERS:
        for row, called_ae in ((PASSTHROUGH, "COERCION"), (RESEARCH, "RESEARCH")):
            name = worker_row(row, workers)
            servers.append(
                coercion_server(setup, name, called_ae, next(ports), setup.coercion, workers)
            )
    return servers


# -- runs ---------------------------------------------------------------------------------------


def storescu_argv(server: Server, folder: Path) -> list[str]:
    """Return the timed client command: every file of ``folder`` over one association."""
    return [
        str(server.dcmtk / "storescu"),
        "+sd",
        "-aec",
        server.called_ae,
        "-aet",
        CALLING_AE,
        HOST,
        str(server.port),
        str(folder),
    ]


def send(server: Server, folder: Path, log: Path) -> float:
    """Send ``folder`` to ``server`` with storescu; return the wall time of the process."""
    argv = storescu_argv(server, folder)
    with log.open("w") as out:
        out.write(f"$ {shlex.join(argv)}\n")
        out.flush()
        start = time.perf_counter()
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(), check=False
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{server.row}: storescu exit status {done.returncode} (log: {log})")
    return seconds


def send_at_once(server: Server, folders: Sequence[Path], logs: Path) -> float:
    """One storescu per folder, all started at once; the wall time until the last exits."""
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    with ExitStack() as stack:
        start = time.perf_counter()
        for index, folder in enumerate(folders):
            log = logs.with_name(f"{logs.name}-{index + 1}.log")
            out = stack.enter_context(log.open("wb"))
            argv = storescu_argv(server, folder)
            processes.append(
                (
                    subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env()),
                    log,
                )
            )
        for process, _ in processes:
            process.wait()
        seconds = time.perf_counter() - start
    for process, log in processes:
        if process.returncode != 0:
            raise BenchError(
                f"{server.row}: storescu exit status {process.returncode} (log: {log})"
            )
    return seconds


def split(data: Input, parts: int, work: Path) -> list[Path]:
    """Hard-link the files of ``data`` into ``parts`` folders (round robin); the folders."""
    root = work / "split" / data.name
    shutil.rmtree(root, ignore_errors=True)
    folders = [root / f"part{n + 1}" for n in range(parts)]
    for folder in folders:
        folder.mkdir(parents=True)
    for index, file in enumerate(data.files):
        target = folders[index % parts] / file.name
        try:
            os.link(file, target)
        except OSError:
            shutil.copy2(file, target)
    return folders


def check_stored(server: Server, data: Input, log: Path) -> None:
    """Check the count of stored files, and read one back: PHI kept or removed as expected."""
    stored = stored_files(server.out)
    if len(stored) != len(data.files):
        raise BenchError(
            f"{server.row}: stored {len(stored)} of {len(data.files)} files (log: {log})"
        )
    if server.row in (STORESCP, ORTHANC):
        return
    sample = dcmread(stored[0], stop_before_pixels=True)
    identified = str(sample.get("PatientID", "")).startswith("BENCH")
    if identified != (server.called_ae == "COERCION"):
        state = "still identified" if identified else "changed"
        raise BenchError(f"{server.row}: stored object {stored[0].name} is {state}")


def warm_up(server: Server, data: Input, work: Path, senders: int = 1) -> None:
    """Store one file, untimed, so that no timed run pays the server's first-object costs.

    With ``senders`` > 1 the file goes over that many associations at once, so that
    every worker of a node is likely to have stored one. Orthanc is started again with
    empty storage before each run: it gets no warm-up store.
    """
    if server.fresh is not None:
        return
    one = work / "warm-up" / data.name
    shutil.rmtree(one, ignore_errors=True)
    one.mkdir(parents=True)
    shutil.copy2(data.files[0], one / data.files[0].name)
    slug = server.row.removeprefix("coercion ").replace(" ", "-").lower()
    log = work / "logs" / f"{data.name}-{slug}-warm-up"
    if senders > 1:
        send_at_once(server, [one] * senders, log)
    else:
        send(server, one, log.with_suffix(".log"))
    server.wipe()


def cpu_seconds(server: Server) -> float:
    """CPU time (user + system) so far of the server process and its child processes.

    Counts the live children (the node's workers) and the ones already waited for
    (storescp --fork's). Linux /proc only; 0 elsewhere.
    """
    if server.process is None:
        return 0.0
    pid = server.process.pid
    ticks = 0
    for process in [pid, *child_pids(pid)]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The process ids of the children of ``pid`` (from /proc; empty when unknown)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in children.read_text().split()]
    return found


@dataclass
class Result:
    """The timed runs of one row on one data set."""

    times: list[float] = field(default_factory=list)
    #: CPU seconds the server used during each run (its workers included).
    cpu: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Return the median wall time."""
        return statistics.median(self.times)


def bench_data_set(
    data: Input, servers: Sequence[Server], repeat: int, work: Path, senders: int = 1
) -> dict[str, Result]:
    """Run every row ``repeat`` times in turn on ``data``; return results by row.

    With ``senders`` > 1 the files are split over that many storescu processes run at once.
    """
    results = {server.row: Result() for server in servers}
    folders = split(data, senders, work) if senders > 1 else [data.path]
    label = data.name if senders == 1 else f"{data.name}x{senders}"
    for server in servers:
        server.start()
        warm_up(server, data, work, senders)
    for round_number in range(1, repeat + 1):
        for server in servers:
            server.wipe()
            slug = server.row.removeprefix("coercion ").replace(" ", "-").lower()
            log = work / "logs" / f"{label}-{slug}-{round_number}"
            cpu = cpu_seconds(server)
            if senders > 1:
                seconds = send_at_once(server, folders, log)
            else:
                seconds = send(server, data.path, log.with_suffix(".log"))
            results[server.row].cpu.append(cpu_seconds(server) - cpu)
            check_stored(server, data, log)
            results[server.row].times.append(seconds)
            print(
                f"  {label:<8} {server.row:<21} run {round_number}/{repeat}: {seconds:8.3f} s  ok",
                flush=True,
            )
    return results


# -- report -------------------------------------------------------------------------------------


def print_table(inputs: dict[str, Input], all_results: dict[str, dict[str, Result]]) -> None:
    """Print files, MB, seconds, throughput and ratios per data set and row."""
    header = (
        f"{'set':<5} {'row':<18} {'files':>6} {'MB':>7} {'seconds':>8} {'files/s':>8} "
        f"{'MB/s':>7} {'t/passthru':>10} {'storescp/t':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, results in all_results.items():
        data = inputs[name]
        files, mb = len(data.files), data.size / 1e6
        passthrough, storescp = results[PASSTHROUGH].seconds, results[STORESCP].seconds
        for row, result in results.items():
            seconds = result.seconds
            print(
                f"{name:<5} {row:<18} {files:>6} {mb:>7.1f} {seconds:>8.3f} "
                f"{files / seconds:>8.1f} {mb / seconds:>7.1f} "
                f"{seconds / passthrough:>10.2f} {storescp / seconds:>10.2f}"
            )
    print(
        "MB = 10^6 bytes of input files; seconds = median wall time of the storescu process;\n"
        f"t/passthru = seconds / seconds of '{PASSTHROUGH}' (the rule's cost when > 1);\n"
        "storescp/t = storescp's seconds / seconds (share of storescp's throughput)."
    )


def print_targets(all_results: dict[str, dict[str, Result]]) -> None:
    """Print both targets per data set with the measured ratio and PASS or MISS."""
    print()
    print("targets (rows timed in this run):")
    for name, results in all_results.items():
        passthrough = results[PASSTHROUGH].seconds
        rule_cost = results[RESEARCH].seconds / passthrough
        share = results[STORESCP].seconds / passthrough
        lines = (
            ("(a) t(RESEARCH)/t(COERCION) <= 1.10", rule_cost, rule_cost <= 1.10),
            ("(b) t(storescp)/t(COERCION) >= 0.50", share, share >= 0.50),
        )
        for text, value, passed in lines:
            print(f"  {name:<5} {text:<40} {value:>6.2f}  {'PASS' if passed else 'MISS'}")


def print_concurrent(data: Input, results: dict[str, Result], senders: int) -> None:
    """Print the concurrent rows: seconds, throughput, the ratio to Orthanc, the speed-up."""
    header = (
        f"{'load':<9} {'row':<21} {'files':>6} {'seconds':>8} {'min-max':>13} {'files/s':>8} "
        f"{'orthanc/t':>9} {'w1/t':>6} {'CPU s':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    orthanc = results[ORTHANC].seconds if ORTHANC in results else None
    files = len(data.files)
    for row, result in results.items():
        seconds = result.seconds
        base = row.rsplit(" w", 1)[0]
        single = results.get(worker_row(base, 1)) if row.startswith("coercion ") else None
        print(
            f"{data.name}x{senders:<4} {row:<21} {files:>6} {seconds:>8.3f} "
            f"{min(result.times):>6.2f}-{max(result.times):<6.2f} {files / seconds:>8.1f} "
            f"{orthanc / seconds if orthanc else float('nan'):>9.2f} "
            f"{single.seconds / seconds if single else float('nan'):>6.2f} "
            f"{statistics.median(result.cpu):>6.2f}"
        )
    print(
        f"{senders} storescu processes at once, the files split round robin between them;\n"
        "seconds = median wall time from the first start to the last exit; min-max over the "
        "rounds;\northanc/t = Orthanc's seconds / seconds (above 1: faster than Orthanc); "
        "w1/t = the same row with --workers 1 / seconds (the speed-up of more workers);\n"
        "CPU s = median CPU seconds (user + system) the server used in a run, workers included."
    )


def print_concurrent_targets(results: dict[str, Result]) -> None:
    """Print the concurrent targets: the rule at least as fast as Orthanc, 1.7x from 1 to 2."""
    print()
    print("targets, concurrent load (rows timed in this run):")
    most = worker_row(RESEARCH, max(CONCURRENT_WORKERS))
    lines = []
    if ORTHANC in results:
        value = results[ORTHANC].seconds / results[most].seconds
        lines.append((f"(c) t(Orthanc)/t({most}) >= 1.00", value, value >= 1.0))
    for row in (PASSTHROUGH, RESEARCH):
        value = results[worker_row(row, 1)].seconds / results[worker_row(row, 2)].seconds
        lines.append((f"(d) t({row} w1)/t(w2) >= 1.70", value, value >= 1.7))
    for text, value, passed in lines:
        print(f"  {text:<48} {value:>6.2f}  {'PASS' if passed else 'MISS'}")


# -- profile ------------------------------------------------------------------------------------


def profile_run(setup: Setup, data: Input, row: str, called_ae: str) -> tuple[float, Path]:
    """Send ``data`` once to a coercion server under ``_profile_serve.py``.

    Profiling starts (SIGUSR1) after the server is ready and warmed up, so the statistics
    cover the one association of the run. Returns the run's seconds and the stats file.
    """
    out = setup.work / f"profile-{data.name}-{called_ae.lower()}.prof"
    ready = out.with_name(out.name + ".ready")
    for stale in (out, ready):
        stale.unlink(missing_ok=True)
    prefix = [sys.executable, str(PROFILE_SCRIPT), str(out)]
    server = coercion_server(setup, row, called_ae, free_ports(1)[0], prefix)
    server.log = setup.work / "logs" / f"profile-serve-{called_ae.lower()}.log"
    try:
        server.start()
        warm_up(server, data, setup.work)
        server.signal(signal.SIGUSR1)
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if time.monotonic() > deadline:
                raise BenchError(f"{row}: the profiler did not start (log: {server.log})")
            time.sleep(0.05)
        log = setup.work / "logs" / f"profile-{data.name}-{called_ae.lower()}.log"
        seconds = send(server, data.path, log)
        check_stored(server, data, log)
    finally:
        server.stop()
    if not out.exists():
        raise BenchError(f"{row}: no profile written (log: {server.log})")
    return seconds, out


def profile_rows(setup: Setup, data: Input, top: int) -> None:
    """Profile one run of ``data`` per coercion row; print the top functions of each."""
    for row, called_ae in ((PASSTHROUGH, "COERCION"), (RESEARCH, "RESEARCH")):
        seconds, out = profile_run(setup, data, row, called_ae)
        stats = pstats.Stats(str(out))
        total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
        print()
        print(
            f"profile: {data.name} -> {row}: {seconds:.3f} s wall under the profiler, "
            f"{total:.3f} s CPU in the node's association threads ({out.name})"
        )
        for key, label in (("cumulative", "cumtime"), ("tottime", "tottime")):
            print(f"  top {top} by {label}:   ncalls  tottime  cumtime  function")
            for line in top_functions(stats, key, top):
                print(f"    {line}")


def top_functions(stats: pstats.Stats, key: str, top: int) -> Iterator[str]:
    """Yield ``top`` formatted lines of ``stats`` (a :class:`pstats.Stats`) sorted by ``key``."""
    entries = stats.stats.items()  # type: ignore[attr-defined]
    index = 3 if key == "cumulative" else 2
    ranked = sorted(entries, key=lambda item: item[1][index], reverse=True)[:top]
    for (filename, line, function), (_, ncalls, tottime, cumtime, _) in ranked:
        where = short_path(filename)
        name = f"{where}:{line}({function})" if where != "~" else function
        yield f"{ncalls:>8} {tottime:>8.3f} {cumtime:>8.3f}  {name}"


def short_path(filename: str) -> str:
    """Return ``filename`` from its package folder on (``pydicom/...``, ``coercion/...``)."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) :])
    return filename


# -- main ---------------------------------------------------------------------------------------


def dcmtk_version(dcmtk: Path) -> str:
    """Return dcmtk's version as ``storescu --version`` prints it."""
    try:
        done = subprocess.run(
            [str(dcmtk / "storescu"), "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return "not installed"
    first = done.stdout.strip().splitlines()[:1]
    return first[0].strip("$ ").removeprefix("dcmtk: ") if first else "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Time storescu to coercion serve (with and without a rule) and to storescp."
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=BENCH_DIR / ".data" / "network",
        help="data folder; sets go to DATA/full or DATA/quick (default: benchmarks/.data/network)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=BENCH_DIR / ".work" / "network",
        help="folder for outputs, logs and the key file (default: benchmarks/.work/network)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per row (median shown)")
    parser.add_argument(
        "--only",
        choices=(*DATA_SETS, "concurrent"),
        help="run one data set only, or only the concurrent load",
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=CONCURRENT,
        metavar="N",
        help=f"storescu processes at once for the concurrent load on the small set "
        f"(default {CONCURRENT}; 0 skips it)",
    )
    parser.add_argument(
        "--orthanc",
        type=Path,
        default=shutil.which("Orthanc") or "/usr/sbin/Orthanc",
        help="Orthanc's executable (default: on PATH, else /usr/sbin/Orthanc)",
    )
    parser.add_argument("--no-orthanc", action="store_true", help="leave the Orthanc rows out")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_SIZES['small']} small files, {QUICK_SIZES['ct']} CT slices",
    )
    parser.add_argument(
        "--config-dir", type=Path, help="LDIF folder for coercion serve (default: the shipped one)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="small",
        choices=DATA_SETS,
        help="then profile one run of a data set (default small) per coercion row",
    )
    parser.add_argument(
        "--dcmtk-bin", type=Path, help="folder of dcmtk's tools (default: the first on PATH)"
    )
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile list")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def prepare(args: argparse.Namespace) -> tuple[Setup, Path]:
    """Create the work folder and key file, generate the data; return the setup and data root."""
    work: Path = args.work.resolve()
    for owned in ("logs", "storescp", "warm-up", "orthanc", "split"):
        shutil.rmtree(work / owned, ignore_errors=True)
    for owned in work.glob("coercion-*"):
        shutil.rmtree(owned, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    key = work / "bench.key"
    key.write_text(BENCH_KEY_HEX + "\n")
    key.chmod(0o600)
    root: Path = (args.data / ("quick" if args.quick else "full")).resolve()
    ensure_network_data(root, QUICK_SIZES if args.quick else FULL_SIZES)
    config_dir = args.config_dir.resolve() if args.config_dir else None
    dcmtk = find_dcmtk(args.dcmtk_bin)
    orthanc: Path | None = None
    if not args.no_orthanc:
        orthanc = Path(args.orthanc)
        if not os.access(orthanc, os.X_OK):
            raise BenchError(f"{orthanc}: no Orthanc; apt-get install orthanc, or --no-orthanc")
    command = [sys.executable, "-m", "coercion"]
    return Setup(work, key, command, config_dir, dcmtk, orthanc), root


def run(args: argparse.Namespace) -> None:
    """Run the benchmark; raise :class:`BenchError` when a run fails."""
    setup, root = prepare(args)
    print(
        f"python {platform.python_version()}, pydicom {version_of('pydicom')}, "
        f"pynetdicom {version_of('pynetdicom')}, coercion {version_of('coercion')}, "
        f"dcmtk {dcmtk_version(setup.dcmtk)}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"data: {root}  work: {setup.work}  repeat: {args.repeat}  env: TCP_NODELAY=1")
    for server in build_servers(setup):
        print(f"  {server.row:<18} $ {shlex.join(server.argv)}")
        print(f"  {'':<18} $ {shlex.join(storescu_argv(server, Path('DIR')))}")
    inputs: dict[str, Input] = {}
    all_results: dict[str, dict[str, Result]] = {}
    names = () if args.only == "concurrent" else (args.only,) if args.only else DATA_SETS
    for name in names:
        inputs[name] = data = scan_and_warm(name, root / name)
        print(f"{name}: {len(data.files)} files, {data.size / 1e6:.1f} MB in {data.path}")
        with ExitStack() as stack:
            servers = build_servers(setup)
            for server in servers:
                stack.callback(server.stop)
            all_results[name] = bench_data_set(data, servers, args.repeat, setup.work)
    if all_results:
        print_table(inputs, all_results)
        print_targets(all_results)
    if args.concurrent > 1 and args.only in (None, "small", "concurrent"):
        data = inputs.get("small") or scan_and_warm("small", root / "small")
        print(f"concurrent: {data.name} split over {args.concurrent} storescu processes at once")
        with ExitStack() as stack:
            servers = build_concurrent_servers(setup)
            for server in servers:
                print(f"  {server.row:<21} $ {shlex.join(server.argv)}")
                stack.callback(server.stop)
            results = bench_data_set(data, servers, args.repeat, setup.work, args.concurrent)
        print_concurrent(data, results, args.concurrent)
        print_concurrent_targets(results)
    if args.profile:
        name = args.profile
        profile_rows(setup, inputs.get(name) or scan_and_warm(name, root / name), args.top)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the exit status is 1 when a run failed, 0 otherwise (MISS included)."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally clauses stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        run(args)
    except BenchError as exc:
        print(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        print("Aborted!")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
