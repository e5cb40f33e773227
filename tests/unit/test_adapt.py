"""The pynetdicom adaptations: version check with a clean fallback, TCP_NODELAY, adopted sockets."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pynetdicom
import pytest
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.transport import RequestHandler

from coercion.net import adapt

VERIFICATION = UID("1.2.840.10008.1.1")


def test_an_unsupported_version_keeps_pynetdicom_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another pynetdicom version: install() is False, one warning, the loops not touched."""
    monkeypatch.setattr(pynetdicom, "__version__", "9.1.0")
    monkeypatch.setattr(adapt, "_warned", False)
    monkeypatch.setattr(adapt, "_install_loops", lambda: pytest.fail("loops installed"))
    monkeypatch.setattr(adapt, "_installed", False)
    with caplog.at_level(logging.WARNING, logger="coercion.net.adapt"):
        assert adapt.install() is False
        assert adapt.install() is False
    [record] = caplog.records
    assert "pynetdicom 9.1.0" in record.getMessage() and "3.0.x" in record.getMessage()


def test_the_installed_version_is_supported() -> None:
    """The pynetdicom this project pins is one the adaptations were written for."""
    assert adapt.supported(), pynetdicom.__version__


def test_a_socket_bound_beforehand_is_listened_on_with_nodelay() -> None:
    """start_server takes a bound socket; associations come in on it; TCP_NODELAY on both ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ae = AE(ae_title="NODE")
    ae.add_supported_context(VERIFICATION)
    server: Any = adapt.start_server(ae, listener, [], RequestHandler)
    try:
        assert server.socket is listener
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        requestor = AE(ae_title="PEER")
        requestor.add_requested_context(VERIFICATION)
        assoc = requestor.associate(
            "127.0.0.1", port, ae_title="NODE", evt_handlers=adapt.requestor_handlers()
        )
        assert assoc.is_established
        try:
            transport: Any = assoc.dul.socket
            raw = transport.socket
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert int(assoc.send_c_echo().Status) == 0x0000
        finally:
            assoc.release()
    finally:
        ae.shutdown()
