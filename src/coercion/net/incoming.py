"""A received data set checked and made a Part 10 file without holding it in memory.

A data set past :data:`~coercion.net.receive.SPOOL_AFTER` bytes arrives in a
temporary file (:class:`~coercion.net.receive.SpooledDataSet`). It is checked
over a memory map (element headers only: the pages of long values are never
read), then written behind its file meta to a temporary Part 10 file in
``DATA/incoming/`` (copied by the kernel), which is read with its long values
deferred: the pixel data stays on disk from the network to the stored object.
A smaller data set stays in memory, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from coercion.dicom.outputs import temporary_file
from coercion.dicom.wellformed import check_received
from coercion.net.receive import SpooledDataSet

__all__ = ["check", "part10_file", "size"]


def size(data: BytesIO) -> int:
    """The length of a received data set, in memory or spooled, without reading it."""
    if isinstance(data, SpooledDataSet):
        data.file.flush()
        return os.fstat(data.file.fileno()).st_size
    with data.getbuffer() as view:
        return view.nbytes


def check(data: BytesIO, transfer_syntax: str, name: str) -> None:
    """Check a received data set (in memory, or spooled: over a memory map); raise if not whole.

    See :func:`coercion.dicom.wellformed.check_received`.
    """
    if isinstance(data, SpooledDataSet):
        with data.mapped() as view:
            check_received(view, transfer_syntax, name)
    else:
        check_received(data.getvalue(), transfer_syntax, name)


@contextmanager
def part10_file(data: SpooledDataSet, meta: bytes, folder: Path) -> Iterator[Path]:
    """The preamble and file meta *meta*, then the spooled *data*, as a temporary file.

    The file (mode 0600, in *folder*) is removed when the block ends, however
    it ends, unless it was published (renamed to its place) inside it.
    """
    fd, path = temporary_file(folder, "received")
    try:
        try:
            with open(fd, "wb", closefd=False) as out:
                out.write(meta)
            data.copy_to(fd)
        finally:
            os.close(fd)
        yield path
    finally:
        path.unlink(missing_ok=True)
