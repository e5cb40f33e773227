"""Benchmark ``coercion deidentify`` against GDCM, dicognito and a plain pydicom round trip.

For each data set made by ``make_data.py`` (a 300-slice CT series and 3000 small MR files),
every tool runs as a whole process on the same input, in the same run, and is timed from
start to exit with :func:`time.perf_counter` (interpreter start-up, imports, directory walk
and writing all included). The output folder is wiped before every run. Rows:

* ``coercion``: ``python -m coercion deidentify --key KEY SRC DST`` (its default parallelism)
* ``coercion --workers 1``: the same, in one worker
* ``pydicom round trip``: ``_pydicom_roundtrip.py SRC DST``, ``dcmread`` + ``dcmwrite`` per file
* ``dicognito``: ``python -m dicognito --output-directory DST --quiet --seed S SRC``
* ``gdcmanon -e``: GDCM's ``gdcmanon -e -c CERT -r --continue -i SRC -o DST`` (PS3.15 Basic
  Profile in C++, the original attributes encrypted for a throwaway self-signed certificate)

Before the timed runs of a data set, its files are read once (untimed) so that no tool pays
for a cold page cache that the others do not. With ``--repeat N`` the tools take turns, N
rounds, and the median is reported.

The targets are printed with PASS or MISS. A miss still exits 0: this is a benchmark, not a
test. The exit status is 1 when a tool fails to run (non-zero exit, or fewer output files
than input files).

Usage::

    python benchmarks/bench_deidentify.py [--quick] [--only ct|mr] [--repeat N]
        [--data DIR] [--work DIR] [--key FILE] [--coercion-cmd CMD]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from make_data import DEFAULT_CT_SLICES, DEFAULT_MR_FILES, ensure_data

BENCH_DIR = Path(__file__).resolve().parent
ROUNDTRIP_SCRIPT = BENCH_DIR / "_pydicom_roundtrip.py"

QUICK_CT_SLICES = 30
QUICK_MR_FILES = 300
DICOGNITO_SEED = "coercion-benchmark"
#: A fixed 256-bit key (hex) written to WORK/bench.key when --key is not given.
BENCH_KEY_HEX = "5eed" * 16

COERCION = "coercion"
COERCION_1 = "coercion --workers 1"
ROUNDTRIP = "pydicom round trip"
DICOGNITO = "dicognito"
GDCMANON = "gdcmanon -e"
DATA_SETS = ("ct", "mr")


@dataclass(frozen=True)
class Target:
    """A speed target: ``baseline seconds / coercion seconds >= factor`` on a data set.

    A factor of 1 means strictly faster; a factor below 1 allows coercion that much slower
    (``1 / factor`` times the baseline's time).
    """

    data_set: str
    baseline: str
    factor: float
    text: str


TARGETS = (
    Target("ct", DICOGNITO, 5.0, "coercion >= 5x faster than dicognito"),
    Target("ct", ROUNDTRIP, 1.0, "coercion faster than the pydicom round trip"),
    Target("ct", GDCMANON, 1 / 1.5, "coercion within 1.5x gdcmanon's time"),
    Target("mr", DICOGNITO, 10.0, "coercion >= 10x faster than dicognito"),
    Target("mr", ROUNDTRIP, 1.0, "coercion faster than the pydicom round trip"),
    Target("mr", GDCMANON, 1 / 1.2, "coercion within 1.2x gdcmanon's time"),
)


@dataclass(frozen=True)
class Tool:
    """A benchmarked command: ``argv(src, dst)`` builds its command line.

    ``reset``, when given, runs before every run of the tool, untimed (e.g. to wipe a store).
    """

    name: str
    argv: Callable[[Path, Path], list[str]]
    reset: Callable[[], None] | None = None

    @property
    def slug(self) -> str:
        """Return a file-name-safe form of the tool name."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass
class Result:
    """The runs of one tool on one data set."""

    data_set: str
    tool: str
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        """Return the median wall time, or ``None`` when the tool failed."""
        return statistics.median(self.times) if self.times and self.error is None else None


@dataclass(frozen=True)
class Input:
    """The input folder of a data set: file count and bytes."""

    name: str
    path: Path
    files: int
    size: int


def scan_and_warm(name: str, path: Path) -> Input:
    """Count the files and bytes under ``path``, reading every file once to warm the cache."""
    files = size = 0
    for folder, _, filenames in os.walk(path):
        for filename in filenames:
            with open(os.path.join(folder, filename), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    size += len(chunk)
            files += 1
    return Input(name, path, files, size)


def count_files(path: Path) -> int:
    """Return the number of regular files below ``path``."""
    return sum(len(filenames) for _, _, filenames in os.walk(path))


def make_certificate(folder: Path) -> Path:
    """A throwaway self-signed certificate in *folder* (``gdcmanon -e`` encrypts for one)."""
    certificate = folder / "gdcmanon-cert.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-subj", "/CN=coercion-benchmark", "-keyout", str(folder / "gdcmanon-key.pem")]
    subprocess.run([*argv, "-out", str(certificate)], check=True, capture_output=True)
    return certificate


def build_tools(coercion_prefix: Sequence[str], key: Path, certificate: Path) -> list[Tool]:
    """Return the benchmarked tools, in the order they run within a round."""

    def coercion(*extra: str) -> Callable[[Path, Path], list[str]]:
        def argv(src: Path, dst: Path) -> list[str]:
            return [*coercion_prefix, "deidentify", "--key", str(key), *extra, str(src), str(dst)]

        return argv

    def roundtrip(src: Path, dst: Path) -> list[str]:
        return [sys.executable, str(ROUNDTRIP_SCRIPT), str(src), str(dst)]

    def dicognito(src: Path, dst: Path) -> list[str]:
        # The ``dicognito`` console script of 0.19.0 calls main() without its argument,
        # so run the module; -o writes copies and leaves the source untouched.
        return [
            sys.executable,
            "-m",
            "dicognito",
            "--output-directory",
            str(dst),
            "--quiet",
            "--seed",
            DICOGNITO_SEED,
            str(src),
        ]

    def gdcmanon(src: Path, dst: Path) -> list[str]:
        # -e: the Basic Profile, the replaced values encrypted into the output for the
        # certificate's key; -r walks SRC and mirrors it in DST.
        options = ["-e", "-c", str(certificate), "-r", "--continue"]
        return ["gdcmanon", *options, "-i", str(src), "-o", str(dst)]

    return [
        Tool(COERCION, coercion()),
        Tool(COERCION_1, coercion("--workers", "1")),
        Tool(ROUNDTRIP, roundtrip),
        Tool(DICOGNITO, dicognito),
        Tool(GDCMANON, gdcmanon),
    ]


def run_once(tool: Tool, data: Input, dst: Path, log: Path) -> tuple[float, str | None]:
    """Run ``tool`` on ``data`` into a wiped ``dst``; return (seconds, error or None)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    if tool.reset is not None:
        tool.reset()
    argv = tool.argv(data.path, dst)
    with log.open("w") as out:
        out.write(f"$ {shlex.join(argv)}\n")
        out.flush()
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        except OSError as exc:
            return time.perf_counter() - start, f"could not start: {exc}"
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return seconds, f"exit status {proc.returncode} (log: {log})"
    written = count_files(dst)
    if written < data.files:
        return seconds, f"wrote {written} of {data.files} files (log: {log})"
    return seconds, None


def bench_data_set(
    data: Input, tools: Sequence[Tool], repeat: int, work: Path
) -> dict[str, Result]:
    """Run every tool ``repeat`` times in turn on ``data``; return results by tool name."""
    results = {tool.name: Result(data.name, tool.name) for tool in tools}
    for round_number in range(1, repeat + 1):
        for tool in tools:
            result = results[tool.name]
            if result.error is not None:
                continue
            dst = work / "out" / data.name / tool.slug
            log = work / "logs" / f"{data.name}-{tool.slug}-{round_number}.log"
            seconds, error = run_once(tool, data, dst, log)
            status = "ok" if error is None else f"FAILED: {error}"
            print(
                f"  {data.name}  {tool.name:<22} run {round_number}/{repeat}: "
                f"{seconds:8.2f} s  {status}",
                flush=True,
            )
            if error is None:
                result.times.append(seconds)
            else:
                result.error = error
                print_log_tail(log)
    return results


def print_log_tail(log: Path, lines: int = 15) -> None:
    """Print the last lines of a failed run's log, indented."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    for line in tail:
        print(f"      | {line}")


def ratio(results: dict[str, Result], baseline: str, row: str) -> float | None:
    """Return ``baseline seconds / row seconds``, or ``None`` if either is missing."""
    base, this = results[baseline].seconds, results[row].seconds
    return None if base is None or this is None else base / this


@dataclass(frozen=True)
class Ratio:
    """A ratio column of the table: ``baseline/t``, or ``t/baseline`` when ``inverse``."""

    title: str
    baseline: str
    inverse: bool = False

    def value(self, results: dict[str, Result], row: str) -> float | None:
        """Return the ratio for ``row``, or ``None`` if either time is missing."""
        found = ratio(results, self.baseline, row)
        return None if found is None else (1 / found if self.inverse else found)


RATIOS = (
    Ratio("dicognito/t", DICOGNITO),
    Ratio("roundtrip/t", ROUNDTRIP),
    Ratio("t/gdcmanon", GDCMANON, inverse=True),
)
NOTE = (
    "MB = 10^6 bytes of input; seconds = median wall time of the whole process;\n"
    "dicognito/t, roundtrip/t = that tool's seconds / this row's seconds (> 1: row is faster);\n"
    "t/gdcmanon = this row's seconds / gdcmanon's (< 1: row is faster)."
)


def print_table(
    inputs: dict[str, Input],
    all_results: dict[str, dict[str, Result]],
    ratios: Sequence[Ratio] = RATIOS,
    note: str = NOTE,
) -> None:
    """Print seconds, throughput and the ``ratios`` columns per data set and tool."""
    header = (
        f"{'set':<4} {'tool':<22} {'files':>6} {'MB':>8} {'seconds':>9} {'files/s':>9} "
        f"{'MB/s':>8}" + "".join(f" {column.title:>12}" for column in ratios)
    )
    print()
    print(header)
    print("-" * len(header))
    for name, results in all_results.items():
        data = inputs[name]
        mb = data.size / 1e6
        for tool, result in results.items():
            seconds = result.seconds
            if seconds is None:
                print(f"{name:<4} {tool:<22} {data.files:>6} {mb:>8.1f} {'FAILED':>9}")
                continue
            cells = [
                f"{data.files / seconds:>9.1f}",
                f"{mb / seconds:>8.1f}",
                *(
                    f"{r:>11.2f}x"
                    if (r := column.value(results, tool)) is not None
                    else f"{'-':>12}"
                    for column in ratios
                ),
            ]
            print(
                f"{name:<4} {tool:<22} {data.files:>6} {mb:>8.1f} {seconds:>9.3f} {' '.join(cells)}"
            )
    print(note)


def print_targets(all_results: dict[str, dict[str, Result]]) -> None:
    """Print each target with its measured ratio and PASS or MISS."""
    print()
    print(f"targets (row '{COERCION}', default workers, against tools timed in this run):")
    for target in TARGETS:
        results = all_results.get(target.data_set)
        if results is None:
            continue
        value = ratio(results, target.baseline, COERCION)
        if value is None:
            verdict, shown = "MISS (a tool failed)", "-"
        else:
            # "faster" (factor 1) must be strictly faster.
            met = value > 1.0 if target.factor == 1.0 else value >= target.factor
            verdict = "PASS" if met else "MISS"
            # "within N x its time": shown as this row's time over the baseline's.
            shown = f"{1 / value:.2f}x" if target.factor < 1.0 else f"{value:.2f}x"
        print(f"  {target.data_set}  {target.text:<45} {shown:>8}  {verdict}")


def write_key(work: Path) -> Path:
    """Write the benchmark's fixed key file under ``work`` and return its path."""
    key = work / "bench.key"
    key.write_text(BENCH_KEY_HEX + "\n")
    key.chmod(0o600)  # coercion refuses a key file others may read
    return key


def version_of(distribution: str) -> str:
    """Return the installed version of ``distribution``, or ``"not installed"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def data_set_parser(
    description: str, work: Path, work_help: str, repeat: int
) -> argparse.ArgumentParser:
    """A parser with the options every data-set benchmark takes (data, work, repeat, key...)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data",
        type=Path,
        default=BENCH_DIR / ".data",
        help="data folder; sets go to DATA/full or DATA/quick (default: benchmarks/.data)",
    )
    parser.add_argument("--work", type=Path, default=work, help=work_help)
    parser.add_argument("--repeat", type=int, default=repeat, help="rounds per row (median shown)")
    parser.add_argument("--only", choices=DATA_SETS, help="run one data set only")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_CT_SLICES} CT slices and {QUICK_MR_FILES} MR files",
    )
    parser.add_argument("--key", type=Path, help="key file for coercion (default: a fixed one)")
    parser.add_argument(
        "--coercion-cmd",
        help="command that replaces 'python -m coercion' (split like a shell would)",
    )
    return parser


def checked_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse *argv*; --repeat must be at least 1."""
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


@dataclass
class Setup:
    """What every data-set benchmark run starts from."""

    work: Path
    data_root: Path
    key: Path
    prefix: list[str]


def prepare(args: argparse.Namespace) -> Setup:
    """Make the work folder, generate the data when needed, the key file and the command."""
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    ct_slices, mr_files = (
        (QUICK_CT_SLICES, QUICK_MR_FILES) if args.quick else (DEFAULT_CT_SLICES, DEFAULT_MR_FILES)
    )
    data_root: Path = (args.data / ("quick" if args.quick else "full")).resolve()
    ensure_data(data_root, ct_slices, mr_files)
    key = args.key.resolve() if args.key else write_key(work)
    prefix = (
        shlex.split(args.coercion_cmd) if args.coercion_cmd else [sys.executable, "-m", "coercion"]
    )
    return Setup(work, data_root, key, prefix)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = data_set_parser(
        "Time coercion deidentify against dicognito and a pydicom round trip.",
        BENCH_DIR / ".work",
        "folder for outputs, logs and the key file (default: benchmarks/.work)",
        repeat=1,
    )
    return checked_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the data if needed, run every tool on every data set, print the results."""
    args = parse_args(argv)
    setup = prepare(args)
    with tempfile.TemporaryDirectory(prefix="bench-cert-") as folder:
        tools = build_tools(setup.prefix, setup.key, make_certificate(Path(folder)))
        return run_all(args, setup, tools)


def gdcm_version() -> str:
    """The version gdcmanon prints, or ``"not installed"``."""
    try:
        proc = subprocess.run(
            ["gdcmanon", "--version"], check=False, capture_output=True, text=True
        )
    except OSError:
        return "not installed"
    found = re.search(r"gdcm (\S+)", proc.stdout + proc.stderr)
    return found.group(1) if found else "unknown"


def run_all(args: argparse.Namespace, setup: Setup, tools: Sequence[Tool]) -> int:
    """Run *tools* on every data set asked for, print the table and the targets."""
    work, data_root = setup.work, setup.data_root
    print(
        f"python {platform.python_version()}, pydicom {version_of('pydicom')}, "
        f"dicognito {version_of('dicognito')}, gdcm {gdcm_version()}, "
        f"coercion {version_of('coercion')}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"data: {data_root}  work: {work}  repeat: {args.repeat}")
    for tool in tools:
        print(f"  {tool.name:<22} $ {shlex.join(tool.argv(Path('SRC'), Path('DST')))}")

    inputs: dict[str, Input] = {}
    all_results: dict[str, dict[str, Result]] = {}
    for name in (args.only,) if args.only else DATA_SETS:
        inputs[name] = data = scan_and_warm(name, data_root / name)
        print(f"{name}: {data.files} files, {data.size / 1e6:.1f} MB in {data.path}", flush=True)
        all_results[name] = bench_data_set(data, tools, args.repeat, work)

    print_table(inputs, all_results)
    print_targets(all_results)
    failed = [r for results in all_results.values() for r in results.values() if r.error]
    for result in failed:
        print(f"FAILED: {result.data_set} {result.tool}: {result.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
