"""What the console reads of the running node, and its own settings."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coercion.console.accounts import Authenticator
from coercion.console.rules import RuleStore
from coercion.console.sessions import Sessions, SignInThrottle
from coercion.directory.config import Configuration
from coercion.directory.watch import ConfigurationWatcher
from coercion.net import metrics

__all__ = ["ConsoleState", "Network", "counter_totals", "rule_failures"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ConsoleState:
    """The node as the console sees it; shared by every request."""

    watcher: ConfigurationWatcher
    rules: RuleStore
    accounts: Authenticator
    sessions: Sessions
    throttle: SignInThrottle
    data: Path
    #: The node's AE titles and DICOM address ("host:port"), read when a page is made.
    ae_titles: Callable[[], list[str]]
    dicom_address: str
    http_address: str = ""  # the console's URL, once it listens
    secret: bytes = b""  # the node's key: previews come out as the node's objects would
    ldap_accounts: bool = False  # people sign in with their directory DN
    secure: bool = False  # served over TLS: cookies are Secure
    metrics_allow: tuple[Network, ...] = ()  # empty: /metrics and /healthz for every address
    _samples: list[tuple[float, dict[tuple[str, str], float]]] = field(default_factory=list)
    _samples_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def configuration(self) -> Configuration:
        """The configuration the node serves now."""
        current = self.watcher.current
        assert current is not None  # the node started with one
        return current

    def may_scrape(self, host: str | None) -> bool:
        """Whether a client at *host* may read /metrics and /healthz."""
        if not self.metrics_allow:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self.metrics_allow)

    def per_minute(self) -> dict[tuple[str, str], float]:
        """Objects per minute by (called AE, result), over the last minute of samples."""
        now = time.monotonic()
        totals = counter_totals()
        with self._samples_lock:  # requests run in several threads
            self._samples = [(t, s) for t, s in self._samples if now - t <= 60.0]
            self._samples.append((now, totals))
            first_time, first = self._samples[0]
        span = max(now - first_time, 1.0)
        return {
            key: (value - first.get(key, 0.0)) * 60.0 / span
            for key, value in totals.items()
            if value - first.get(key, 0.0) > 0
        }


def counter_totals() -> dict[tuple[str, str], float]:
    """Objects received so far by (called AE, result), every calling AE and rule summed."""
    totals: dict[tuple[str, str], float] = {}
    for metric in metrics.families():
        if metric.name != "coercion_objects":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["called_ae"], sample.labels["result"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def rule_failures() -> dict[str, float]:
    """Failures so far, by rule."""
    found: dict[str, float] = {}
    for metric in metrics.families():
        if metric.name != "coercion_rule_failures":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                found[sample.labels["rule"]] = found.get(sample.labels["rule"], 0.0) + sample.value
    return found
