"""Compare ``coercion deidentify`` with PixelMed's ClinicalTrialsAttributes, attribute by attribute.

Both tools de-identify the same input folder under the same option sets; then every
input file is read back with its two outputs and each attribute (at every sequence
depth) is classified per tool as ``kept``, ``replaced``, ``emptied``, ``removed`` or
``added``. Where the tools disagree, the attribute is listed under that kind of
difference (``coercion removed / PixelMed kept`` ...), with the number of files it
happens in. Only keywords, tags and counts are printed, never a value.

PixelMed runs through ``PixelMedDeidentify.java`` (beside this script), compiled with
``javac`` into WORK/pixelmed-classes against Debian's ``/usr/share/java/pixelmed.jar``.
It calls, per file, ``removeClinicalTrialsAttributes``, ``removeOrNullIdentifyingAttributes``
(flags mapped from the PS3.15 options, see the Java file), ``removePrivateAttributes`` or
``removeUnsafePrivateAttributes`` and ``remapUIDAttributes``.

Input: pydicom's bundled test files (``CORPUS``) plus a small ``make_data.py`` set (CT
and MR with PHI in nested sequences, private blocks and an overlay). Both tools run as
whole processes, timed with :func:`time.perf_counter`; coercion with ``--workers 1``, since
PixelMed's program is single-threaded. The input is read once, untimed, first; with
``--repeat N`` the tools take turns N times per option set and the median is shown.

Usage::

    python benchmarks/compare_pixelmed.py [--data DIR] [--work DIR] [--only NAME]... [--full]
        [--repeat N] [--ct-slices N] [--mr-files N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from pydicom import config, dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from bench_deidentify import write_key
from coercion.dicom.tags import format_tag
from make_data import ensure_data

BENCH_DIR = Path(__file__).resolve().parent
JAVA_SOURCE = BENCH_DIR / "PixelMedDeidentify.java"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")

#: pydicom's bundled files that ship with the wheel (no download).
CORPUS = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "JPEG-lossy.dcm",
    "image_dfl.dcm",
    "ExplVR_BigEnd.dcm",
    "SC_rgb_small_odd.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "rtstruct.dcm",
    "waveform_ecg.dcm",
    "reportsi.dcm",
    "test-SR.dcm",
    "priv_SQ.dcm",
    "nested_priv_SQ.dcm",
)
SYNTHETIC_CT_SLICES = 5
SYNTHETIC_MR_FILES = 20

#: Option sets compared: name -> PS3.15 options (coercion's --option, the Java program's flags).
OPTION_SETS: dict[str, tuple[str, ...]] = {
    "Basic": (),
    "+RetainDeviceIdentity": ("RetainDeviceIdentityOption",),
    "+CleanDescriptors": ("CleanDescriptorsOption",),
    "+RetainUIDs": ("RetainUIDsOption",),
    "+ModifiedDates": ("RetainLongitudinalTemporalInformationModifiedDatesOption",),
    "+FullDates": ("RetainLongitudinalTemporalInformationFullDatesOption",),
    "+RetainSafePrivate": ("RetainSafePrivateOption",),
    "+RetainPatientCharacteristics": ("RetainPatientCharacteristicsOption",),
}
#: Attributes either tool sets to record what it did; listed apart, not as differences.
BOOKKEEPING = frozenset(
    {"PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
     "LongitudinalTemporalInformationModified", "SpecificCharacterSet"}
)  # fmt: skip

#: A path of keywords into the dataset, e.g. "ReferencedStudySequence > ReferencedSOPClassUID".
Path_ = str
#: (tool kind for coercion, tool kind for PixelMed)
Kinds = tuple[str, str]


def name_of(element: DataElement, ds: Dataset) -> str:
    """The keyword of *element*; private ones by tag and private creator, unknown ones by tag."""
    tag = element.tag
    if tag.is_private and tag.element >= 0x1000:
        creator = ds.get((tag.group << 16) | (tag.element >> 8))
        owner = "" if creator is None else f" {str(creator.value).strip()}"
        return f"private ({tag.group:04X},xx{tag.element & 0xFF:02X}){owner}"
    if tag.is_private:
        return f"private creator {format_tag(tag)}"
    return keyword_for_tag(tag) or format_tag(tag)


def is_empty(element: DataElement) -> bool:
    """True for a zero-length value (or an empty sequence)."""
    value = element.value
    return value is None or value in ("", b"") or (element.VR == "SQ" and not value)


def kind(before: DataElement | None, after: DataElement | None) -> str:
    """What a tool did to one element: kept, replaced, emptied, removed or added."""
    if before is None:
        return "added" if after is not None else "absent"
    if after is None:
        return "removed"
    if is_empty(after):
        return "emptied"
    if before.VR == "SQ":
        return "kept" if len(before.value) == len(after.value) else "replaced"
    return "kept" if before.value == after.value else "replaced"


def classify(
    source: Dataset, ours: Dataset, theirs: Dataset, prefix: str = ""
) -> Iterator[tuple[Path_, Kinds]]:
    """Yield (attribute path, (coercion kind, PixelMed kind)) for every element, at every depth."""
    tags = sorted(set(source.keys()) | set(ours.keys()) | set(theirs.keys()))
    for tag in tags:
        if tag.group == 0x7FE0 or (tag.element == 0 and tag.group != 0):  # pixels, group lengths
            continue
        before, mine, pm = source.get(tag), ours.get(tag), theirs.get(tag)
        some, holder = (
            (before, source) if before is not None else
            (mine, ours) if mine is not None else (pm, theirs)
        )  # fmt: skip
        assert some is not None
        path = f"{prefix}{name_of(some, holder)}"
        yield path, (kind(before, mine), kind(before, pm))
        sequences = (before, mine, pm)
        if all(e is not None and e.VR == "SQ" for e in sequences):
            for items in zip(*(e.value for e in sequences if e is not None), strict=False):
                yield from classify(*items, prefix=f"{path} > ")


def read(path: Path) -> Dataset:
    """The data set of *path*, pixel data left out (values never validated: warnings quote them)."""
    config.settings.reading_validation_mode = config.IGNORE
    return dcmread(path, stop_before_pixels=True, force=True)


def compare(source: Path, ours: Path, theirs: Path) -> tuple[Counter[tuple[Path_, Kinds]], int]:
    """Count (attribute, kinds) over the files all three folders hold; return them and the files."""
    counts: Counter[tuple[Path_, Kinds]] = Counter()
    files = 0
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = file.relative_to(source)
        mine, pm = ours / relative, theirs / relative
        if not (mine.exists() and pm.exists()):
            continue
        files += 1
        seen = set(classify(read(file), read(mine), read(pm)))
        counts.update(seen)  # per file: an attribute counts once however often it occurs
    return counts, files


def differences(counts: Counter[tuple[Path_, Kinds]]) -> dict[Kinds, dict[Path_, int]]:
    """The disagreements, grouped by kind of difference."""
    grouped: dict[Kinds, dict[Path_, int]] = defaultdict(dict)
    for (path, kinds), count in counts.items():
        mine, pm = kinds
        if mine != pm and path.split(" > ")[-1] not in BOOKKEEPING:
            grouped[kinds][path] = count
    return grouped


def print_differences(
    name: str, grouped: dict[Kinds, dict[Path_, int]], basic: set[tuple[Path_, Kinds]] | None
) -> None:
    """Print the differences of one option set by kind, attribute per line (new ones only)."""
    total = sum(len(paths) for paths in grouped.values())
    shown = {
        kinds: {p: n for p, n in paths.items() if basic is None or (p, kinds) not in basic}
        for kinds, paths in grouped.items()
    }
    extra = "" if basic is None else f", {sum(map(len, shown.values()))} not in the Basic run"
    print(f"\n== {name}: {total} attributes differ{extra}")
    for kinds in sorted(shown, key=lambda k: (-len(shown[k]), k)):
        paths = shown[kinds]
        if not paths:
            continue
        print(f"  coercion {kinds[0]} / PixelMed {kinds[1]}: {len(paths)}")
        for path in sorted(paths):
            print(f"      {path}  ({paths[path]} files)")


def prepare_input(data: Path, ct_slices: int, mr_files: int) -> Path:
    """DATA/input: the corpus files and a synthetic set; returns the folder."""
    root = data / "input"
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name in CORPUS:
        found = get_testdata_file(name, download=False)
        if found is not None and not (corpus / name).exists():
            shutil.copy(found, corpus / name)
    synthetic = data / "synthetic"
    ensure_data(synthetic, ct_slices, mr_files, quiet=True)
    for part in ("ct", "mr"):  # hard links: the input holds DICOM files only
        shutil.rmtree(root / part, ignore_errors=True)
        shutil.copytree(synthetic / part, root / part, copy_function=os.link)
    return root


def compile_java(work: Path) -> Path:
    """Compile PixelMedDeidentify.java into WORK/pixelmed-classes when it is stale."""
    classes = work / "pixelmed-classes"
    target = classes / "PixelMedDeidentify.class"
    if not PIXELMED_JAR.exists() or shutil.which("javac") is None:
        sys.exit(
            "compare_pixelmed.py: PixelMed or a JDK is missing; apt-get install "
            "libpixelmed-java default-jdk-headless (see benchmarks/README.md)"
        )
    if not target.exists() or target.stat().st_mtime < JAVA_SOURCE.stat().st_mtime:
        classes.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["javac", "-d", str(classes), "-cp", str(PIXELMED_JAR), str(JAVA_SOURCE)], check=True
        )
    return classes


def timed(argv: list[str], log: Path) -> float:
    """Run *argv* with its output in *log*; return wall seconds (exit status 0 or 1 accepted)."""
    with log.open("w") as out:
        start = time.perf_counter()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        sys.exit(f"compare_pixelmed.py: {argv[0]} failed with {result.returncode}; see {log}")
    return seconds


def warm(folder: Path) -> int:
    """Read every file under *folder* once; return the number of files."""
    files = 0
    for base, _, names in os.walk(folder):
        for name in names:
            Path(base, name).read_bytes()
            files += 1
    return files


def main(argv: list[str] | None = None) -> int:
    """Run both tools per option set, print timings and the per-attribute differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=BENCH_DIR / ".data" / "pixelmed")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / ".work" / "pixelmed")
    parser.add_argument("--only", action="append", choices=list(OPTION_SETS), default=None)
    parser.add_argument("--full", action="store_true", help="list every difference per set")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per tool")
    parser.add_argument("--ct-slices", type=int, default=SYNTHETIC_CT_SLICES, metavar="N")
    parser.add_argument("--mr-files", type=int, default=SYNTHETIC_MR_FILES, metavar="N")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    classes = compile_java(args.work)
    source = prepare_input(args.data, args.ct_slices, args.mr_files)
    files = warm(source)
    key = write_key(args.work)
    timings: list[tuple[str, float, float]] = []
    basic: set[tuple[Path_, Kinds]] | None = None
    for name in args.only or list(OPTION_SETS):
        options = OPTION_SETS[name]
        ours, theirs = args.work / "out" / name / "coercion", args.work / "out" / name / "pixelmed"
        flags = [part for option in options for part in ("--option", option)]
        commands = (
            (ours, [sys.executable, "-m", "coercion", "deidentify", "--key", str(key),
                    "--workers", "1", *flags, str(source), str(ours)]),
            (theirs, ["java", "-cp", f"{PIXELMED_JAR}:{classes}", "PixelMedDeidentify",
                      str(source), str(theirs), *options]),
        )  # fmt: skip
        runs: list[list[float]] = [[], []]
        for _round in range(args.repeat):  # the tools take turns; the median is shown
            for (folder, command), times in zip(commands, runs, strict=True):
                shutil.rmtree(folder, ignore_errors=True)
                times.append(timed(command, args.work / f"{name}-{folder.name}.log"))
        ours_s, theirs_s = (statistics.median(times) for times in runs)
        timings.append((name, ours_s, theirs_s))
        counts, compared = compare(source, ours, theirs)
        grouped = differences(counts)
        print(f"\n{name}: {compared} of {files} files written by both")
        print_differences(name, grouped, None if args.full else basic)
        if name == "Basic":
            basic = {(path, kinds) for kinds, paths in grouped.items() for path in paths}
    print(
        f"\n{'option set':<31} {'files':>5} {'coercion -w1 s':>15} {'PixelMed s':>11} {'ratio':>7}"
    )
    for name, ours_s, theirs_s in timings:
        print(f"{name:<31} {files:>5} {ours_s:>15.2f} {theirs_s:>11.2f} {theirs_s / ours_s:>6.2f}x")
    print("seconds: wall time of the whole process (interpreter or JVM start-up included);")
    print("ratio: PixelMed seconds / coercion seconds (> 1: coercion is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
