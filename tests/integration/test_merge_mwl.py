"""merge-mwl: against a local worklist folder and a pynetdicom worklist SCP on 127.0.0.1."""

from __future__ import annotations

import io
import logging
import ssl
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from coercion.engine import ActionEnv, Dimse, EventContext, PeerDevice, Role, build_action
from coercion.errors import RuleFailedError
from coercion.net.worklist import answer, matches
from tests.console import embedded_node, post_preview, stop
from tests.helpers import (
    DEVICE,
    Start,
    config_dir,
    dcmtk,
    free_port,
    remote_device,
    stored,
    storescu_tls,
    tls_options,
    with_tls,
)
from tests.slapd import TlsFiles, make_tls_files

pytestmark = pytest.mark.integration

SECRET = b"m" * 32
CTX = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "COERCION", "127.0.0.1", "127.0.0.1")
STUDY = "1.2.826.0.1.3680043.8.498.1001"
#: A stylesheet of the form of dcm4chee-arc's mwl2series.xsl (a subset of its attributes).
MWL2SERIES = """<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <xsl:copy-of select="DicomAttribute[@tag='00080050']"/>
      <xsl:copy-of select="DicomAttribute[@tag='00100010']"/>
      <xsl:copy-of select="DicomAttribute[@tag='00100020']"/>
      <xsl:if test="DicomAttribute[@tag='00321060']">
        <DicomAttribute tag="00081030" vr="LO">
          <xsl:copy-of select="DicomAttribute[@tag='00321060']/Value"/>
        </DicomAttribute>
      </xsl:if>
      <DicomAttribute tag="00400275" vr="SQ">
        <Item number="1">
          <xsl:copy-of select="DicomAttribute[@tag='00080050']"/>
          <xsl:copy-of select="DicomAttribute[@tag='0020000D']"/>
          <xsl:copy-of
            select="DicomAttribute[@tag='00400100']/Item/DicomAttribute[@tag='00400009']"/>
          <xsl:copy-of select="DicomAttribute[@tag='00401001']"/>
        </Item>
      </DicomAttribute>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
"""


def _item(accession: str, step_id: str, start: str, status: str = "SCHEDULED") -> Dataset:
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.PatientName = "WORKLIST^PATIENT"
    item.PatientID = "WL-001"
    item.AccessionNumber = accession
    item.StudyInstanceUID = STUDY
    item.RequestedProcedureDescription = "CT CHEST"
    item.RequestedProcedureID = f"RP-{step_id}"
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledProcedureStepID = step_id
    step.ScheduledProcedureStepStartDate = start
    step.ScheduledProcedureStepStartTime = "0900"
    step.ScheduledProcedureStepStatus = status
    item.ScheduledProcedureStepSequence = [step]
    return item


ITEMS = [_item("ACC-1", "SPS-1", "20240101"), _item("ACC-2", "SPS-2", "20240301", "ARRIVED")]


def _write_worklist(folder: Path) -> None:
    folder.mkdir()
    for number, item in enumerate(ITEMS):
        item.file_meta = FileMetaDataset()
        item.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        item.save_as(folder / f"item{number}.wl", enforce_file_format=False)


def _object(accession: str = "", step_id: str = "") -> Dataset:
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    ds = dcmread(path)
    ds.StudyInstanceUID = STUDY
    ds.AccessionNumber = accession
    if step_id:
        request = Dataset()
        request.ScheduledProcedureStepID = step_id
        ds.RequestAttributesSequence = [request]
    return ds


@pytest.fixture
def stylesheet(tmp_path: Path) -> Path:
    """mwl2series.xsl of dcm4chee-arc's form."""
    path = tmp_path / "mwl2series.xsl"
    path.write_text(MWL2SERIES, encoding="utf-8")
    return path


@pytest.fixture
def local_env(tmp_path: Path) -> ActionEnv:
    """An environment whose local worklist holds ITEMS."""
    _write_worklist(tmp_path / "worklist")
    return ActionEnv(SECRET, worklist_directory=str(tmp_path / "worklist"))


def _reread(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def test_local_worklist_by_study_merges_newest_first(
    stylesheet: Path, local_env: ActionEnv
) -> None:
    """match-by=StudyInstanceUID: both items match; the newest is merged, each is a request item."""
    action = build_action(
        f"merge-mwl:{stylesheet}",
        {"match-by": "StudyInstanceUID", "xsl-no-keyword": "true"},
        local_env,
    )
    ds = _object()
    assert action.apply(ds, CTX)
    out = _reread(ds)
    assert out.PatientName == "WORKLIST^PATIENT" and out.PatientID == "WL-001"
    assert out.StudyDescription == "CT CHEST"
    assert out.AccessionNumber == "ACC-2"  # the newer step
    steps = [item.ScheduledProcedureStepID for item in out.RequestAttributesSequence]
    assert steps == ["SPS-2", "SPS-1"]


def test_local_worklist_by_step_id_and_status(stylesheet: Path, local_env: ActionEnv) -> None:
    """The default match-by=ScheduledProcedureStepID, with local-mwl-status filtering the steps."""
    ds = _object(step_id="SPS-1")
    build_action(f"merge-mwl:{stylesheet}", {}, local_env).apply(ds, CTX)
    assert ds.AccessionNumber == "ACC-1"
    assert [i.ScheduledProcedureStepID for i in ds.RequestAttributesSequence] == ["SPS-1"]
    arrived_only = build_action(
        f"merge-mwl:{stylesheet}", {"local-mwl-status": "ARRIVED"}, local_env
    )
    other = _object(step_id="SPS-1")
    assert arrived_only.apply(other, CTX) == []  # SPS-1 is SCHEDULED: no match, no change
    assert other.AccessionNumber == ""
    keyless = _object()
    del keyless.StudyInstanceUID
    by_study = build_action(f"merge-mwl:{stylesheet}", {"match-by": "StudyInstanceUID"}, local_env)
    assert by_study.apply(keyless, CTX) == []  # no key to match by: never "every item"


@contextmanager
def worklist_scp(
    context: ssl.SSLContext | None = None,
) -> Iterator[tuple[int, list[Dataset]]]:
    """A pynetdicom worklist SCP RIS on 127.0.0.1 answering from ITEMS (over TLS with
    *context*); yields its port and the queries it received."""
    port = free_port()
    queries: list[Dataset] = []

    def on_find(event: Any) -> Any:
        query = event.identifier
        queries.append(query)
        for item in ITEMS:
            if matches(query, item):
                yield 0xFF00, answer(query, item)

    ae = AE(ae_title="RIS")
    ae.add_supported_context(ModalityWorklistInformationFind)
    server: Any = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_FIND, on_find)],
        ssl_context=context,
    )
    try:
        yield port, queries
    finally:
        server.shutdown()


@pytest.fixture
def ris() -> Iterator[tuple[int, list[Dataset]]]:
    """A plain worklist SCP RIS; its port and the queries it received."""
    with worklist_scp() as found:
        yield found


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS server context with the certificate of *files*."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context


def test_upstream_worklist_scp_by_accession(
    stylesheet: Path, ris: tuple[int, list[Dataset]]
) -> None:
    """mwl-scp=RIS: the item comes by C-FIND from the known device's worklist SCP."""
    port, queries = ris
    env = ActionEnv(SECRET)
    env.peers = {"RIS": PeerDevice("ris", {"RIS": ("127.0.0.1", port)})}
    action = build_action(
        f"merge-mwl:{stylesheet}",
        {"mwl-scp": "RIS", "match-by": "AccessionNumber", "filter-by-scu": "true"},
        env,
    )
    ds = _object(accession="ACC-1")
    action.apply(ds, CTX)
    assert len(queries) == 1 and queries[0].AccessionNumber == "ACC-1"
    assert ds.PatientID == "WL-001" and ds.StudyDescription == "CT CHEST"
    assert [i.ScheduledProcedureStepID for i in ds.RequestAttributesSequence] == ["SPS-1"]


# pynetdicom leaves the refused socket to the garbage collector (a ResourceWarning there).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_upstream_worklist_scp_over_tls(stylesheet: Path, tmp_path: Path) -> None:
    """A worklist SCP whose connection uses TLS (it speaks nothing else) is asked over TLS,
    its certificate verified against the node's CA; one the node does not trust: the rule
    fails, nothing asked."""
    files = make_tls_files(tmp_path / "ris-tls")
    params = {"mwl-scp": "RIS", "match-by": "AccessionNumber"}
    with worklist_scp(server_context(files)) as (port, queries):
        peers = {"RIS": PeerDevice("ris", {"RIS": ("127.0.0.1", port)}, tls=frozenset({"RIS"}))}
        env = ActionEnv(SECRET, client_tls=ssl.create_default_context(cafile=files.ca_cert))
        env.peers = peers
        ds = _object(accession="ACC-1")
        build_action(f"merge-mwl:{stylesheet}", params, env).apply(ds, CTX)
        assert len(queries) == 1 and ds.PatientID == "WL-001"
        untrusting = ActionEnv(SECRET)  # the system's CAs only
        untrusting.peers = peers
        action = build_action(f"merge-mwl:{stylesheet}", params, untrusting)
        # pynetdicom logs the TLS error with its traceback, which would keep the failed
        # socket alive in the captured log until the session ends: not logged here.
        quiet = logging.getLogger("pynetdicom")
        quiet.disabled = True
        try:
            with pytest.raises(RuleFailedError, match="unreachable"):
                action.apply(_object(accession="ACC-1"), CTX)
        finally:
            quiet.disabled = False
        assert len(queries) == 1


# pynetdicom leaves the refused socket to the garbage collector (a ResourceWarning there).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_upstream_unreachable_fails_the_rule(stylesheet: Path) -> None:
    """A worklist SCP that does not answer fails the rule (no value in the message)."""
    env = ActionEnv(SECRET)
    env.peers = {"RIS": PeerDevice("ris", {"RIS": ("127.0.0.1", free_port())})}
    action = build_action(f"merge-mwl:{stylesheet}", {"mwl-scp": "RIS"}, env)
    with pytest.raises(RuleFailedError, match="unreachable") as caught:
        action.apply(_object(step_id="SPS-1"), CTX)
    assert "SPS-1" not in str(caught.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"match-by": "PatientName"}, "match-by= takes one of"),
        ({"local-mwl-worklist-label": "CT"}, "has no labels"),
        ({"mwl-entity-to-merge": "series"}, "study or mpps"),
        ({"mwl-scp": "NOSUCH"}, "not the AE title of a known device"),
        ({"local-mwl-status": "DONE"}, "local-mwl-status= takes"),
        ({"matchby": "x"}, "unknown parameter matchby"),
    ],
)
def test_merge_mwl_validates_at_load(
    stylesheet: Path, params: dict[str, str], message: str
) -> None:
    """Bad parameters are refused when the rules load, saying what is accepted."""
    env = ActionEnv(SECRET)
    env.peers = {"RIS": PeerDevice("ris", {"RIS": ("127.0.0.1", 104)})}
    with pytest.raises(ValueError, match=message):
        build_action(f"merge-mwl:{stylesheet}", params, env)


def test_node_merges_worklist_and_supplements_from_device(
    serve: Start, tmp_path: Path, stylesheet: Path
) -> None:
    """storescu -> node: merge-mwl from the node's worklist folder, then sup-from-dev from CT01's
    device entry (its dicomInstitutionName), as a user configures them."""
    rules = f"""
dn: cn=merge-mwl,dicomAETitle=COERCION,{DEVICE}
objectClass: coercionRule
cn: merge-mwl
coercionURI: merge-mwl:{stylesheet}
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionPriority: 2
coercionParam: match-by=StudyInstanceUID
coercionParam: xsl-no-keyword=true

dn: cn=sup-from-dev,dicomAETitle=COERCION,{DEVICE}
objectClass: coercionRule
cn: sup-from-dev
coercionURI: sup-from-dev:
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionPriority: 1
"""
    config = config_dir(tmp_path, extra=rules)
    default = config / "10-default-config.ldif"
    text = default.read_text(encoding="utf-8").replace(
        "dicomPrimaryDeviceType: CT\n",
        "dicomPrimaryDeviceType: CT\ndicomInstitutionName: Example Hospital\n",
        1,
    )
    default.write_text(text, encoding="utf-8")
    node = serve(config)
    _write_worklist(node.data / "worklist")
    source = tmp_path / "in.dcm"
    ds = _object()
    del ds.InstitutionName
    ds.save_as(source, enforce_file_format=True)
    sent = dcmtk("storescu", "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", node.port, source)
    assert sent.returncode == 0, sent.stderr
    [output] = stored(node.data)
    out = dcmread(output)
    assert out.PatientID == "WL-001" and out.StudyDescription == "CT CHEST"
    assert [i.ScheduledProcedureStepID for i in out.RequestAttributesSequence] == ["SPS-2", "SPS-1"]
    assert out.InstitutionName == "Example Hospital"
    assert "WORKLIST^PATIENT" not in node.text()


def merge_mwl_rule(*params: str) -> str:
    """LDIF of a merge-mwl: rule (no stylesheet) for what COERCION receives, with *params*."""
    lines = "".join(f"coercionParam: {param}\n" for param in params)
    return f"""
dn: cn=merge-mwl,dicomAETitle=COERCION,{DEVICE}
objectClass: coercionRule
cn: merge-mwl
coercionURI: merge-mwl:
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
{lines}"""


@pytest.mark.parametrize("workers", [(), ("--workers", "1")], ids=["default-workers", "one"])
def test_node_merges_from_a_worklist_scp_over_tls(
    serve: Start, tmp_path: Path, workers: tuple[str, ...]
) -> None:
    """A node with --tls-ca asks a worklist SCP whose connection names TLS cipher suites over
    TLS, with its worker processes and in one process alike."""
    node_tls = make_tls_files(tmp_path / "node-tls")
    ris_tls = make_tls_files(tmp_path / "ris-tls")
    with worklist_scp(server_context(ris_tls)) as (port, queries):
        extra = with_tls(remote_device("secure-ris", "SECURE_RIS", port), port)
        extra += merge_mwl_rule("mwl-scp=SECURE_RIS", "match-by=AccessionNumber")
        node = serve(
            config_dir(tmp_path, extra=extra),
            *tls_options(node_tls.server_cert, node_tls.server_key, ris_tls.ca_cert),
            *workers,
        )
        source = tmp_path / "in.dcm"
        _object(accession="ACC-1").save_as(source, enforce_file_format=True)
        # The node asks for a client certificate (--tls-ca): RIS's pair, whose CA it trusts.
        sent = storescu_tls(
            node.port, source, ris_tls.server_key, ris_tls.server_cert, node_tls.ca_cert
        )
        assert sent.returncode == 0, sent.stderr
    assert len(queries) == 1 and queries[0].AccessionNumber == "ACC-1"
    [output] = stored(node.data)
    assert dcmread(output).PatientID == "WL-001"


def test_console_preview_merges_from_the_node_worklist(tmp_path: Path) -> None:
    """The console's preview of a merge-mwl: rule reads the worklist the node reads (its --data),
    not a folder relative to where the node was started."""
    node = embedded_node(tmp_path, ldif=merge_mwl_rule("match-by=StudyInstanceUID"))
    try:
        _write_worklist(node.served.data / "worklist")
        buffer = io.BytesIO()
        _object().save_as(buffer, enforce_file_format=True)
        client, csrf = node.signed_in()
        with closing(client):
            query = {"calling": "CT01", "called": "COERCION", "dimse": "C_STORE_RQ"}
            answer = post_preview(client, csrf, buffer.getvalue(), query)
        assert answer.status_code == 200, answer.text
        [applied] = [r for r in answer.json()["rules"] if r["rule"] == "merge-mwl"]
        [patient] = [c for c in applied["changes"] if c["keyword"] == "PatientID"]
        assert patient["after"] == "WL-001"
    finally:
        stop(node)
