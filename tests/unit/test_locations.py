"""Batch sources and destinations as fsspec URLs (memory://): the same bytes as local paths."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from pydicom import dcmwrite

from coercion import batch
from coercion.errors import ConfigError
from coercion.locations import exists, join, parse
from tests.helpers import SECRET, make_dataset


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh memory:// folder, removed afterwards."""
    root = f"memory://bucket-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def sources(root: Path, count: int) -> Path:
    """*count* synthetic objects in two folders under *root*, and one text file."""
    for index in range(count):
        ds = make_dataset(patient=f"URLSKA^EWA{index}", patient_id=f"PID-{index:05d}")
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.9.{index}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = root / f"part{index % 2}" / f"{index}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(path, ds, enforce_file_format=True)
    (root / "notes.txt").write_text("not DICOM\n")
    return root


def upload(src: Path, url: str) -> None:
    fs = fsspec.filesystem("memory")
    for path in src.rglob("*"):
        if path.is_file():
            fs.pipe(f"{url}/{path.relative_to(src).as_posix()}", path.read_bytes())


def settings(destination: Path | str, resume: bool = False) -> batch.BatchSettings:
    return batch.BatchSettings(frozenset(), SECRET, destination, resume=resume)


def test_parse_tells_urls_from_paths() -> None:
    """SCHEME:// is a URL; anything else (and file://) a local path."""
    assert parse("s3://bucket/a") == "s3://bucket/a"
    assert parse("scans/a") == Path("scans/a")
    assert parse("file:///tmp/a") == Path("/tmp/a")
    assert join("s3://bucket/out/", Path("a/b.dcm")) == "s3://bucket/out/a/b.dcm"


def test_url_batch_writes_the_bytes_of_a_local_batch(tmp_path: Path, bucket: str) -> None:
    """memory:// into memory://: the same outputs, skips and key rows as local folders."""
    src = sources(tmp_path / "src", 5)
    local = batch.run(batch.plan([src], tmp_path / "dst"), settings(tmp_path / "dst"), workers=1)
    upload(src, f"{bucket}/in")
    tasks = batch.plan([f"{bucket}/in"], f"{bucket}/out")
    remote = batch.run(tasks, settings(f"{bucket}/out"), workers=1)
    assert remote.count("written") == local.count("written") == 5
    assert remote.count("skipped") == 1
    fs = fsspec.filesystem("memory")
    for path in (tmp_path / "dst").rglob("*.dcm"):
        relative = path.relative_to(tmp_path / "dst").as_posix()
        assert fs.cat(f"{bucket}/out/{relative}") == path.read_bytes()
    assert not [name for name in fs.find(f"{bucket}/out") if name.endswith(".part")]


def test_url_resume_skips_outputs_that_exist(tmp_path: Path, bucket: str) -> None:
    """--resume on a URL destination: an existing object is left alone."""
    upload(sources(tmp_path / "src", 2), f"{bucket}/in")
    tasks = batch.plan([f"{bucket}/in"], f"{bucket}/out")
    batch.run(tasks, settings(f"{bucket}/out"), workers=1)
    assert exists(f"{bucket}/out/part0/0.dcm", {})
    again = batch.run(tasks, settings(f"{bucket}/out", resume=True), workers=1)
    assert again.count("resumed") == 2
    assert again.count("written") == 0


def test_plan_refuses_a_url_destination_inside_the_source(bucket: str) -> None:
    """A destination below a URL source could be read back as input: refused."""
    fsspec.filesystem("memory").pipe(f"{bucket}/in/a.dcm", b"x")
    with pytest.raises(ConfigError, match="overlaps"):
        batch.plan([f"{bucket}/in"], f"{bucket}/in/out")


def test_plan_names_a_missing_url_source(bucket: str) -> None:
    """A source URL with nothing there is a configuration error naming it."""
    with pytest.raises(ConfigError, match="no such file"):
        batch.plan([f"{bucket}/absent"], f"{bucket}/out")


def test_the_command_line_starts_without_dask_or_fsspec() -> None:
    """Loading the CLI imports neither dask, distributed nor fsspec (only --cluster and URLs do)."""
    code = (
        "import sys, coercion.cli.main, coercion.batch;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed', 'fsspec', 's3fs')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
