"""Baseline for the benchmarks: read and write back every DICOM file with plain pydicom.

Walks ``SRC`` recursively and, in one process, ``dcmread``\\s each file and ``dcmwrite``\\s it
unchanged to the mirrored path under ``DST``. No de-identification happens: this is the floor
a pydicom-based tool pays for parsing and serialising alone.

Usage::

    python benchmarks/_pydicom_roundtrip.py SRC DST
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydicom import dcmread, dcmwrite


def roundtrip(src: Path, dst: Path) -> int:
    """Read every file below ``src`` and write it to the same relative path below ``dst``.

    Returns the number of files written.
    """
    count = 0
    for folder, dirnames, filenames in os.walk(src):
        dirnames.sort()
        out_folder = dst / Path(folder).relative_to(src)
        out_folder.mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
            dataset = dcmread(Path(folder) / name)
            dcmwrite(out_folder / name, dataset, enforce_file_format=True)
            count += 1
    return count


def main(argv: list[str]) -> int:
    """Command line entry point: ``SRC DST``."""
    if len(argv) != 2:
        print(f"usage: {Path(__file__).name} SRC DST", file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    if not src.is_dir():
        print(f"{src}: not a directory", file=sys.stderr)
        return 2
    count = roundtrip(src, dst)
    print(f"round trip: {count} files written to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
