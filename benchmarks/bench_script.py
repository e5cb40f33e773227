"""Benchmark tag scripts (``script:NAME``) against the ``deidentify:`` rule they resemble.

Every row is a whole ``coercion deidentify --config-dir DIR --no-verify SRC DST`` process on the
data sets of ``make_data.py`` (the CT series and the MR files ``bench_deidentify.py`` uses),
timed in the same run from start to exit. Each row has its own configuration folder (the default
LDIF files plus one rule under the node's device, C_STORE_RQ as SCP) and its own SQLite store
(the device's ``coercionStoreURL``), wiped before every run. Rows:

* ``deidentify:``: the rule ``deidentify:`` (PS3.15 Basic Profile), the baseline;
* ``script: preset``: ``script:`` with a script of ``"preset": "default"`` alone;
* ``script: full``: ``script:`` with the default preset plus ``set(@fake_name@)`` on Patient's
  Name, a counter on Patient ID, a regex rewrite of Study Description and ``truncdate`` on the
  birth date and the study date: fake names and counters are numbered in the store.

The input files are read once (untimed) before a data set's runs; with ``--repeat N`` the rows
take turns for N rounds and the median is reported, with ``t/deidentify``: the row's seconds
over the baseline's. After the runs one output of each row is read back: its Patient ID must not
be the source's (and must be ``SUBJ-...`` on the full script), else the rule did not apply.
The exit status is 1 when a run fails or a read-back check fails.

Usage::

    python benchmarks/bench_script.py [--quick] [--only ct|mr] [--repeat N] [--workers N]
        [--data DIR] [--work DIR] [--key FILE] [--coercion-cmd CMD]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom import dcmread

from bench_deidentify import (
    BENCH_DIR,
    DATA_SETS,
    Input,
    Ratio,
    Result,
    Tool,
    bench_data_set,
    checked_args,
    data_set_parser,
    prepare,
    print_table,
    scan_and_warm,
    version_of,
)
from coercion.resources import default_ldif_dir

DEIDENTIFY = "deidentify:"
SCRIPT_PRESET = "script: preset"
SCRIPT_FULL = "script: full"
#: The rows and the names of their configuration folders and stores.
ROWS = {DEIDENTIFY: "deidentify", SCRIPT_PRESET: "script-preset", SCRIPT_FULL: "script-full"}
DEVICE = "dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,dc=coercion,dc=local"
#: The scripts of the script rows (mercure-anonymizer's settings format).
SCRIPTS = {
    SCRIPT_PRESET: {"general": {"preset": "default"}},
    SCRIPT_FULL: {
        "general": {
            "preset": "default",
            "(0010,0010)": "set(@fake_name@)",
            "(0010,0020)": "SUBJ-__COUNTER-0001__",
            "(0008,1030)": r"s/ROUTINE STUDY (\d+)/STUDY $1/",
            "(0010,0030)": "truncdate",
            "(0008,0020)": "truncdate",
        }
    },
}
NOTE = (
    "MB = 10^6 bytes of input; seconds = median wall time of the whole process;\n"
    f"t/deidentify = this row's seconds / the '{DEIDENTIFY}' row's seconds (> 1: row is slower)."
)


def row_ldif(row: str) -> str:
    """The entries a row adds to the default configuration: its rule (and its script)."""
    if row == DEIDENTIFY:
        uri, script = "deidentify:", ""
    else:
        uri = "script:bench"
        script = (
            f"dn: cn=bench,{DEVICE}\nobjectClass: coercionTagScript\ncn: bench\n"
            f"coercionScript: {json.dumps(SCRIPTS[row])}\n\n"
        )
    return (
        f"{script}dn: cn=bench-rule,{DEVICE}\nobjectClass: coercionRule\ncn: bench-rule\n"
        f"coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: {uri}\n"
    )


def make_config(folder: Path, row: str, store: Path) -> Path:
    """Write the configuration folder of *row*: the default LDIF, its store URL and its rule."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(default_ldif_dir(), folder)
    device = folder / "10-default-config.ldif"
    text = device.read_text(encoding="utf-8")
    anchor = "coercionPollInterval: 2\n"
    if anchor not in text:
        raise SystemExit(f"{device}: no line {anchor.strip()!r} to add the store URL after")
    device.write_text(
        text.replace(anchor, f"{anchor}coercionStoreURL: sqlite:///{store}\n"), encoding="utf-8"
    )
    (folder / "20-bench.ldif").write_text(row_ldif(row), encoding="utf-8")
    return folder


def wipe(store: Path) -> Callable[[], None]:
    """A reset that removes the SQLite store *store* and its journal files."""

    def reset() -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)

    return reset


def coercion_argv(
    prefix: Sequence[str], key: Path, config: Path, extra: Sequence[str]
) -> Callable[[Path, Path], list[str]]:
    """The command line of a row: ``coercion deidentify --config-dir CONFIG --no-verify``."""

    def argv(src: Path, dst: Path) -> list[str]:
        return [
            *prefix,
            "deidentify",
            "--key",
            str(key),
            "--config-dir",
            str(config),
            "--no-verify",
            *extra,
            str(src),
            str(dst),
        ]

    return argv


def build_tools(prefix: Sequence[str], key: Path, work: Path, workers: int | None) -> list[Tool]:
    """The rows, in the order they run within a round; each with its config and store."""
    extra = ["--workers", str(workers)] if workers else []
    tools = []
    for row, folder in ROWS.items():
        store = work / "stores" / f"{folder}.db"
        config = make_config(work / "configs" / folder, row, store)
        tools.append(Tool(row, coercion_argv(prefix, key, config, extra), reset=wipe(store)))
    return tools


def check_output(tool: Tool, data: Input, work: Path) -> str | None:
    """Read one output of the row's last run back; a problem, or None when the rule applied."""
    dst = work / "out" / data.name / tool.slug
    output = next((p for p in sorted(dst.rglob("*")) if p.is_file()), None)
    if output is None:
        return f"no output in {dst}"
    source = data.path / output.relative_to(dst)
    patient_id = str(dcmread(output, stop_before_pixels=True).get("PatientID", ""))
    original = str(dcmread(source, stop_before_pixels=True).get("PatientID", ""))
    if patient_id == original:
        return f"{output}: Patient ID as in the source (the rule did not apply)"
    if tool.name == SCRIPT_FULL and not patient_id.startswith("SUBJ-"):
        return f"{output}: Patient ID is not a SUBJ- counter value"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = data_set_parser(
        "Time script: rules against a deidentify: rule in coercion deidentify.",
        BENCH_DIR / ".work" / "script",
        "folder for configs, stores, outputs, logs, key (default: benchmarks/.work/script)",
        repeat=3,
    )
    parser.add_argument("--workers", type=int, help="coercion's --workers (default: its own)")
    return checked_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the data if needed, run every row on every data set, print the results."""
    args = parse_args(argv)
    setup = prepare(args)
    work, data_root = setup.work, setup.data_root
    (work / "stores").mkdir(exist_ok=True)
    tools = build_tools(setup.prefix, setup.key, work, args.workers)

    print(
        f"python {platform.python_version()}, pydicom {version_of('pydicom')}, "
        f"coercion {version_of('coercion')}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"data: {data_root}  work: {work}  repeat: {args.repeat}")
    for tool in tools:
        print(f"  {tool.name:<22} $ {shlex.join(tool.argv(Path('SRC'), Path('DST')))}")

    inputs: dict[str, Input] = {}
    all_results: dict[str, dict[str, Result]] = {}
    problems: list[str] = []
    for name in (args.only,) if args.only else DATA_SETS:
        inputs[name] = data = scan_and_warm(name, data_root / name)
        print(f"{name}: {data.files} files, {data.size / 1e6:.1f} MB in {data.path}", flush=True)
        all_results[name] = results = bench_data_set(data, tools, args.repeat, work)
        for tool in tools:
            if results[tool.name].error is None and (problem := check_output(tool, data, work)):
                problems.append(f"{name} {tool.name}: {problem}")

    print_table(inputs, all_results, (Ratio("t/deidentify", DEIDENTIFY, inverse=True),), NOTE)
    failed = [r for results in all_results.values() for r in results.values() if r.error]
    for result in failed:
        print(f"FAILED: {result.data_set} {result.tool}: {result.error}")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
