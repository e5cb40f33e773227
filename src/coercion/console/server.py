"""Run the console beside the node: uvicorn in a thread of its own, stopped with the node.

The DICOM side keeps its own threads; the console's event loop runs in one
daemon thread, and its blocking work (directory reads and writes, scrypt) in
that loop's worker threads, so a slow page never holds an association.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from coercion.console.app import create_app
from coercion.console.state import ConsoleState
from coercion.errors import ConfigError

__all__ = ["ConsoleServer", "HttpSettings"]

log = logging.getLogger(__name__)

#: Where the console listens unless told: this host only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11180


@dataclass(frozen=True)
class HttpSettings:
    """Where the console listens and its certificate (the DICOM listener's)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None


class ConsoleServer:
    """The console's HTTP server in a background thread."""

    def __init__(self, state: ConsoleState, settings: HttpSettings) -> None:
        self.state = state
        self.settings = settings
        config = uvicorn.Config(
            create_app(state),
            host=settings.host,
            port=settings.port,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            log_config=None,  # our logging; uvicorn's access log would show query strings
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        #: The address bound, once started.
        self.address: tuple[str, int] = (settings.host, settings.port)

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.settings.tls_cert else "http"

    def start(self, timeout: float = 20.0) -> tuple[str, int]:
        """Listen; return the address bound. Raises ConfigError when it cannot."""
        self._thread = threading.Thread(target=self._server.run, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"console: cannot listen on {self.settings.host}:{self.settings.port}; "
                    "give another --http HOST:PORT or --no-http"
                )
            time.sleep(0.02)
        socket = self._server.servers[0].sockets[0]
        host, port = socket.getsockname()[:2]
        log.info("console listening on %s://%s:%s", self.scheme, host, port)
        self.address = (str(host), int(port))
        return self.address

    def stop(self) -> None:
        """Stop serving (open requests finish) and close the console's directory connection."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.state.rules.close()
