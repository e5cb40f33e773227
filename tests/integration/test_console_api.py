"""The console's JSON API on a running node, on the embedded directory and on slapd."""

from __future__ import annotations

import hashlib
import ssl
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coercion.console.sessions import SIGNIN_FAILURES
from coercion.directory.sources import LdapDirectory, LdapSettings
from tests.console import (
    ADMIN_PASSWORD,
    ConsoleNode,
    embedded_node,
    slapd_node,
    stop,
    wait_for,
)
from tests.helpers import BASE, DEVICE, dcmtk, make_dataset, stored, wait_until
from tests.slapd import Slapd, make_tls_files

pytestmark = pytest.mark.integration

NEW_RULE: dict[str, Any] = {
    "ae_title": None,
    "entry": {
        "cn": "deidentify-newmod",
        "description": "De-identify what NEWMOD sends",
        "coercionURI": "deidentify:RetainUIDsOption",
        "coercionDIMSE": ["C_STORE_RQ"],
        "dicomTransferRole": "SCP",
        "coercionCondition": ["SendingApplicationEntityTitle=NEWMOD"],
        "coercionPriority": 20,
    },
}
NEW_DN = f"cn=deidentify-newmod,{DEVICE}"


@pytest.fixture
def node(console_node: ConsoleNode) -> ConsoleNode:
    """The node of each test: on the embedded directory, then on slapd."""
    return console_node


def _rule_names(client: Any) -> set[str]:
    answer = client.get("/api/rules")
    assert answer.status_code == 200
    return {row["rule"] for row in answer.json()}


def _directory_state(node: ConsoleNode) -> str:
    """A digest of the directory's entries (LDIF files, or every entry on slapd)."""
    if node.config is not None:
        digest = hashlib.sha256()
        for path in sorted(node.config.iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()
    source = LdapDirectory(LdapSettings(_slapd_url(node), None))
    try:
        return hashlib.sha256(repr(sorted(source.entries())).encode()).hexdigest()
    finally:
        source.close()


def _slapd_url(node: ConsoleNode) -> str:
    args = node.served.process.args
    assert isinstance(args, list)
    return str(args[args.index("--ldap") + 1])


def test_only_signin_health_and_metrics_without_session(node: ConsoleNode) -> None:
    """A client that is not signed in gets the sign-in page, /healthz and /metrics, no more."""
    with node.client() as client:
        assert client.get("/").status_code == 303
        assert client.get("/").headers["location"] == "/signin"
        assert client.get("/rules").status_code == 303
        for path in ("/api/rules", "/api/overview", "/api/openapi.json", "/api/session"):
            assert client.get(path).status_code == 401, path
        assert client.post("/api/rules", json=NEW_RULE).status_code in (401, 403)
        page = client.get("/signin")
        assert page.status_code == 200 and 'id="signin-form"' in page.text
        assert client.get("/static/console.js").status_code == 200
        assert client.get("/healthz").json()["status"] == "ok"
        assert "coercion_config_reloads_total" in client.get("/metrics").text


def test_wrong_password_refused(node: ConsoleNode) -> None:
    """A wrong password (or an unknown name) signs nobody in and sets no cookie."""
    with node.client() as client:
        for name, password in ((node.admin, "wrong-password"), ("nobody", "x" * 10)):
            answer = client.post("/api/session", json={"name": name, "password": password})
            assert answer.status_code == 401
            assert "coercion_session" not in answer.cookies
        # A form of another site can post text/plain or a form, never JSON: refused.
        body = f'{{"name": "{node.admin}", "password": "{ADMIN_PASSWORD}"}}'
        plain = client.post("/api/session", content=body, headers={"Content-Type": "text/plain"})
        assert plain.status_code == 422
        foreign = client.post(
            "/api/session",
            json={"name": node.admin, "password": ADMIN_PASSWORD},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        assert client.get("/api/rules").status_code == 401


def test_viewer_reads_and_cannot_change(node: ConsoleNode) -> None:
    """A viewer sees the rules and the overview; every change is refused (403)."""
    client, csrf = node.signed_in(admin=False)
    with closing(client):
        assert client.get("/api/session").json()["role"] == "viewer"
        assert "deidentify-research-store" in _rule_names(client)
        overview = client.get("/api/overview").json()
        assert overview["ae_titles"] == ["COERCION", "RESEARCH"]
        assert overview["dicom_address"] == f"127.0.0.1:{node.served.port}"
        assert overview["http_address"] == node.url + "/"
        assert overview["rules"]["count"] == 3 and overview["directory"]["reachable"]
        assert client.get("/rules").status_code == 200
        headers = {"X-CSRF-Token": csrf}
        assert client.post("/api/rules", json=NEW_RULE, headers=headers).status_code == 403
        dn = f"cn=deidentify-research-store,dicomAETitle=RESEARCH,{DEVICE}"
        answer = client.put(
            "/api/rule/enabled", params={"dn": dn}, json={"enabled": False}, headers=headers
        )
        assert answer.status_code == 403
        assert client.get("/rules/new").status_code == 403


def test_changes_need_the_csrf_token_and_this_origin(node: ConsoleNode) -> None:
    """A change without the session's CSRF token, or from another site, is refused."""
    client, csrf = node.signed_in()
    before = _directory_state(node)
    with closing(client):
        assert client.post("/api/rules", json=NEW_RULE).status_code == 403
        wrong = {"X-CSRF-Token": csrf[:-2] + "xx"}
        assert client.post("/api/rules", json=NEW_RULE, headers=wrong).status_code == 403
        foreign = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert client.post("/api/rules", json=NEW_RULE, headers=foreign).status_code == 403
        assert client.delete("/api/session").status_code == 403
    assert _directory_state(node) == before


def test_bad_rule_refused_with_field_errors(node: ConsoleNode) -> None:
    """A rule the loader would reject comes back with problems per attribute; nothing written."""
    client, csrf = node.signed_in()
    before = _directory_state(node)
    entry: dict[str, Any] = {
        "cn": "bad-rule",
        "coercionURI": "deidentify:RetainUIDOption",
        "coercionDIMSE": ["C_STORE_RQ"],
        "dicomTransferRole": "SCP",
        "coercionCondition": ["PatientNam=DOE.*"],
        "coercionPriority": "high",
    }
    bad = {"ae_title": "RESEARCH", "entry": entry}
    with closing(client):
        answer = client.post("/api/rules", json=bad, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 422
        problems = answer.json()["problems"]
        assert "coercionPriority" in problems and "integer" in problems["coercionPriority"][0]
        entry["coercionPriority"] = 5
        answer = client.post("/api/rules", json=bad, headers={"X-CSRF-Token": csrf})
        problems = answer.json()["problems"]
        assert answer.status_code == 422
        assert "RetainUIDsOption" in problems["coercionURI"][0]  # did you mean ...
        assert "PatientName" in problems["coercionCondition"][0]
        missing = {"ae_title": "NOSUCHAE", "entry": {"cn": "x"}}
        answer = client.post("/api/rules", json=missing, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 422 and "ae_title" in answer.json()["problems"]
        assert "bad-rule" not in _rule_names(client)
    assert _directory_state(node) == before


def test_rule_created_edited_disabled_deleted(node: ConsoleNode) -> None:
    """A rule made in the console reaches the node; edits, disabling and deleting too."""
    client, csrf = node.signed_in()
    headers = {"X-CSRF-Token": csrf}
    with closing(client):
        answer = client.post("/api/rules", json=NEW_RULE, headers=headers)
        assert answer.status_code == 201, answer.text
        assert answer.json()["dn"] == NEW_DN
        wait_for(lambda: "deidentify-newmod" in _rule_names(client), "the new rule loaded")
        again = client.post("/api/rules", json=NEW_RULE, headers=headers)
        assert again.status_code == 422 and "cn" in again.json()["problems"]
        entry = client.get("/api/rule", params={"dn": NEW_DN}).json()
        assert entry["coercionCondition"] == ["SendingApplicationEntityTitle=NEWMOD"]

        changed = {"entry": {**NEW_RULE["entry"], "coercionPriority": 7}}
        answer = client.put("/api/rule", params={"dn": NEW_DN}, json=changed, headers=headers)
        assert answer.status_code == 200, answer.text

        def priority() -> Any:
            rows = [r for r in client.get("/api/rules").json() if r["rule"] == "deidentify-newmod"]
            return rows and rows[0]["priority"] == 7

        wait_for(priority, "the edit loaded")
        rules_before = client.get("/api/overview").json()["rules"]["count"]
        answer = client.put(
            "/api/rule/enabled", params={"dn": NEW_DN}, json={"enabled": False}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        wait_for(
            lambda: client.get("/api/overview").json()["rules"]["count"] == rules_before - 1,
            "the disabled rule out of the node's rules",
        )
        answer = client.delete("/api/rule", params={"dn": NEW_DN}, headers=headers)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: "deidentify-newmod" not in _rule_names(client), "the rule deleted")
        assert client.get("/api/rule", params={"dn": NEW_DN}).status_code == 404


def test_a_rule_naming_a_device_the_node_does_not_read_yet(node: ConsoleNode) -> None:
    """sup-from-dev: device=ct-scanner-1 names a device of the directory that the node does
    not read before the rule exists: the check finds it (as the reload will), the rule is
    written and loads; a device the directory lacks is refused beside its field.
    """
    client, csrf = node.signed_in()
    headers = {"X-CSRF-Token": csrf}
    rule: dict[str, Any] = {
        "ae_title": None,
        "entry": {
            "cn": "supplement-ct",
            "coercionURI": "sup-from-dev:",
            "coercionParam": ["device=ct-scanner-1"],
            "coercionDIMSE": ["C_STORE_RQ"],
            "dicomTransferRole": "SCP",
            "coercionCondition": ["SendingApplicationEntityTitle=CT01"],
        },
    }
    with closing(client):
        entry = {**rule["entry"], "cn": "supplement-none", "coercionParam": ["device=no-such"]}
        missing = {"ae_title": None, "entry": entry}
        refused = client.post("/api/rules", json=missing, headers=headers)
        assert refused.status_code == 422, refused.text
        assert "no-such" in refused.text
        answer = client.post("/api/rules", json=rule, headers=headers)
        assert answer.status_code == 201, answer.text
        wait_for(lambda: "supplement-ct" in _rule_names(client), "the rule loaded by the node")
        assert (
            client.delete(
                "/api/rule", params={"dn": f"cn=supplement-ct,{DEVICE}"}, headers=headers
            ).status_code
            == 200
        )


def test_openapi_document_describes_the_api(node: ConsoleNode) -> None:
    """/api/openapi.json (signed in) lists every endpoint the pages use."""
    client, _csrf = node.signed_in(admin=False)
    with closing(client):
        document = client.get("/api/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/api/session",
        "/api/overview",
        "/api/rules",
        "/api/rules/form",
        "/api/rule",
        "/api/rule/enabled",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    assert set(paths["/api/rule"]) == {"get", "put", "delete"}
    assert "/signin" not in paths


def test_sign_out_ends_the_session(node: ConsoleNode) -> None:
    """Signing out (with the CSRF token) ends the session."""
    client, csrf = node.signed_in()
    with closing(client):
        assert client.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert client.get("/api/rules").status_code == 401


def test_rule_form_fields_from_the_schema(node: ConsoleNode) -> None:
    """The form's fields come from the rule's JSON Schema; options carry PS3.15 names."""
    client, _csrf = node.signed_in()
    with closing(client):
        form = client.get("/api/rules/form").json()
        page = client.get("/rules/new").text
    fields = {f["name"]: f for f in form["fields"]}
    assert fields["coercionDIMSE"]["kind"] == "choices"
    assert "C_FIND_RSP" in fields["coercionDIMSE"]["choices"]
    assert fields["dicomTransferRole"]["choices"] == ["SCU", "SCP"]
    assert fields["coercionCondition"]["kind"] == "rows"
    assert fields["coercionPriority"]["kind"] == "integer"
    assert {"name": "RetainUIDsOption", "meaning": "Retain UIDs Option"} in form["options"]
    assert "Retain UIDs Option" in page and 'data-field="coercionOnFailure"' in page
    assert form["ae_titles"] == ["COERCION", "RESEARCH"]


def _objects(metrics: str, called: str, result: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "coercion_objects_total"
                and labels.get("called_ae") == called
                and labels.get("result") == result
            ):
                return float(sample.value)
    return 0.0


def test_counters_move_with_stored_objects(node: ConsoleNode, tmp_path: Path) -> None:
    """An object sent with storescu moves /metrics and the overview's counts."""
    source = tmp_path / "one.dcm"
    make_dataset().save_as(source, enforce_file_format=True)
    with node.client() as client:
        before = _objects(client.get("/metrics").text, "RESEARCH", "stored")
        sent = dcmtk(
            "storescu", "-aet", "CT01", "-aec", "RESEARCH", "127.0.0.1", node.served.port, source
        )
        assert sent.returncode == 0, sent.stderr
        metrics = client.get("/metrics").text
    assert _objects(metrics, "RESEARCH", "stored") == before + 1
    assert (
        'coercion_rule_objects_total{called_ae="RESEARCH",result="stored",rule="deidentify-research-store"}'
        in metrics
    )
    assert 'coercion_coercion_seconds_count{called_ae="RESEARCH"}' in metrics
    assert 'coercion_rule_seconds_count{rule="deidentify-research-store"}' in metrics
    assert stored(node.served.data)
    client, _csrf = node.signed_in(admin=False)
    with closing(client):
        objects = client.get("/api/overview").json()["objects"]
    assert {"called_ae": "RESEARCH", "result": "stored"}.items() <= objects[0].items()
    assert objects[0]["total"] >= 1


@pytest.mark.parametrize("kind", ["embedded"])
def test_session_times_out(kind: str, tmp_path: Path) -> None:
    """A session unused for longer than --http-session-timeout is over."""
    node = embedded_node(tmp_path, "--http-session-timeout", "1")
    try:
        client, _csrf = node.signed_in()
        with closing(client):
            assert client.get("/api/rules").status_code == 200
            time.sleep(1.5)  # the behaviour under test is the passing of time, idle
            assert client.get("/api/rules").status_code == 401
            assert client.get("/").status_code == 303
    finally:
        stop(node)


def test_repeated_failed_sign_ins_wait_for_the_lockout(tmp_path: Path) -> None:
    """After SIGNIN_FAILURES wrong passwords even the right one waits (429, Retry-After)."""
    node = embedded_node(tmp_path, "--http-signin-lockout", "2")
    try:
        with node.client() as client:

            def sign_in(password: str) -> httpx.Response:
                return client.post("/api/session", json={"name": node.admin, "password": password})

            for _ in range(SIGNIN_FAILURES):
                assert sign_in("wrong-password").status_code == 401
            held = sign_in(ADMIN_PASSWORD)
            assert held.status_code == 429 and "coercion_session" not in held.cookies
            assert held.json()["detail"].startswith("too many failed sign-ins")
            assert 1 <= int(held.headers["Retry-After"]) <= 2
            assert client.get("/api/rules").status_code == 401
            wait_until(
                lambda: sign_in(ADMIN_PASSWORD).status_code == 200,
                "a sign-in once the lockout has passed",
                timeout=10,
                interval=0.2,
            )
            assert client.get("/api/rules").status_code == 200
    finally:
        stop(node)
    log = node.served.text()
    assert "sign-in from 127.0.0.1 refused for " in log and "wrong-password" not in log


def test_metrics_restricted_to_an_address_list(tmp_path: Path) -> None:
    """With --metrics-allow, /metrics and /healthz answer 403 to other addresses."""
    node = embedded_node(tmp_path, "--metrics-allow", "10.0.0.0/8")
    try:
        with node.client() as client:
            assert client.get("/metrics").status_code == 403
            assert client.get("/healthz").status_code == 403
            assert client.get("/signin").status_code == 200
    finally:
        stop(node)


def test_no_http_runs_the_node_alone(tmp_path: Path) -> None:
    """--no-http: the node serves DICOM and no console."""
    from tests.helpers import config_dir, start_node

    served = start_node(tmp_path, 0, config_dir(tmp_path), "--no-http")
    try:
        echoed = dcmtk("echoscu", "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", served.port)
        assert echoed.returncode == 0
        assert "console on" not in served.text()
    finally:
        served.process.terminate()
        served.process.wait(20)


def test_console_speaks_https_with_the_node_certificate(tmp_path: Path) -> None:
    """With --tls-cert/--tls-key the console is HTTPS and its session cookie is Secure."""
    tls = make_tls_files(tmp_path / "tls")
    node = embedded_node(
        tmp_path, "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)
    )
    try:
        assert node.url.startswith("https://127.0.0.1:")
        with httpx.Client(
            base_url=node.url, verify=ssl.create_default_context(cafile=tls.ca_cert), timeout=30
        ) as client:
            answer = client.post(
                "/api/session", json={"name": node.admin, "password": ADMIN_PASSWORD}
            )
            assert answer.status_code == 200
            cookie = answer.headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert client.get("/api/rules").status_code == 200
        plain = node.url.replace("https://", "http://")
        with httpx.Client(timeout=10) as client, pytest.raises(httpx.HTTPError):
            client.get(plain + "/healthz")
    finally:
        stop(node)


def test_directory_person_in_no_group_cannot_sign_in(slapd: Slapd, tmp_path: Path) -> None:
    """With --ldap, a right password of someone in neither group signs nobody in."""
    node = slapd_node(slapd, tmp_path)
    try:
        slapd.ldapmodify(
            f"dn: cn=carol,{BASE}\nchangetype: add\nobjectClass: person\ncn: carol\nsn: C\n"
            "userPassword: carol-password-1\n"
        )
        with node.client() as client:
            for name, password in (
                (f"cn=carol,{BASE}", "carol-password-1"),
                (node.admin, ""),
                (node.admin, "wrong"),
            ):
                answer = client.post("/api/session", json={"name": name, "password": password})
                assert answer.status_code in (401, 422), name
            assert client.get("/api/rules").status_code == 401
    finally:
        stop(node)
