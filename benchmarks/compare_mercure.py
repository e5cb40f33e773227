"""Compare a tag script under ``coercion deidentify`` with the real mercure-anonymizer.

mercure-anonymizer (https://github.com/mercure-imaging/mercure-anonymizer, pinned at
``MERCURE_COMMIT``) is built from its source into WORK/mercure-build with ``qmake`` (Qt 5)
against Debian's ``libdcmtk-dev``: ``apt-get install qtbase5-dev qt5-qmake libdcmtk-dev g++
make``. The source is cloned at the pinned commit into WORK/mercure-src, or taken from
``--mercure-src DIR`` (a checkout of that commit, or a bare clone holding it, whose commit is
then exported; for machines without network access).
Nothing of mercure is kept in this repository.

Both tools run on the same files with the same settings: mercure gets them the way mercure's
router hands them over (``<series>#<instance>.dcm`` with a ``.tags`` file naming the receiving
AE title and the accession number, and ``task.json`` holding the settings), coercion gets the
settings converted by ``coercion config import-mercure`` and a rule that runs the script, and
``--called`` the same AE title. Outputs are matched to their input by a digest of the pixel
data; then every attribute (at every sequence depth) is classified per tool as kept,
replaced, emptied, removed or added, and the disagreements are printed grouped by kind, with
the number of files. Only keywords, tags and counts are printed, never a value.

Timing: each tool as a whole process, from start to exit, on all files and on one file (the
one-file run is the start-up cost: interpreter, imports, directory load, mercure's settings
pass); coercion with ``--workers`` (default 2) and its defaults, output verification on
(``--no-verify`` turns it off, to time what mercure does, which has no such check).

Usage::

    python benchmarks/compare_mercure.py [--mercure-src DIR] [--work DIR] [--files N]
        [--workers N] [--settings FILE] [--called AE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydicom import dcmread

from compare_pixelmed import classify, read
from make_data import ensure_data

HERE = Path(__file__).resolve().parent
MERCURE_URL = "https://github.com/mercure-imaging/mercure-anonymizer.git"
MERCURE_COMMIT = "60c90747b65f6ba4cb5ee4fc7e2954dba06cd2f5"
#: The settings compared by default: the default preset, fake and hashed identifiers, a
#: project section chosen by the AE title, a multi-valued @value@ and a truncdate.
SETTINGS: dict[str, Any] = {
    "general": {
        "preset": "default",
        "name": "Benchmark",
        "owner": "Imaging lab",
        "(0010,0010)": "set(@fake_name@)",
        "(0010,0020)": "set(@fake_mrn@)",
        "(0008,0050)": "set(@hash_acc@)",
        "(0008,0008)": "set(@value@)",
    },
    "bench": {
        "name": "Trial project",  # not a word of the patients' names
        "(0008,0080)": "set(@project_name@)",
        "(0008,0020)": "truncdate",
        "(0008,1030)": "set(@value(0008,0060)@ study)",
    },
}
COERCION = [sys.executable, "-m", "coercion"]
DEVICE_DN = "dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,dc=coercion,dc=local"


def run(argv: list[str], log: Path, cwd: Path | None = None) -> float:
    """Run *argv* with its output in *log*; return wall seconds; stop on failure."""
    with log.open("w") as out:
        start = time.perf_counter()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, check=False)
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"compare_mercure.py: {argv[0]} failed with {result.returncode}; see {log}")
    return seconds


def build_mercure(work: Path, source: Path | None) -> Path:
    """The mercure-anonymizer binary, built from *source* (or a pinned clone) into WORK."""
    if source is None:
        source = work / "mercure-src"
        if not (source / "main.cpp").exists():
            subprocess.run(["git", "clone", "-q", MERCURE_URL, str(source)], check=True)
        subprocess.run(["git", "-C", str(source), "checkout", "-q", MERCURE_COMMIT], check=True)
    elif not (source / "mercure-anonymizer.pro").exists():  # a clone without work tree
        tree = work / "mercure-src"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", f"--git-dir={source}", "archive", MERCURE_COMMIT],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        source = tree
    build = work / "mercure-build"
    binary = build / "bin" / "mercure-anonymizer"
    if binary.exists():
        return binary
    qmake = shutil.which("qmake") or "/usr/lib/qt5/bin/qmake"
    if not Path(qmake).exists() or not Path("/usr/include/dcmtk").is_dir():
        sys.exit(
            "compare_mercure.py: Qt 5 or DCMTK headers missing; apt-get install qtbase5-dev "
            "qt5-qmake libdcmtk-dev g++ make"
        )
    build.mkdir(parents=True, exist_ok=True)
    includes = "INCLUDEPATH+=/usr/include/dcmtk/dcmnet /usr/include/dcmtk/config"
    project = (source / "mercure-anonymizer.pro").resolve()
    run([qmake, includes, str(project)], work / "qmake.log", cwd=build)
    run(["make", f"-j{os.cpu_count() or 1}"], work / "make.log", cwd=build)
    return binary


def pixel_digest(path: Path) -> str:
    """A digest of the pixel data: how outputs are matched to their input."""
    return hashlib.sha1(bytes(dcmread(path).PixelData)).hexdigest()  # a match key only


def prepare(work: Path, files: int, called: str, settings: dict[str, Any]) -> list[Path]:
    """WORK/input (coercion's) and WORK/mercure-in (mercure's task folder); the input files."""
    data = work / "data"
    ensure_data(data, 2, files, quiet=True)
    sources = sorted((data / "mr").rglob("*.dcm"))[:files]
    plain, task = work / "input", work / "mercure-in"
    for folder in (plain, task):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    task.joinpath("task.json").write_text(
        json.dumps({"process": {"settings": settings}}), encoding="utf-8"
    )
    inputs = []
    for path in sources:
        ds = dcmread(path, stop_before_pixels=True)
        stem = f"{ds.SeriesInstanceUID}#{ds.SOPInstanceUID}"
        os.link(path, task / f"{stem}.dcm")
        tags = {"ReceiverAET": called, "AccessionNumber": str(ds.get("AccessionNumber", ""))}
        task.joinpath(f"{stem}.tags").write_text(json.dumps(tags), encoding="utf-8")
        os.link(path, plain / f"{stem}.dcm")
        inputs.append(plain / f"{stem}.dcm")
    return inputs


def configure_coercion(work: Path, settings: dict[str, Any]) -> Path:
    """A config folder: the default configuration, the imported script and a rule running it."""
    from coercion.resources import default_ldif_dir

    config = work / "config"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(default_ldif_dir(), config)
    device = config / "10-default-config.ldif"
    text = device.read_text(encoding="utf-8").replace(
        "coercionPollInterval: 2",
        f"coercionPollInterval: 2\ncoercionStoreURL: sqlite:///{work / 'store.db'}",
    )
    device.write_text(text, encoding="utf-8")
    path = work / "settings.json"
    path.write_text(json.dumps(settings), encoding="utf-8")
    out = config / "20-script.ldif"
    imported = ["import-mercure", str(path), "--name", "bench", "--lenient", "--out", str(out)]
    run([*COERCION, "config", *imported, "--parent-dn", DEVICE_DN], work / "import.log")
    (config / "21-rule.ldif").write_text(
        f"dn: cn=run-bench,{DEVICE_DN}\nobjectClass: coercionRule\ncn: run-bench\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: script:bench\n",
        encoding="utf-8",
    )
    return config


def time_both(
    work: Path, binary: Path, config: Path, coercion_args: list[str], one: bool
) -> tuple[float, float]:
    """Seconds of mercure and of coercion over WORK's inputs (or a copy of the first file)."""
    task, plain = work / "mercure-in", work / "input"
    suffix = "-one" if one else ""
    if one:
        first = sorted(task.glob("*.dcm"))[0]
        task, plain = work / "mercure-in-one", work / "input-one"
        for folder in (task, plain):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        for name in (first.name, first.with_suffix(".tags").name, "task.json"):
            os.link(work / "mercure-in" / name, task / name)
        os.link(first, plain / first.name)
    outputs = {name: work / f"{name}-out{suffix}" for name in ("mercure", "coercion")}
    for folder in outputs.values():
        shutil.rmtree(folder, ignore_errors=True)
    outputs["mercure"].mkdir()
    mercure = run([str(binary), str(task), str(outputs["mercure"])], work / "mercure.log")
    argv = [*COERCION, "deidentify", "--rules", "--config-dir", str(config), *coercion_args]
    argv += ["--key", str(work / "bench.key")]
    coercion = run([*argv, str(plain), str(outputs["coercion"])], work / "coercion.log")
    return mercure, coercion


def compare(inputs: list[Path], work: Path) -> tuple[dict[tuple[str, str], dict[str, int]], int]:
    """Disagreements per (coercion kind, mercure kind): attribute -> files; and files compared."""
    theirs = {pixel_digest(p): p for p in (work / "mercure-out").glob("*.dcm")}
    counts: Counter[tuple[str, tuple[str, str]]] = Counter()
    files = 0
    for source in inputs:
        ours = work / "coercion-out" / source.name
        match = theirs.get(pixel_digest(source))
        if match is None or not ours.exists():
            continue
        files += 1
        counts.update(set(classify(read(source), read(ours), read(match))))
    grouped: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for (path, kinds), count in counts.items():
        if kinds[0] != kinds[1]:
            grouped[kinds][path] = count
    return grouped, files


def main(argv: list[str] | None = None) -> int:
    """Build mercure, run both tools, print the timings and the per-attribute differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mercure-src", type=Path, help="a mercure-anonymizer checkout")
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "mercure")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settings", type=Path, help="mercure settings (JSON) to compare")
    parser.add_argument("--called", default="bench", help="the receiving AE title")
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false", help="coercion does not verify"
    )
    args = parser.parse_args(argv)
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = json.loads(args.settings.read_text("utf-8")) if args.settings else SETTINGS
    binary = build_mercure(work, args.mercure_src)
    inputs = prepare(work, args.files, args.called, settings)
    config = configure_coercion(work, settings)
    options = ["--called", args.called, "--workers", str(args.workers)]
    options.append("--verify" if args.verify else "--no-verify")
    start_m, start_c = time_both(work, binary, config, options, one=True)
    all_m, all_c = time_both(work, binary, config, options, one=False)
    print(f"mercure-anonymizer {MERCURE_COMMIT[:12]} vs coercion, {len(inputs)} files")
    print(f"  {'':10} {'1 file':>9} {f'{len(inputs)} files':>10} {'less start-up':>14}")
    for name, one, every in (("mercure", start_m, all_m), ("coercion", start_c, all_c)):
        print(f"  {name:10} {one:8.2f}s {every:9.2f}s {every - one:13.2f}s")
    print(f"  (coercion with --workers {args.workers})")
    grouped, files = compare(inputs, work)
    total = sum(len(paths) for paths in grouped.values())
    print(f"\n{total} attributes differ over {files} files")
    for kinds in sorted(grouped, key=lambda k: (-len(grouped[k]), k)):
        paths = grouped[kinds]
        print(f"  coercion {kinds[0]} / mercure {kinds[1]}: {len(paths)}")
        for path in sorted(paths):
            print(f"      {path}  ({paths[path]} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
