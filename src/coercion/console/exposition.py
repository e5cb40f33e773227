"""``/metrics``: the node's counters and, read at each scrape, reloads and queue depths."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coercion.console.queues import queues
from coercion.console.state import ConsoleState
from coercion.net import metrics

__all__ = ["CONTENT_TYPE", "exposition"]

#: The Prometheus text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _NodeCollector(Collector):
    """Gauges and counters read from the watcher and the queue folders when scraped."""

    def __init__(self, state: ConsoleState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        watcher = self.state.watcher
        reloads = CounterMetricFamily(
            "coercion_config_reloads", "Configuration changes loaded since start."
        )
        reloads.add_metric([], watcher.reloads)
        yield reloads
        rejected = CounterMetricFamily(
            "coercion_config_rejected",
            "Configurations rejected (invalid) since start; the previous one kept serving.",
        )
        rejected.add_metric([], watcher.rejected)
        yield rejected
        loaded = GaugeMetricFamily(
            "coercion_config_loaded_timestamp_seconds",
            "When the configuration serving now was loaded (Unix time).",
        )
        loaded.add_metric([], watcher.loaded_at)
        yield loaded
        rules = GaugeMetricFamily("coercion_rules", "Rules of the configuration serving now.")
        rules.add_metric([], len(self.state.configuration.rules))
        yield rules
        pending = GaugeMetricFamily(
            "coercion_queue_pending", "Objects waiting to be forwarded.", labels=["destination"]
        )
        failed = GaugeMetricFamily(
            "coercion_queue_failed", "Objects set aside in failed/.", labels=["destination"]
        )
        for queue in queues(self.state.data):
            pending.add_metric([queue["destination"]], queue["pending"])
            failed.add_metric([queue["destination"]], queue["failed"])
        yield pending
        yield failed


def exposition(state: ConsoleState) -> bytes:
    """The text of ``/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(state))
    return generate_latest(metrics.registry()) + generate_latest(registry)
