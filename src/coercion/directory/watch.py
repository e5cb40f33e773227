"""Hot reload: watch a directory source and swap the rules when it changes.

A background thread checks the source's fingerprint every ``interval``
seconds. A change is loaded and validated whole: when it is good the new
configuration replaces the old one in one assignment (and is kept on disk as
the snapshot); when it is bad every problem is logged with its DN and the
previous configuration keeps serving. An unreachable directory is retried
with exponential backoff while the last configuration keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from coercion.directory.config import Configuration, build_configuration, write_snapshot
from coercion.directory.sources import DirectorySource, SnapshotDirectory
from coercion.engine import ActionEnv
from coercion.errors import ConfigError, DirectoryUnavailableError

__all__ = ["ConfigurationWatcher"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 60.0


class ConfigurationWatcher:
    """Keep :attr:`current` up to date with *source*; call *on_change* after each swap."""

    def __init__(
        self,
        source: DirectorySource,
        env: ActionEnv,
        device_name: str,
        interval: float = 2.0,
        snapshot: Path | None = None,
        on_change: Callable[[Configuration], None] | None = None,
    ) -> None:
        self.source = source
        self.env = env
        self.device_name = device_name
        self.interval = interval
        self.snapshot = snapshot
        self.on_change = on_change
        self.current: Configuration | None = None
        self.last_error: str | None = None
        self._fingerprint: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self) -> Configuration:
        fingerprint = self.source.fingerprint()
        raw = self.source.entries()
        configuration = build_configuration(
            raw, self.source.origin, self.env, self.device_name, source=self.source
        )
        self._fingerprint = fingerprint
        return configuration

    def load_initial(self) -> Configuration:
        """Load the configuration at start; fall back to the snapshot when the source is down."""
        try:
            configuration = self._load()
        except DirectoryUnavailableError as exc:
            if self.snapshot is None or not self.snapshot.exists():
                raise DirectoryUnavailableError(
                    f"{exc}; no snapshot of an earlier good configuration to start from"
                ) from None
            log.warning("directory unreachable (%s); starting from snapshot %s", exc, self.snapshot)
            fallback = SnapshotDirectory(self.snapshot)
            configuration = build_configuration(
                fallback.entries(), fallback.origin, self.env, self.device_name
            )
        else:
            self._keep(configuration)
        self.current = configuration
        return configuration

    def _keep(self, configuration: Configuration) -> None:
        if self.snapshot is not None:
            try:
                write_snapshot(self.snapshot, configuration.raw)
            except OSError as exc:
                log.warning("cannot write the snapshot %s (%s)", self.snapshot, exc.strerror)

    def check(self) -> bool:
        """Check the source once; return True when a new configuration was swapped in.

        Raises DirectoryUnavailableError when the source cannot be reached.
        """
        fingerprint = self.source.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        try:
            configuration = self._load()
        except ConfigError as exc:
            self._fingerprint = fingerprint  # report a bad change once, not every poll
            self.last_error = str(exc)
            for line in str(exc).splitlines():
                log.error("configuration change rejected: %s", line)
            log.error("the previous configuration keeps serving")
            return False
        self.last_error = None
        self.current = configuration
        self._keep(configuration)
        log.info(
            "configuration reloaded from %s: %d rules",
            configuration.origin,
            len(configuration.rules),
        )
        if self.on_change is not None:
            self.on_change(configuration)
        return True

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                self.check()
            except DirectoryUnavailableError as exc:
                delay = min(max(delay * 2, self.interval), _MAX_BACKOFF)
                log.warning("directory unreachable (%s); retrying in %.1f s", exc, delay)
                continue
            except Exception:  # never let the watcher die: the node keeps serving
                log.exception("unexpected error while checking the directory")
            delay = self.interval

    def start(self) -> None:
        """Start watching in a daemon thread (after :meth:`load_initial`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="directory-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching and close the source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.source.close()
