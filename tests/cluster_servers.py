"""A private Dask cluster (``dask scheduler``, ``dask worker``) and S3 server (moto) for tests.

Each is a :class:`~tests.servers.ManagedServer`: the programs a user would
start, from this venv, on free ports of 127.0.0.1. A worker's start returns
once it has registered with the scheduler; :meth:`DaskWorker.kill` ends it
with SIGKILL, as a machine that fails would.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.servers import ManagedServer, ServerError

#: The programs of this venv.
BIN = Path(sys.executable).parent
#: Credentials moto accepts and no real service does.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ClusterError(ServerError):
    """The private Dask cluster or S3 server failed."""


@dataclass
class _ClusterServer(ManagedServer):
    """What the cluster's servers share: their error, their port-in-use message, 30 s to start."""

    error: ClassVar[type[ServerError]] = ClusterError
    port_in_use: ClassVar[str] = "Address already in use"
    start_timeout: ClassVar[float] = 30.0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class DaskScheduler(_ClusterServer):
    """``dask scheduler`` on *port*, without its dashboard."""

    program: ClassVar[str] = "dask-scheduler"
    ready_line: ClassVar[bytes] = b"Scheduler at:"

    port: int = 0

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-dashboard",
            "--no-show",
        ]

    def probe(self) -> bool:
        return _accepts(self.port)


@dataclass
class DaskWorker(_ClusterServer):
    """``dask worker`` of *scheduler*: one process, one thread, this test's environment."""

    program: ClassVar[str] = "dask-worker"
    ready_line: ClassVar[bytes] = b"Registered to:"

    scheduler: str = ""
    name: str = "worker"

    @property
    def address(self) -> str:
        return f"{self.name} of {self.scheduler}"

    def command(self) -> list[str]:
        return [
            str(BIN / "dask"),
            "worker",
            self.scheduler,
            "--name",
            self.name,
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--local-directory",
            str(self.directory),
        ]

    def popen_options(self) -> dict[str, Any]:
        return {"env": {**os.environ, **S3_ENV}}

    def probe(self) -> bool:
        return True  # registered: the ready line says so

    def kill(self) -> None:
        """End the worker with SIGKILL (no goodbye to the scheduler), as a failed machine."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()


@dataclass
class MotoServer(_ClusterServer):
    """moto's S3 in server mode on *port*."""

    program: ClassVar[str] = "moto-server"
    ready_line: ClassVar[bytes] = b"Running on"

    port: int = 0

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def popen_options(self) -> dict[str, Any]:
        return {"env": {**os.environ, **S3_ENV}}

    def probe(self) -> bool:
        try:
            with urllib.request.urlopen(self.address, timeout=2):
                return True
        except OSError:
            return False
