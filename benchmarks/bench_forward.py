"""Benchmark forwarding: objects stored on ``coercion serve`` and forwarded to dcmtk's ``storescp``.

Per round: a fresh ``storescp +uf -od OUT PORT`` (unique file names: an object
received twice is two files) stands for the destination ARCHIVE; a fresh
``python -m coercion -v serve`` (the shipped configuration plus a known device
ARCHIVE and a ``coercionForwardRule`` sending everything the COERCION AE
stores to it) receives N small CT objects from dcmtk's ``storescu +sd`` (one
association). The round is timed from the start of ``storescu`` until the
node's queue is empty and ``storescp`` has N files, with
:func:`time.perf_counter`.

Figures per round: seconds, objects/s, stalls (the node's log lines saying a
destination gave no answer within the DIMSE timeout, 60 s each), duplicates
(files minus distinct SOP Instance UIDs) and lost objects (sent minus
distinct UIDs received). The target is no stall, no duplicate, nothing lost
in every round, printed with PASS or MISS; a miss still exits 0. The exit
status is 1 when a run fails (a server does not start, ``storescu`` fails, the
round does not finish within ``--limit`` seconds). No process is left running.

``--src DIR`` runs the node from another source tree (``PYTHONPATH=DIR``), to
compare a build before a change with the build after it in one sitting.

Usage::

    python benchmarks/bench_forward.py [--objects 3000] [--rounds 1] [--src DIR]
        [--work DIR] [--limit SECONDS] [--dcmtk-bin DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench_network import BenchError, find_dcmtk
from coercion.resources import default_ldif_dir

BENCH_DIR = Path(__file__).resolve().parent
SOURCE = BENCH_DIR.parent / "src"
UID_ROOT = "1.2.826.0.1.3680043.99.77"
BASE = "dc=coercion,dc=local"
DEVICE = f"dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,{BASE}"
ARCHIVE = f"dicomDeviceName=archive,cn=Devices,cn=DICOM Configuration,{BASE}"
ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk keeps Nagle's algorithm on without it
STALL = re.compile(r"no answer from ARCHIVE")  # the sender's line, old and new builds alike


def extra_ldif(port: int) -> str:
    """The destination device ARCHIVE at 127.0.0.1:*port* and a rule forwarding everything."""
    return f"""dn: {ARCHIVE}
objectClass: dicomDevice
dicomDeviceName: archive
dicomInstalled: TRUE

dn: cn=dicom,{ARCHIVE}
objectClass: dicomNetworkConnection
cn: dicom
dicomHostname: 127.0.0.1
dicomPort: {port}

dn: dicomAETitle=ARCHIVE,{ARCHIVE}
objectClass: dicomNetworkAE
dicomAETitle: ARCHIVE
dicomNetworkConnectionReference: cn=dicom,{ARCHIVE}
dicomAssociationInitiator: FALSE
dicomAssociationAcceptor: TRUE

dn: cn=forward-all,dicomAETitle=COERCION,{DEVICE}
objectClass: coercionForwardRule
cn: forward-all
coercionDestinationAETitle: ARCHIVE
"""


def make_objects(folder: Path, count: int) -> None:
    """*count* small CT objects with made-up PHI (kept when already there)."""
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index in range(count):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = f"{UID_ROOT}.{count}.{index}"
        ds.StudyInstanceUID = f"{UID_ROOT}.{count}.0.1"
        ds.SeriesInstanceUID = f"{UID_ROOT}.{count}.0.2"
        ds.PatientName = "BENCH^FORWARD"
        ds.PatientID = "BENCH-0001"
        ds.Modality = "CT"
        ds.InstanceNumber = index + 1
        ds.Rows = ds.Columns = 16
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(512)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dcmwrite(folder / f"{index:06d}.dcm", ds, enforce_file_format=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, seconds: float) -> bool:
    """Poll *condition* (a callable) every 50 ms for up to *seconds*; its last answer."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Round:
    """The figures of one round."""

    seconds: float
    received: int
    distinct: int
    stalls: int


def one_round(args: argparse.Namespace, objects: Path, work: Path) -> Round:
    """Start storescp and the node, send the objects, wait until all are forwarded."""
    shutil.rmtree(work, ignore_errors=True)
    out, data, config = work / "storescp", work / "data", work / "config"
    out.mkdir(parents=True)
    port = free_port()
    shutil.copytree(default_ldif_dir(), config)
    (config / "20-extra.ldif").write_text(extra_ldif(port), encoding="utf-8")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            subprocess.Popen(
                [str(args.dcmtk / "storescp"), "+uf", "-od", str(out), str(port)],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        echo = [str(args.dcmtk / "echoscu"), "127.0.0.1", str(port)]
        if not wait_until(lambda: subprocess.run(echo, env=ENV, check=False).returncode == 0, 10):
            raise RuntimeError("storescp did not start")
        log = work / "serve.log"
        node_env = {**ENV, "PYTHONPATH": str(args.src)}
        command = [sys.executable, "-m", "coercion", "-v", "serve", "--port", "0"]
        command += ["--data", str(data), "--key", str(work / "key"), "--config-dir", str(config)]
        with open(log, "wb") as handle:
            processes.append(
                subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=node_env)
            )
        listening: list[str] = []

        def started() -> bool:
            listening[:] = re.findall(r"listening on [\d.]+:(\d+)", log.read_text(errors="replace"))
            return bool(listening)

        if not wait_until(started, 30):
            raise RuntimeError(f"coercion serve did not start: see {log}")
        store = [str(args.dcmtk / "storescu"), "+sd", "-aet", "CT01", "-aec", "COERCION"]
        store += ["127.0.0.1", listening[0]]
        begin = time.perf_counter()
        sent = subprocess.run([*store, str(objects)], env=ENV, capture_output=True, check=False)
        if sent.returncode != 0:
            raise RuntimeError(f"storescu failed: {sent.stderr.decode(errors='replace')[-500:]}")
        count = len(list(objects.iterdir()))
        queue = data / "queue" / "ARCHIVE"

        def forwarded() -> bool:
            return len(list(out.iterdir())) >= count and not any(queue.glob("*.dcm"))

        if not wait_until(forwarded, args.limit):
            raise RuntimeError(f"not all forwarded within {args.limit} s: see {log}")
        seconds = time.perf_counter() - begin
        files = [p for p in out.iterdir() if p.is_file()]
        uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
        stalls = len(STALL.findall(log.read_text(errors="replace")))
        return Round(seconds, len(files), len(uids), stalls)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=3000, help="objects per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--src", type=Path, default=SOURCE, help="coercion source tree to run")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / ".work" / "forward")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds a round may take")
    parser.add_argument("--dcmtk-bin", type=Path, help="folder of dcmtk's tools (default: PATH)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.src = args.src.resolve()
    try:
        args.dcmtk = find_dcmtk(args.dcmtk_bin)
    except BenchError as exc:
        print(exc)
        return 1
    objects = BENCH_DIR / ".data" / "forward" / str(args.objects)
    make_objects(objects, args.objects)
    print(f"forwarding {args.objects} objects to storescp, node from {args.src}")
    print(f"{'round':>5} {'seconds':>8} {'obj/s':>7} {'stalls':>6} {'dupl.':>6} {'lost':>5}")
    misses = 0
    for number in range(1, args.rounds + 1):
        try:
            result = one_round(args, objects, args.work / f"round{number}")
        except RuntimeError as exc:
            print(f"round {number} failed: {exc}")
            return 1
        duplicates = result.received - result.distinct
        lost = args.objects - result.distinct
        misses += bool(result.stalls or duplicates or lost)
        rate = args.objects / result.seconds
        print(
            f"{number:>5} {result.seconds:>8.1f} {rate:>7.0f} {result.stalls:>6} "
            f"{duplicates:>6} {lost:>5}"
        )
    verdict = "MISS" if misses else "PASS"
    print(f"target: no stall, no duplicate, nothing lost in every round: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
