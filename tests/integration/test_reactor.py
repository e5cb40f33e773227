"""The event-driven reactor loops: associations still echo, store, release, abort and time out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage
from pynetdicom import AE, evt
from pynetdicom.dul import DULServiceProvider

from coercion.net import adapt, reactor
from tests.helpers import make_dataset

pytestmark = pytest.mark.integration

VERIFICATION = UID("1.2.840.10008.1.1")


class Acceptor:
    """A pynetdicom SCP that records what happened to its associations."""

    def __init__(self, network_timeout: float = 30) -> None:
        self.released = threading.Event()
        self.aborted = threading.Event()
        self.stored: list[str] = []
        ae = AE(ae_title="ACCEPTOR")
        ae.network_timeout = network_timeout
        ae.add_supported_context(VERIFICATION)
        ae.add_supported_context(CTImageStorage)
        handlers: list[Any] = [
            (evt.EVT_RELEASED, lambda event: self.released.set()),
            (evt.EVT_ABORTED, lambda event: self.aborted.set()),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self._store),
        ]
        server: Any = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.server = server
        self.port = int(server.server_address[1])

    def _store(self, event: Any) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000


@pytest.fixture
def acceptor() -> Iterator[Acceptor]:
    assert adapt.install()
    server = Acceptor()
    yield server
    server.server.shutdown()


def _requestor() -> AE:
    ae = AE(ae_title="REQUESTOR")
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CTImageStorage)
    return ae


def test_install_replaces_the_polling_loops() -> None:
    """On pynetdicom 3.0 the DUL loop is the event-driven one, installed once."""
    assert adapt.install() and adapt.install()
    assert DULServiceProvider.run_reactor is reactor.run_dul


def test_echo_and_store_then_release(acceptor: Acceptor) -> None:
    """Many exchanges over one association, then a release both sides see."""
    assoc = _requestor().associate("127.0.0.1", acceptor.port, ae_title="ACCEPTOR")
    assert assoc.is_established
    for _ in range(100):
        assert assoc.send_c_echo().Status == 0x0000
    for index in range(20):
        ds: Dataset = make_dataset()
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.3.{index}"
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert acceptor.released.wait(5)
    assert acceptor.stored == [f"1.2.826.0.1.3680043.99.3.{i}" for i in range(20)]


def test_abort_reaches_the_acceptor(acceptor: Acceptor) -> None:
    """A requestor's A-ABORT ends the acceptor's association."""
    assoc = _requestor().associate("127.0.0.1", acceptor.port, ae_title="ACCEPTOR")
    assert assoc.is_established
    assoc.abort()
    assert acceptor.aborted.wait(5)
    assert not acceptor.released.is_set()


def test_idle_association_times_out() -> None:
    """The network timeout still ends an idle association."""
    assert adapt.install()
    server = Acceptor(network_timeout=0.3)
    try:
        assoc = _requestor().associate("127.0.0.1", server.port, ae_title="ACCEPTOR")
        assert assoc.is_established
        assert server.aborted.wait(5)
    finally:
        server.server.shutdown()
