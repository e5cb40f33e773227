"""Checks of command-line values that would otherwise end in a traceback.

Each turns a mistake a user makes (a bad URL, a TLS key that does not fit
its certificate, a port in use, a data folder that cannot be written) into
one :class:`~coercion.errors.CoercionError` line naming the option, with the
exit status of its class.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from coercion.dicom.outputs import private_folders
from coercion.errors import CoercionError, ConfigError, OutputError

__all__ = ["bind_error", "check_ldap_url", "check_tls", "prepare_data_folder"]

_LDAP_SCHEMES = ("ldap", "ldaps", "ldapi")


def check_ldap_url(url: str) -> None:
    """Refuse an --ldap value that is not ldap://, ldaps:// or ldapi:// with a host and a port."""
    hint = "expected ldap://HOST[:PORT], ldaps://HOST[:PORT] or ldapi://SOCKET"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError(f"--ldap {url}: not a valid URL; {hint}") from None
    if parts.scheme.lower() not in _LDAP_SCHEMES:
        raise ConfigError(f"--ldap {url}: unknown scheme {parts.scheme!r}; {hint}")
    if parts.scheme.lower() != "ldapi" and not parts.hostname:
        raise ConfigError(f"--ldap {url}: no host; {hint}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"--ldap {url}: port out of range; {hint}")


def check_tls(cert: Path | None, key: Path | None, ca: Path | None) -> None:
    """Load --tls-ca and --tls-cert/--tls-key once, so that a bad file is named at start."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if ca is not None:
        try:
            context.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"--tls-ca {ca}: no CA certificate could be read ({_reason(exc)}); "
                "give a file of PEM certificates"
            ) from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            reason = _reason(exc)
            what = (
                "the key does not belong to the certificate; give the key it was made for"
                if "KEY_VALUES_MISMATCH" in reason
                else f"not a PEM certificate and its key ({reason}); give a PEM certificate "
                "and its unencrypted PEM private key"
            )
            raise ConfigError(f"--tls-cert {cert}, --tls-key {key}: {what}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__


def prepare_data_folder(data: Path) -> None:
    """Create the data folder (mode 0700) and make sure a file can be written in it."""
    try:
        private_folders(data)
        with tempfile.TemporaryFile(dir=data):
            pass
    except OSError as exc:
        raise OutputError(
            f"--data {data}: cannot write there ({exc.strerror or exc.__class__.__name__}); "
            "give a folder this user can create files in"
        ) from None


def bind_error(exc: OSError, host: str, port: int) -> CoercionError:
    """The one-line error for a listener that could not be set up on *host*:*port*."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"--host {host}: not an address of this machine nor a host name it knows; "
            "give one of its addresses (0.0.0.0 for all)"
        )
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"--port {port}: {host}:{port} is in use by another program; "
            "stop it or give another port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"--port {port}: not allowed to listen on {host}:{port}; "
            "ports below 1024 need privileges"
        )
    reason = exc.strerror or os.strerror(exc.errno or 0) or exc.__class__.__name__
    return ConfigError(f"{host}:{port}: cannot listen ({reason})")
