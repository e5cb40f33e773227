"""``coercion deidentify --cluster``: a real ``dask scheduler`` with two ``dask worker`` processes.

Outputs are compared byte for byte with a local run, on local paths and in an
S3 bucket (moto in server mode); a worker killed mid-run and a client killed
mid-run are recovered from.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite

from coercion.resources import default_ldif_dir
from tests.cluster_servers import S3_ENV, DaskScheduler, DaskWorker, MotoServer
from tests.helpers import (
    coercion,
    coercion_command,
    coercion_in_process,
    free_port,
    make_dataset,
    wait_until,
)
from tests.integration.test_pseudonymize import SCOPE, study
from tests.postgres import Postgres, fresh_database
from tests.servers import start_on_free_port

pytestmark = pytest.mark.integration


class Cluster:
    """One scheduler and two workers, restarted when a test killed one."""

    def __init__(self, root: Path) -> None:
        (root / "scheduler").mkdir()
        self.scheduler = start_on_free_port(lambda: DaskScheduler(root / "scheduler", free_port()))
        self.workers = []
        for number in range(2):
            folder = root / f"worker{number}"
            folder.mkdir()
            self.workers.append(DaskWorker(folder, self.scheduler.address, f"w{number}"))
        self.ensure()

    def ensure(self) -> None:
        """Start every worker that is not running (each registered when this returns)."""
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.scheduler.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A private Dask cluster on 127.0.0.1 for the tests of this module."""
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def workers(cluster: Cluster) -> str:
    """The scheduler's address, both workers registered."""
    cluster.ensure()
    return cluster.scheduler.address


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A key file every worker reads at the same path (mode 0600)."""
    path = tmp_path / "secret.key"
    path.write_text(bytes(range(32)).hex() + "\n")
    path.chmod(0o600)
    return path


def sources(root: Path, count: int) -> Path:
    """*count* synthetic objects (own patients, a few studies) in folders under *root*."""
    for index in range(count):
        ds = make_dataset(patient=f"NOWAK^ADA{index}", patient_id=f"PID-{index:05d}")
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.6.{index // 10}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.7.{index // 5}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.8.{index}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = root / f"study{index // 10}" / f"{index:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(path, ds, enforce_file_format=True)
    return root


def contents(root: Path) -> dict[str, bytes]:
    """Every file under *root* (temporaries too) by its path relative to *root*."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def local_run(src: Path, dst: Path, key: Path) -> dict[str, bytes]:
    """The outputs of the same batch on this machine, by relative path."""
    coercion_in_process("deidentify", src, dst, "--key", key, "--workers", "1", check=True)
    return contents(dst)


def key_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cluster_writes_the_bytes_of_a_local_run(workers: str, key: Path, tmp_path: Path) -> None:
    """A run on two workers writes every file, byte for byte as a local run does."""
    src = sources(tmp_path / "src", 40)
    expected = local_run(src, tmp_path / "local", key)
    result = coercion(
        "deidentify", src, tmp_path / "dst", "--key", key, "--cluster", workers,
        "--key-file", tmp_path / "keys.csv", check=True,
    )  # fmt: skip
    assert "40 written" in result.stderr
    assert contents(tmp_path / "dst") == expected
    assert len({row["source"] for row in key_rows(tmp_path / "keys.csv")}) == 40


def test_cluster_deidentifies_a_bucket_into_another(
    workers: str, key: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """s3://src into s3://dst on the workers: the objects are the bytes of a local run."""
    import boto3

    moto = start_on_free_port(lambda: MotoServer(tmp_path_factory.mktemp("moto"), free_port()))
    try:
        s3: Any = boto3.client("s3", endpoint_url=moto.address, **_credentials())
        s3.create_bucket(Bucket="incoming")
        s3.create_bucket(Bucket="research")
        src = sources(tmp_path / "src", 12)
        for path in src.rglob("*.dcm"):
            s3.upload_file(str(path), "incoming", f"scans/{path.relative_to(src).as_posix()}")
        expected = local_run(src, tmp_path / "local", key)
        options = json.dumps({"endpoint_url": moto.address})
        result = coercion(
            "deidentify", "s3://incoming/scans", "s3://research/anon", "--key", key,
            "--cluster", workers, "--storage-options", options, env=S3_ENV, check=True,
        )  # fmt: skip
        assert "12 written" in result.stderr
        listed = s3.list_objects_v2(Bucket="research", Prefix="anon/")["Contents"]
        got = {
            item["Key"].removeprefix("anon/"): s3.get_object(Bucket="research", Key=item["Key"])[
                "Body"
            ].read()
            for item in listed
        }
        assert got == expected
        again = coercion(
            "deidentify", "s3://incoming/scans", "s3://research/anon", "--key", key,
            "--cluster", workers, "--storage-options", options, "--resume", env=S3_ENV, check=True,
        )  # fmt: skip
        assert "0 written, 12 already done" in again.stderr
    finally:
        moto.stop()


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def _outputs(root: Path) -> int:
    return sum(1 for p in root.rglob("*.dcm")) if root.exists() else 0


def test_a_killed_worker_loses_no_file(
    cluster: Cluster, workers: str, key: Path, tmp_path: Path
) -> None:
    """kill -9 of a worker mid-run: the scheduler runs its chunks again; each file once, whole."""
    count = 400
    src = sources(tmp_path / "src", count)
    expected = local_run(src, tmp_path / "local", key)
    dst = tmp_path / "dst"
    command = coercion_command(
        "deidentify", src, dst, "--key", key, "--cluster", workers, "--key-file",
        tmp_path / "keys.csv",
    )  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        wait_until(lambda: _outputs(dst) > 0, "the first outputs", timeout=60)
        cluster.workers[0].kill()
        assert _outputs(dst) < count  # killed mid-run
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert f"{count} written" in stderr
    assert contents(dst) == expected  # no partial file, none missing
    rows = key_rows(tmp_path / "keys.csv")
    assert len(rows) == count
    assert len({row["source"] for row in rows}) == count


def test_resume_after_the_client_is_killed(workers: str, key: Path, tmp_path: Path) -> None:
    """kill -9 of the client mid-run, then --resume: the rest is written, the same bytes."""
    count = 400
    src = sources(tmp_path / "src", count)
    expected = local_run(src, tmp_path / "local", key)
    dst = tmp_path / "dst"
    command = coercion_command("deidentify", src, dst, "--key", key, "--cluster", workers)
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        wait_until(lambda: _outputs(dst) > 0, "the first outputs", timeout=60)
        os.kill(run.pid, signal.SIGKILL)
    result = coercion(
        "deidentify", src, dst, "--key", key, "--cluster", workers, "--resume", check=True
    )
    done = int(result.stderr.split(" written, ")[1].split(" already done")[0])
    assert done > 0
    assert contents(dst) == expected


def test_pseudonyms_on_the_cluster_go_through_one_shared_store(
    workers: str, key: Path, tmp_path: Path, postgres: Postgres
) -> None:
    """pseudonymize: on two workers with --store PostgreSQL; reidentify on them brings it back."""
    config = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), config)
    (config / "20-trial.ldif").write_text(SCOPE, encoding="utf-8")
    originals = [ds for index in range(4) for ds in study(tmp_path / "in", index, "20240301")]
    rules = ["--config-dir", config, "--key", key, "--cluster", workers]
    refused = coercion(
        "deidentify", *rules, "--called", "TRIAL_A", tmp_path / "in", tmp_path / "x", cwd=tmp_path
    )
    assert refused.returncode == 2 and "--store" in refused.stderr
    shared = [*rules, "--store", fresh_database(postgres)]
    coercion(
        "deidentify", *shared, "--called", "TRIAL_A", tmp_path / "in", tmp_path / "out",
        cwd=tmp_path, check=True,
    )  # fmt: skip
    pseudonymous = [dcmread(p) for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(pseudonymous) == 8
    assert len({ds.PatientID for ds in pseudonymous}) == 1  # one patient, one record
    assert pseudonymous[0].PatientID != originals[0].PatientID
    coercion(
        "reidentify", "TRIAL_A", *shared, tmp_path / "out", tmp_path / "back", cwd=tmp_path,
        check=True,
    )  # fmt: skip
    back = {ds.SOPInstanceUID: ds for ds in map(dcmread, (tmp_path / "back").rglob("*.dcm"))}
    assert set(back) == {ds.SOPInstanceUID for ds in originals}
    assert {ds.PatientID for ds in back.values()} == {originals[0].PatientID}
