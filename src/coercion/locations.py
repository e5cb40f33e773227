"""Where a batch reads and writes: a local path or an fsspec URL (``s3://``, ``gs://``, ...).

A :data:`Location` is a :class:`~pathlib.Path` for a local file or a ``str``
holding a URL. The per-file work of :mod:`coercion.batch` reads a source
through :func:`readable` (a URL is copied to a local temporary file first, so
deferred pixel data is read from local disk as for any file) and writes
through :func:`put`, atomically either way: a local output is renamed into
place (:func:`~coercion.engine.pipeline.write`); an S3 object appears whole
with its one PUT; any other fsspec target is written under a temporary name
and moved. fsspec is imported only when a URL is used.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from coercion.dicom.part10 import EncodedFile
from coercion.engine.pipeline import write
from coercion.errors import ConfigError, OutputError

__all__ = ["Location", "exists", "is_url", "join", "parse", "put", "readable", "walk"]

#: A local path, or an fsspec URL as text.
Location = Path | str

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: Protocols whose single upload is atomic: an object is visible whole or not at all.
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs"})


def parse(text: str) -> Location:
    """*text* as a location: a URL when it starts with ``SCHEME://``, else a local path."""
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    return text if _URL.match(text) else Path(text)


def is_url(location: Location) -> bool:
    """Whether *location* is an fsspec URL (not a local path)."""
    return isinstance(location, str)


def join(base: Location, relative: Path) -> Location:
    """*relative* (a path inside a batch's destination) under *base*."""
    if isinstance(base, Path):
        return base / relative
    return f"{base.rstrip('/')}/{relative.as_posix()}"


def _filesystem(url: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ConfigError(
            f"{url}: URLs need the cluster extra; pip install 'coercion[cluster]'"
        ) from None
    try:
        return url_to_fs(url, **options)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{url}: no file system for this URL ({exc})") from None


def exists(location: Location, options: Mapping[str, Any]) -> bool:
    """Whether a file is at *location* (resume skips it)."""
    if isinstance(location, Path):
        return location.exists()
    fs, path = _filesystem(location, options)
    return bool(fs.exists(path))


def walk(root: str, options: Mapping[str, Any]) -> Iterator[tuple[str, PurePosixPath, int]]:
    """The files under the URL *root*, sorted: (URL, path relative to *root*, size).

    A *root* that is one file gives that file, relative to its folder.
    """
    fs, path = _filesystem(root, options)
    if not fs.exists(path):
        raise ConfigError(f"{root}: no such file or folder")
    protocol = root.split("://", 1)[0]
    if fs.isfile(path):
        yield root, PurePosixPath(PurePosixPath(path).name), int(fs.size(path))
        return
    found: dict[str, dict[str, Any]] = fs.find(path, detail=True)
    base = PurePosixPath(path.rstrip("/"))
    for name in sorted(found):
        info = found[name]
        if info.get("type") == "file":
            relative = PurePosixPath(name).relative_to(base)
            yield f"{protocol}://{name}", relative, int(info.get("size") or 0)


@contextmanager
def readable(location: Location, options: Mapping[str, Any]) -> Iterator[Path]:
    """A local file holding *location*'s bytes while the block runs (a URL: a copy)."""
    if isinstance(location, Path):
        yield location
        return
    fs, path = _filesystem(location, options)
    fd, name = tempfile.mkstemp(prefix="coercion-", suffix=".part")
    os.close(fd)
    try:
        fs.get_file(path, name)
        yield Path(name)
    finally:
        os.unlink(name)


def put(encoded: EncodedFile, location: Location, options: Mapping[str, Any]) -> None:
    """Write *encoded* to *location*, whole or not at all."""
    if isinstance(location, Path):
        try:
            # Not fsynced: a batch can be run again from its sources (the node's objects are).
            write(encoded, location, sync=False)
        except OSError as exc:
            raise OutputError(f"{location}: cannot write ({exc.strerror})") from exc
        return
    fs, path = _filesystem(location, options)
    fd, name = tempfile.mkstemp(prefix="coercion-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            encoded.write_to(handle.fileno())
        if location.split("://", 1)[0] in _ATOMIC_PUT:
            fs.put_file(name, path)
        else:  # a temporary name beside the output, then one move
            folder, _, leaf = path.rpartition("/")
            temporary = f"{folder}/.{leaf}.{secrets.token_hex(4)}.part"
            fs.makedirs(folder, exist_ok=True)
            fs.put_file(name, temporary)
            fs.mv(temporary, path)
    except OSError as exc:
        raise OutputError(f"{location}: cannot write ({exc.__class__.__name__})") from exc
    finally:
        os.unlink(name)
