"""Benchmark the structural check of received data sets (``coercion.dicom.wellformed``).

The node walks every received data set to its end before it stores or answers
it. This times that walk per object, in this process, on the objects of
``make_data.py`` (a 512x512 CT slice, a 128x128 MR image, both with sequences
nested up to four levels and private blocks) and on pydicom's ``CT_small.dcm``,
against two baselines timed in the same run on the same bytes:

* ``read_bytes up to (0020,000E)``: what the node read of a pass-through object before (the
  lean reader stopped after the Series Instance UID);
* ``read_bytes whole``: the lean reader parsing every element (what a rule-applying AE reads).

Each figure is the median of ``--repeat`` rounds of ``--number`` calls, in microseconds per
object; ``t/stop`` is the check's time over the first baseline's.

Usage::

    python benchmarks/bench_wellformed.py [--number 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coercion.dicom.part10 import file_meta_bytes, read_bytes
from coercion.dicom.wellformed import check_received
from make_data import iter_ct_files, iter_mr_files

EXPLICIT_LE = "1.2.840.10008.1.2.1"
SERIES_UID = 0x0020000E


def _data_set_bytes(ds: Dataset) -> bytes:
    """The data set as a C-STORE carries it: explicit VR little endian, no file meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _objects() -> dict[str, bytes]:
    ct = next(iter(iter_ct_files(1)))[1]
    mr = next(iter(iter_mr_files(1)))[1]
    small = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    return {
        "CT 512x512": _data_set_bytes(ct),
        "MR 128x128": _data_set_bytes(mr),
        "CT_small.dcm": _data_set_bytes(dcmread(small)),
    }


def _time(call: Callable[[], object], number: int, repeat: int) -> float:
    """Median microseconds per call."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        rounds.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"{'object':<14} {'bytes':>9} {'check µs':>9} {'stop µs':>9} {'whole µs':>9} {'t/stop':>7}"
    )
    for name, data in _objects().items():
        part10 = file_meta_bytes("1.2.840.10008.5.1.4.1.1.2", "1.2.3", EXPLICIT_LE) + data
        calls = (
            partial(check_received, data, EXPLICIT_LE, name),
            partial(read_bytes, part10, name, SERIES_UID),
            partial(read_bytes, part10, name),
        )
        check, stop, whole = (_time(call, args.number, args.repeat) for call in calls)
        print(
            f"{name:<14} {len(data):>9} {check:>9.1f} {stop:>9.1f} {whole:>9.1f} "
            f"{check / stop:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
