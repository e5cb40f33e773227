"""Hot reload: watch a directory source and swap the rules when it changes.

A background thread checks the source's fingerprint every ``interval``
seconds (``coercionPollInterval`` of the device unless fixed by the caller;
a change of it applies from the next check). A change is loaded and
validated whole, in an :class:`~coercion.engine.ActionEnv` of its own: when
it is good the new configuration replaces the old one in one assignment, is
kept on disk as the snapshot, and the old environment's store connections
are closed after a grace period (associations still running finish with
them); when it is bad every problem is logged with its DN and the previous
configuration, its environment untouched, keeps serving. An unreachable
directory is retried with exponential backoff while the last configuration
keeps serving.

At start the snapshot of the last good configuration stands in when the
directory cannot be reached or holds an invalid entry (logged as an error);
polling goes on and the directory's configuration applies once it is
reachable and valid. A refused bind (wrong password) is a
:class:`~coercion.errors.ConfigError`: no snapshot stands in for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from coercion.directory.config import Configuration, build_configuration, write_snapshot
from coercion.directory.ldifio import Entry
from coercion.directory.settings import DEFAULT_INTERVAL
from coercion.directory.sources import DirectorySource, SnapshotDirectory
from coercion.engine import ActionEnv
from coercion.errors import ConfigError, DirectoryUnavailableError

__all__ = ["DEFAULT_INTERVAL", "SNAPSHOT_NAME", "ConfigurationWatcher"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 60.0
#: The snapshot of the last good configuration, in the data folder.
SNAPSHOT_NAME = "directory-snapshot.json"


class ConfigurationWatcher:
    """Keep :attr:`current` up to date with *source*; call *on_change* after each swap.

    *env* is a template: each configuration gets its own ``env.derive()``.
    *interval* fixes the seconds between checks; None follows the device's
    ``coercionPollInterval``. The environment of a replaced configuration is
    closed *close_grace* seconds after the swap.
    """

    def __init__(
        self,
        source: DirectorySource,
        env: ActionEnv,
        device_name: str,
        interval: float | None = None,
        snapshot: Path | None = None,
        on_change: Callable[[Configuration], None] | None = None,
        close_grace: float = 30.0,
    ) -> None:
        self.source = source
        self.env = env
        self.device_name = device_name
        self.fixed_interval = interval
        self.interval = interval if interval is not None else DEFAULT_INTERVAL
        self.snapshot = snapshot
        self.on_change = on_change
        self.close_grace = close_grace
        self.current: Configuration | None = None
        self.from_snapshot = False  # the current configuration came from the snapshot
        self.last_error: str | None = None
        #: When the current configuration was loaded (time.time()); reloads and rejected ones.
        self.loaded_at = 0.0
        self.reloads = 0
        self.rejected = 0
        self._fingerprint: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retiring: list[tuple[threading.Timer, ActionEnv]] = []
        self._lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------

    def _build(self, raw: list[Entry], origin: str, source: DirectorySource) -> Configuration:
        """A configuration in an environment of its own (never the serving one's)."""
        return build_configuration(raw, origin, self.env.derive(), self.device_name, source=source)

    def _reject(self, exc: ConfigError, what: str) -> None:
        self.last_error = str(exc)
        self.rejected += 1
        for line in str(exc).splitlines():
            log.error("%s: %s", what, line)

    def load_initial(self) -> Configuration:
        """Load the configuration at start; the snapshot stands in when the source is down or
        holds an invalid entry.

        Raises DirectoryUnavailableError (source down) or ConfigError (invalid
        entries) when there is no snapshot, ConfigError when the bind is refused.
        """
        try:
            fingerprint = self.source.fingerprint(self.device_name)
            raw = self.source.entries(self.device_name)
        except DirectoryUnavailableError as exc:
            self.last_error = str(exc)
            configuration = self._start_from_snapshot(exc, f"directory unreachable ({exc})")
        else:
            try:
                configuration = self._build(raw, self.source.origin, self.source)
            except ConfigError as exc:
                self._fingerprint = fingerprint  # report these problems once, not every poll
                self._reject(exc, "invalid configuration at start")
                configuration = self._start_from_snapshot(exc, "invalid directory entries")
            else:
                self._fingerprint = fingerprint
                self.last_error = None
                self.keep_snapshot(configuration)
        self.current = configuration
        self.loaded_at = time.time()
        self._follow_interval(configuration)
        return configuration

    def _start_from_snapshot(
        self, exc: DirectoryUnavailableError | ConfigError, why: str
    ) -> Configuration:
        if self.snapshot is None or not self.snapshot.exists():
            if isinstance(exc, ConfigError):
                raise exc
            where = (
                f" ({self.snapshot} is absent; --data names the folder that holds it)"
                if self.snapshot is not None
                else " (give --data, the folder that holds it)"
            )
            raise DirectoryUnavailableError(
                f"{exc}; no snapshot of an earlier good configuration to start from{where}"
            ) from None
        fallback = SnapshotDirectory(self.snapshot)
        configuration = build_configuration(
            fallback.entries(self.device_name), fallback.origin, self.env.derive(), self.device_name
        )
        self.from_snapshot = True
        log.error(
            "%s: STARTING FROM THE SNAPSHOT %s of the last good configuration; the directory "
            "%s is polled and its configuration applies once it is reachable and valid",
            why,
            self.snapshot,
            self.source.origin,
        )
        return configuration

    def keep_snapshot(self, configuration: Configuration) -> None:
        """Write *configuration* to the snapshot file (0600), if there is one; log a failure."""
        if self.snapshot is None:
            return
        try:
            write_snapshot(self.snapshot, configuration.raw)
        except OSError as exc:
            log.warning("cannot write the snapshot %s (%s)", self.snapshot, exc.strerror)

    def _follow_interval(self, configuration: Configuration) -> None:
        """Take the device's coercionPollInterval, unless the caller fixed the interval."""
        if self.fixed_interval is not None:
            return
        interval = configuration.settings.poll_interval
        if interval != self.interval:
            log.info("directory poll interval: %g s (coercionPollInterval)", interval)
            self.interval = interval

    # -- changes ------------------------------------------------------------------------

    def check(self) -> bool:
        """Check the source once; return True when a new configuration was swapped in.

        Raises DirectoryUnavailableError when the source cannot be reached,
        ConfigError when it refuses the bind.
        """
        fingerprint = self.source.fingerprint(self.device_name)
        if fingerprint == self._fingerprint:
            return False
        raw = self.source.entries(self.device_name)
        try:
            configuration = self._build(raw, self.source.origin, self.source)
        except ConfigError as exc:
            self._fingerprint = fingerprint  # report a bad change once, not every poll
            self._reject(exc, "configuration change rejected")
            log.error("the previous configuration keeps serving, unchanged")
            return False
        self._fingerprint = fingerprint
        self.last_error = None
        previous, self.current = self.current, configuration
        self.loaded_at = time.time()
        self.reloads += 1
        self.from_snapshot = False
        self.keep_snapshot(configuration)
        log.info(
            "configuration reloaded from %s: %d rules",
            configuration.origin,
            len(configuration.rules),
        )
        self._follow_interval(configuration)
        if self.on_change is not None:
            self.on_change(configuration)
        if previous is not None and previous.env is not None:
            self._retire(previous.env)
        return True

    def _retire(self, env: ActionEnv) -> None:
        """Close *env* after the grace period (associations that picked its rules finish)."""
        timer = threading.Timer(self.close_grace, self._close, args=(env,))
        timer.daemon = True
        with self._lock:
            self._retiring.append((timer, env))
        timer.start()

    def _close(self, env: ActionEnv) -> None:
        with self._lock:
            self._retiring = [(t, e) for t, e in self._retiring if e is not env]
        env.close()

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                self.check()
            except DirectoryUnavailableError as exc:
                delay = min(max(delay * 2, self.interval), _MAX_BACKOFF)
                log.warning("directory unreachable (%s); retrying in %.1f s", exc, delay)
                continue
            except ConfigError as exc:  # the bind is refused: the settings must change
                delay = min(max(delay * 2, self.interval), _MAX_BACKOFF)
                log.error("cannot read the directory: %s; retrying in %.1f s", exc, delay)
                continue
            except Exception:  # never let the watcher die: the node keeps serving
                log.exception("unexpected error while checking the directory")
            delay = self.interval

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start watching in a daemon thread (after :meth:`load_initial`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="directory-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching, close the source and every environment still waiting to be closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            retiring, self._retiring = self._retiring, []
        for timer, env in retiring:
            timer.cancel()
            env.close()
        if self.current is not None and self.current.env is not None:
            self.current.env.close()
        self.source.close()
