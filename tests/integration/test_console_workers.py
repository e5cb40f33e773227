"""The console of ``coercion serve --workers 2``: counts summed over the worker processes."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.console import embedded_node, stop
from tests.helpers import stored, storescu_at_once
from tests.integration.test_node_workers import audit_lines, write_batches

pytestmark = pytest.mark.integration

SENDERS = 4
OBJECTS = 120


def _samples(metrics: str, name: str, **labels: str) -> float:
    """The sum of the samples *name* whose labels include *labels*."""
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_metrics_and_overview_sum_every_worker(tmp_path: Path) -> None:
    """Objects from concurrent storescu over two workers: every one in /metrics and the
    overview, though each worker counted only those of its own associations."""
    node = embedded_node(tmp_path, "--workers", "2")
    try:
        assert node.url.startswith("http://127.0.0.1:")
        storescu_at_once(
            node.served.port, "RESEARCH", write_batches(tmp_path / "in", SENDERS, OBJECTS)
        )
        assert len(stored(node.served.data)) == OBJECTS
        stores = [line for line in audit_lines(node.served) if line["dimse"] == "C_STORE_RQ"]
        assert {line["worker"] for line in stores} == {1, 2}  # both workers counted some

        with node.client() as client:
            metrics = client.get("/metrics").text
        stored_here = {"called_ae": "RESEARCH", "result": "stored"}
        assert _samples(metrics, "coercion_objects_total", **stored_here) == OBJECTS
        assert (
            _samples(metrics, "coercion_rule_objects_total", rule="deidentify-research-store")
            == OBJECTS
        )
        assert _samples(metrics, "coercion_coercion_seconds_count", called_ae="RESEARCH") == OBJECTS
        assert (
            _samples(metrics, "coercion_rule_seconds_count", rule="deidentify-research-store")
            == OBJECTS
        )
        client, _csrf = node.signed_in(admin=False)
        with closing(client):
            overview = client.get("/api/overview").json()
        [research] = [row for row in overview["objects"] if row.items() >= stored_here.items()]
        assert research["total"] == OBJECTS
        assert overview["ae_titles"] == ["COERCION", "RESEARCH"]
        # The counting files are on the memory file system, not on the data disk.
        assert not (node.served.data / "metrics").exists()
    finally:
        stop(node)
