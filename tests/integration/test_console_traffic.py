"""The console's traffic endpoints on a running node: preview, audit, forwarding queues."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from tests.console import ConsoleNode, embedded_node, post_preview, slapd_node, stop, wait_for
from tests.helpers import dcmtk, forward_rule, free_port, make_dataset, remote_device, stored

pytestmark = pytest.mark.integration

PATIENT = "CANARY^PREVIEW^Q"


@pytest.fixture
def node(console_node: ConsoleNode) -> ConsoleNode:
    """The node of each test: on the embedded directory, then on slapd."""
    return console_node


def _send(node: ConsoleNode, path: Path, called: str, calling: str = "CT01") -> None:
    sent = dcmtk("storescu", "-aet", calling, "-aec", called, "127.0.0.1", node.served.port, path)
    assert sent.returncode == 0, sent.stderr


def test_preview_shows_actions_and_values_to_the_admin_only(
    node: ConsoleNode, tmp_path: Path
) -> None:
    """Preview answers the rules and per attribute the action and values; it keeps nothing."""
    source = tmp_path / "preview.dcm"
    make_dataset(patient=PATIENT).save_as(source, enforce_file_format=True)
    data = source.read_bytes()
    query = {"calling": "CT01", "called": "RESEARCH", "dimse": "C_STORE_RQ", "role": "SCP"}
    client, csrf = node.signed_in()
    with closing(client):
        answer = post_preview(client, csrf, data, query)
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        result = answer.json()
        [rule] = result["rules"]
        assert rule["rule"] == "deidentify-research-store"
        name = next(c for c in rule["changes"] if c["keyword"] == "PatientName")
        assert name["before"] == PATIENT
        assert name["after"] != PATIENT
        assert name["action"] in ("Z", "D")
        other = post_preview(client, csrf, data, {**query, "called": "COERCION"})
        assert other.json()["rules"] == []
        garbage = post_preview(client, csrf, b"not dicom", query)
        assert garbage.status_code == 422
        bad = post_preview(client, csrf, data, {**query, "dimse": "C_MOVE"})
        assert bad.status_code == 422
    viewer, viewer_csrf = node.signed_in(admin=False)
    with closing(viewer):
        refused = post_preview(viewer, viewer_csrf, data, query)
        assert refused.status_code == 403
    assert stored(node.served.data) == []
    assert "CANARY" not in node.served.text()


def test_audit_filtered_and_paged(node: ConsoleNode, tmp_path: Path) -> None:
    """The audit lines of stored objects, filtered by AE title, rule, status; newest first."""
    source = tmp_path / "one.dcm"
    make_dataset().save_as(source, enforce_file_format=True)
    _send(node, source, "RESEARCH")
    _send(node, source, "RESEARCH", calling="RESEARCH_MR1")
    _send(node, source, "COERCION")
    client, _csrf = node.signed_in(admin=False)
    with closing(client):

        def lines(**query: Any) -> dict[str, Any]:
            answer = client.get("/api/audit", params=query)
            assert answer.status_code == 200
            return dict(answer.json())

        everything = lines()["lines"]
        assert [line["called_ae"] for line in everything[:3]] == [
            "COERCION",
            "RESEARCH",
            "RESEARCH",
        ]
        research = lines(ae_title="RESEARCH")["lines"]
        assert len(research) == 2
        assert lines(ae_title="RESEARCH_MR1")["lines"][0]["calling_ae"] == "RESEARCH_MR1"
        by_rule = lines(rule="deidentify-research-store")["lines"]
        assert len(by_rule) == 2
        first = lines(ae_title="RESEARCH", per_page=1)
        second = lines(ae_title="RESEARCH", per_page=1, page=2)
        assert first["more"] and not second["more"]
        assert first["lines"][0] != second["lines"][0]
        assert lines(status="0x0000", dimse="C_STORE_RQ")["lines"]
        assert lines(status="failed")["lines"] == []
        assert lines(since="2999-01-01T00:00:00Z")["lines"] == []
        assert "DOE" not in str(everything)
        page = client.get("/audit")
        assert page.status_code == 200 and 'id="audit-table"' in page.text


def test_no_marker_value_in_logs_metrics_or_audit(node: ConsoleNode, tmp_path: Path) -> None:
    """Identifying values never reach a log line, a metric label or an audit line.

    Objects carrying a marker in every identifying attribute are stored (with and
    without a rule), refused (a wrong SOP instance) and previewed; then the node's
    log, /metrics, the audit API and the audit files are searched for the marker.
    """
    marker = "QZXMARKER"
    source = tmp_path / "marked.dcm"
    make_dataset(patient=f"{marker}^JANE", patient_id=f"{marker}-ID").save_as(
        source, enforce_file_format=True
    )
    _send(node, source, "RESEARCH")
    _send(node, source, "COERCION")
    query = {"calling": "CT01", "called": "RESEARCH", "dimse": "C_STORE_RQ", "role": "SCP"}
    client, csrf = node.signed_in()
    with closing(client):
        previewed = post_preview(client, csrf, source.read_bytes(), query)
        assert previewed.status_code == 200
        assert marker in previewed.text  # the admin who uploaded sees the values
        metrics = client.get("/metrics").text
        audit = client.get("/api/audit").text
        overview = client.get("/api/overview").text
    assert 'called_ae="RESEARCH"' in metrics and "deidentify-research-store" in metrics
    audit_files = "".join(p.read_text() for p in (node.served.data / "audit").glob("*.jsonl"))
    assert audit_files.count('"status"') >= 2
    for where, text in {
        "node log": node.served.text(),
        "/metrics": metrics,
        "audit API": audit,
        "overview": overview,
        "audit files": audit_files,
    }.items():
        assert marker not in text.upper(), f"{where} holds the marker value"


def _archive(port: int, status: dict[str, int], received: list[str]) -> Any:
    """A storage SCP ARCHIVE answering ``status["code"]``; what it accepts goes to *received*."""

    def on_store(event: Any) -> int:
        if status["code"] == 0:
            received.append(str(event.request.AffectedSOPInstanceUID))
        return status["code"]

    archive = AE(ae_title="ARCHIVE")
    archive.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ALL_TRANSFER_SYNTAXES)
    return archive.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )


@pytest.mark.parametrize("kind", ["embedded", "slapd"])
def test_failed_forwards_retried_and_discarded(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Objects a destination refused show as failed; retry sends them again, discard drops."""
    port = free_port()
    status = {"code": 0xA700}  # out of resources: the forwarder sets the object aside
    received: list[str] = []
    server = _archive(port, status, received)
    ldif = remote_device("archive", "ARCHIVE", port) + forward_rule("ARCHIVE")
    try:
        if kind == "embedded":
            node = embedded_node(tmp_path, ldif=ldif)
        else:
            node = slapd_node(request.getfixturevalue("slapd"), tmp_path, ldif=ldif)
        try:
            client, csrf = node.signed_in()
            headers = {"X-CSRF-Token": csrf}
            with closing(client):

                def queue() -> dict[str, Any]:
                    found = client.get("/api/overview").json()["queues"]
                    return dict(found[0]) if found else {}

                for number in range(2):
                    source = tmp_path / f"{number}.dcm"
                    make_dataset().save_as(source, enforce_file_format=True)
                    _send(node, source, "COERCION")
                wait_for(lambda: queue().get("failed") == 2, "two objects in failed/")
                assert queue()["destination"] == "ARCHIVE" and queue()["pending"] == 0
                assert (
                    'coercion_queue_failed{destination="ARCHIVE"} 2.0'
                    in client.get("/metrics").text
                )
                status["code"] = 0
                answer = client.post("/api/queues/ARCHIVE/retry", headers=headers)
                assert answer.json() == {"destination": "ARCHIVE", "retried": 2}
                wait_for(lambda: len(received) == 2, "the retried objects delivered", timeout=60)
                wait_for(lambda: queue() == {**queue(), "pending": 0, "failed": 0}, "empty")
                status["code"] = 0xA700
                source = tmp_path / "third.dcm"
                make_dataset().save_as(source, enforce_file_format=True)
                _send(node, source, "COERCION")
                wait_for(lambda: queue().get("failed") == 1, "the third object in failed/")
                answer = client.post("/api/queues/ARCHIVE/discard", headers=headers)
                assert answer.json() == {"destination": "ARCHIVE", "discarded": 1}
                assert queue()["failed"] == 0
                missing = client.post("/api/queues/NOWHERE/retry", headers=headers)
                assert missing.status_code == 404
                sneaky = client.post("/api/queues/..%2F..%2Fobjects/discard", headers=headers)
                assert sneaky.status_code == 404
            assert len(received) == 2
        finally:
            stop(node)
    finally:
        server.shutdown()


MERCURE = {
    "general": {"preset": "none", "(0010,0010)": "set(@fake_name@)", "(0010,0020)": "set(ANON)"},
    "myproject": {"name": "My project", "(0008,1030)": "set(@project_name@)"},
}
UNCARRIED = {"general": {"preset": "none", "(0010,0010)": "set(@nosuch@)"}}


def test_tag_scripts_checked_written_and_imported(node: ConsoleNode) -> None:
    """A tag script's body is checked with its JSON paths; good ones and mercure imports load."""
    client, csrf = node.signed_in()
    headers = {"X-CSRF-Token": csrf}
    with closing(client):

        def names() -> set[str]:
            return {row["script"] for row in client.get("/api/scripts").json()}

        bad = {"name": "trial", "body": {"general": {"mode": "everything", "(0010,0010)": "x"}}}
        answer = client.post("/api/scripts", json=bad, headers=headers)
        assert answer.status_code == 422, answer.text
        problems = answer.json()["problems"]["coercionScript"]
        assert any("$.general.mode" in line for line in problems)
        assert "trial" not in names()
        answer = client.post(
            "/api/scripts", json={"name": "trial", "body": "{not json"}, headers=headers
        )
        assert answer.status_code == 422 and "coercionScript" in answer.json()["problems"]

        good = {"name": "trial", "body": {"general": {"(0010,0010)": "set(TRIAL^SUBJECT)"}}}
        answer = client.post("/api/scripts", json=good, headers=headers)
        assert answer.status_code == 201, answer.text
        dn = answer.json()["dn"]
        wait_for(lambda: "trial" in names(), "the new script loaded")
        changed = {"body": {"general": {}, "arm-b": {"(0010,0010)": "set(B)"}}}
        assert client.put(
            "/api/script", params={"dn": dn}, json=changed, headers=headers
        ).is_success
        wait_for(
            lambda: any(
                r["sections"] == ["general", "arm-b"] for r in client.get("/api/scripts").json()
            ),
            "the edited script loaded",
        )
        assert "arm-b" in client.get("/api/script", params={"dn": dn}).json()["coercionScript"]

        refused = client.post(
            "/api/scripts/import-mercure",
            json={"name": "uncarried", "settings": json.dumps(UNCARRIED)},
            headers=headers,
        )
        assert refused.status_code == 422
        assert "nothing written" in " ".join(refused.json()["problems"]["settings"])
        imported = client.post(
            "/api/scripts/import-mercure",
            json={"name": "from-mercure", "settings": json.dumps(MERCURE)},
            headers=headers,
        )
        assert imported.status_code == 201, imported.text
        assert isinstance(imported.json()["report"], list)
        wait_for(lambda: "from-mercure" in names(), "the imported script loaded")
        [row] = [r for r in client.get("/api/scripts").json() if r["script"] == "from-mercure"]
        assert row["sections"] == ["general", "myproject"]
        assert "uncarried" not in names()
        page = client.get("/scripts/edit", params={"dn": dn})
        assert page.status_code == 200 and "arm-b" in page.text
    viewer, viewer_csrf = node.signed_in(admin=False)
    with closing(viewer):
        assert "trial" in {row["script"] for row in viewer.get("/api/scripts").json()}
        again = viewer.post("/api/scripts", json=good, headers={"X-CSRF-Token": viewer_csrf})
        assert again.status_code == 403
