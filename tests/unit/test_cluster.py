"""The worker side of a cluster run: its key file, checked against the client's, and its results."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmwrite

from coercion import batch, cluster
from coercion.errors import ConfigError
from coercion.profile.keys import fingerprint
from tests.helpers import SECRET, make_dataset


def key_file(path: Path, secret: bytes) -> Path:
    path.write_text(secret.hex() + "\n")
    path.chmod(0o600)
    return path


def test_run_chunk_writes_what_a_local_run_writes(tmp_path: Path) -> None:
    """A chunk on a worker (the secret read from its key file) gives a local run's bytes."""
    (tmp_path / "src").mkdir()
    dcmwrite(tmp_path / "src" / "a.dcm", make_dataset(), enforce_file_format=True)
    tasks = batch.plan([tmp_path / "src"], tmp_path / "local")
    batch.run(tasks, batch.BatchSettings(frozenset(), SECRET, tmp_path / "local"), workers=1)
    remote = batch.BatchSettings(frozenset(), b"", tmp_path / "remote")
    key = key_file(tmp_path / "secret.key", SECRET)
    results = cluster.run_chunk(tasks, remote, str(key), fingerprint(SECRET), "run-1")
    assert [r.status for r in results] == ["written"]
    written = (tmp_path / "remote" / "a.dcm").read_bytes()
    assert written == (tmp_path / "local" / "a.dcm").read_bytes()


def test_a_worker_with_another_key_fails_the_run(tmp_path: Path) -> None:
    """A worker whose key file is not the client's says so, by fingerprint, and writes nothing."""
    key = key_file(tmp_path / "secret.key", bytes(32))
    settings = batch.BatchSettings(frozenset(), b"", tmp_path / "out")
    with pytest.raises(ConfigError, match="not the client's"):
        cluster.run_chunk([], settings, str(key), fingerprint(SECRET), "run-2")


def test_a_worker_without_the_key_file_fails_the_run(tmp_path: Path) -> None:
    """No key file at the path: an error naming it; none is created (it would be another key)."""
    settings = batch.BatchSettings(frozenset(), b"", tmp_path / "out")
    with pytest.raises(ConfigError, match="copy the key file"):
        cluster.run_chunk([], settings, str(tmp_path / "absent.key"), fingerprint(SECRET), "run-3")
    assert not (tmp_path / "absent.key").exists()
