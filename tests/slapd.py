"""A private OpenLDAP slapd for tests: one per test, on 127.0.0.1 and a private ldapi socket.

``start_slapd`` builds a ``cn=config`` (core, cosine and inetorgperson from
/etc/ldap/schema, then the given schema LDIF files), loads the data files
offline with ``slapadd``, starts ``slapd -d none`` in the foreground on a free
port and returns once an admin bind succeeds. Nothing is written outside the given directory.
Given ``TlsFiles`` (``make_tls_files`` makes a throwaway CA and a certificate for
127.0.0.1 with the ``openssl`` command), slapd also offers StartTLS on its
``ldap://`` port and listens on an ``ldaps://`` port.

The fixtures ``slapd`` and ``slapd_no_syncprov`` (registered by
tests/conftest.py) start one from the repository's ``ldif/*.ldif``: files whose
first entry lies under ``cn=schema,cn=config`` are schema, the others data, each
group in file-name order. The suffix is the DN of the first entry of the first
data file (``DEFAULT_SUFFIX`` with just its entry when there is no data file).
``slapd_tls`` is ``slapd`` with TLS files from ``make_tls_files``.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import ldap3
import pytest
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError

from tests.helpers import free_port
from tests.servers import ManagedServer, ServerError, run_tool, short_directory, start_on_free_port

REPOSITORY = Path(__file__).resolve().parents[1]
LDIF_DIR = REPOSITORY / "ldif"

#: Schemas every instance gets before its own, in this order (inetorgperson needs cosine).
SYSTEM_SCHEMAS = tuple(
    Path("/etc/ldap/schema") / f"{name}.ldif" for name in ("core", "cosine", "inetorgperson")
)

#: The suffix of the repository fixture while ldif/ holds no data file.
DEFAULT_SUFFIX = "dc=coercion,dc=local"

#: A Unix socket path longer than this makes slapd refuse it and then segfault.
MAX_SOCKET_PATH = 100

#: The admin password (and cn=config's) of every instance; they listen on loopback only.
_ADMIN_PASSWORD = "coercion-test-secret"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS server: the CA that clients trust, the server's certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


class SlapdError(ServerError):
    """slapd or slapadd failed; the message carries their output."""


class LdapToolError(subprocess.CalledProcessError):
    """An ldap-utils command failed; unlike its base class, str() shows stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}stdout:\n{self.stdout}"


@dataclass
class Slapd(ManagedServer):
    """A running (or stopped) private slapd and what a client needs to reach it.

    Its log is slapd's stderr with ``-d none``: errors and the "slapd starting" line.
    """

    program: ClassVar[str] = "slapd"
    error: ClassVar[type[ServerError]] = SlapdError
    ready_line: ClassVar[bytes] = b"slapd starting"
    port_in_use: ClassVar[str] = "errno=98"

    url: str
    ldapi: str
    suffix: str
    admin_dn: str
    password: str
    #: The ``ldaps://`` listener and the files behind it; None without TLS.
    ldaps_url: str | None = None
    tls: TlsFiles | None = None

    @property
    def address(self) -> str:
        """The ``ldap://`` URL."""
        return self.url

    def command(self) -> list[str]:
        """``slapd -d none`` with its cn=config, listening on its ldap://, ldapi:// (ldaps://)."""
        urls = f"{self.url}/ {self.ldapi}" + (f" {self.ldaps_url}/" if self.ldaps_url else "")
        return [_tool("slapd"), "-d", "none", "-F", str(self.directory / "slapd.d"), "-h", urls]

    def ldapmodify(self, ldif_text: str) -> subprocess.CompletedProcess[str]:
        """Apply *ldif_text* with the real ``ldapmodify`` as the admin.

        Raises LdapToolError (a CalledProcessError whose text shows stderr) on failure.
        """
        command = [
            _tool("ldapmodify"),
            "-x",
            "-H",
            self.url,
            "-D",
            self.admin_dn,
            "-w",
            self.password,
        ]
        text = ldif_text if ldif_text.endswith("\n") else ldif_text + "\n"
        result = subprocess.run(
            command,
            input=text,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LDAPNOINIT": "1"},  # ignore ~/.ldaprc and /etc/ldap/ldap.conf
        )
        if result.returncode != 0:
            raise LdapToolError(result.returncode, command, result.stdout, result.stderr)
        return result

    def probe(self) -> bool:
        """One real admin bind with ldap3: True on success, False if the port refused.

        The port may refuse connections for a moment after "slapd starting"
        (listen() comes after the log line). Any other failure is a SlapdError
        with slapd's log. The connection's socket is closed whatever happens:
        ldap3 leaves it open when the connect fails (a ResourceWarning, an error
        under pytest).
        """
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=5)
        connection = ldap3.Connection(server, self.admin_dn, self.password, receive_timeout=5)
        try:
            connection.open()
            if not connection.bind():
                raise self.failure(
                    f"{self.url}: admin bind as {self.admin_dn} failed: {connection.result}"
                )
        except LDAPSocketOpenError:
            return False
        except LDAPException as exc:
            raise self.failure(f"{self.url}: admin bind as {self.admin_dn} failed: {exc}") from exc
        finally:
            if connection.socket is not None:
                connection.unbind()
                if connection.socket is not None:
                    connection.socket.close()
        return True


def start_slapd(
    directory: Path,
    schema_files: list[Path],
    data_files: list[Path],
    suffix: str,
    syncprov: bool = True,
    tls: TlsFiles | None = None,
) -> Slapd:
    """Build a slapd in *directory* (which should be short: it holds the ldapi socket) and start it.

    *schema_files* are cn=config schema LDIF files, included after core, cosine
    and inetorgperson; *data_files* are loaded into the ``suffix`` database with
    ``slapadd -q -n1`` before the start. With *syncprov* the database has the
    syncprov overlay (contextCSN on the suffix, syncrepl); without it, clients
    must do without contextCSN (coercion then reads the node's entries at every
    check). With *tls* the ``ldap://`` port offers StartTLS and an ``ldaps://``
    port is opened too (``ldaps_url``).
    Raises SlapdError with the tools' output on any failure.
    """
    directory = directory.resolve()
    socket_path = directory / "ldapi"
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise SlapdError(
            f"{socket_path}: too long for a Unix socket (slapd would crash); "
            'use a short directory such as tests.servers.short_directory("sl")'
        )
    for path in [*SYSTEM_SCHEMAS, *schema_files, *data_files]:
        if not path.is_file():
            raise SlapdError(f"{path}: no such LDIF file")
    for path in [tls.ca_cert, tls.server_cert, tls.server_key] if tls else []:
        if not path.is_file():
            raise SlapdError(f"{path}: no such TLS file")
    (directory / "slapd.d").mkdir(parents=True)
    (directory / "data").mkdir()
    config = directory / "config.ldif"
    config.write_text(
        _config_ldif(directory, [*SYSTEM_SCHEMAS, *schema_files], suffix, syncprov, tls),
        encoding="utf-8",
    )
    slapd_d = str(directory / "slapd.d")
    run_tool([_tool("slapadd"), "-n0", "-F", slapd_d, "-l", str(config)], SlapdError)
    for data_file in data_files:
        command = [_tool("slapadd"), "-q", "-n1", "-F", slapd_d, "-l", str(data_file.resolve())]
        run_tool(command, SlapdError)
    ldapi = "ldapi://" + urllib.parse.quote(str(socket_path), safe="")
    return start_on_free_port(
        lambda: Slapd(
            directory,
            url=f"ldap://127.0.0.1:{free_port()}",
            ldapi=ldapi,
            suffix=suffix,
            admin_dn=f"cn=admin,{suffix}",
            password=_ADMIN_PASSWORD,
            ldaps_url=f"ldaps://127.0.0.1:{free_port()}" if tls else None,
            tls=tls,
        )
    )


def _config_ldif(
    directory: Path,
    schema_files: list[Path],
    suffix: str,
    syncprov: bool,
    tls: TlsFiles | None = None,
) -> str:
    """The cn=config LDIF of an instance (RECIPES.md section 1)."""
    tls_attributes = (
        f"olcTLSCACertificateFile: {tls.ca_cert.resolve()}\n"
        f"olcTLSCertificateFile: {tls.server_cert.resolve()}\n"
        f"olcTLSCertificateKeyFile: {tls.server_key.resolve()}\n"
        if tls
        else ""
    )
    modules = "olcModuleLoad: back_mdb\n" + ("olcModuleLoad: syncprov\n" if syncprov else "")
    includes = "".join(f"include: {path.resolve().as_uri()}\n" for path in schema_files)
    text = f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {directory}/slapd.pid
{tls_attributes}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
{modules}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcSizeLimit: unlimited

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcRootDN: cn=config
olcRootPW: {_ADMIN_PASSWORD}
olcAccess: {{0}}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage
  by * break

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {suffix}
olcDbDirectory: {directory}/data
olcDbMaxSize: 104857600
olcRootDN: cn=admin,{suffix}
olcRootPW: {_ADMIN_PASSWORD}
olcDbIndex: objectClass eq
olcDbIndex: entryCSN,entryUUID eq
olcAccess: {{0}}to * by * read
"""
    if syncprov:
        text += """
dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 1 1
olcSpSessionLog: 1000
"""
    return text


def _tool(name: str) -> str:
    """The path of an OpenLDAP program (slapd and slapadd live in /usr/sbin)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise SlapdError(f"{name}: not found; install it: apt-get install -y slapd ldap-utils")
    return path


#: The openssl configuration of make_tls_files: a CA, and a server certificate for 127.0.0.1.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = subject
prompt = no

[subject]

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a throwaway CA and a certificate for 127.0.0.1 and localhost in *directory*.

    The certificate serves as a TLS server or client certificate.

    P-256 keys (instant to make), valid for a day, unencrypted. Every call makes a
    new CA, so the CA of one call does not verify the server of another.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "openssl.cnf").write_text(_OPENSSL_CONFIG, encoding="utf-8")
    new_key = "-config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    ca_subject = shlex.quote(f"/CN=coercion test CA {secrets.token_hex(4)}")
    _openssl(
        directory,
        f"req -x509 {new_key} -extensions ca -keyout ca.key -out ca.pem",
        f"-days 1 -subj {ca_subject}",
    )
    _openssl(
        directory, f"req -new {new_key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    )
    _openssl(
        directory,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 1",
        f"-set_serial {secrets.randbits(63)} -extfile openssl.cnf -extensions server",
        "-out server.pem",
    )
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def _openssl(directory: Path, *arguments: str) -> None:
    """Run ``openssl`` in *directory* with the words of *arguments*; SlapdError if it fails."""
    path = shutil.which("openssl")
    if path is None:
        raise SlapdError("openssl: not found; install it: apt-get install -y openssl")
    command = [path, *(word for argument in arguments for word in shlex.split(argument))]
    run_tool(command, SlapdError, cwd=directory)


def first_dn(path: Path) -> str | None:
    """The DN of the first entry of an LDIF file (folded and base64 forms too), or None."""
    logical: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith(" ") and logical:
            logical[-1] += raw[1:]
        else:
            logical.append(raw)
    for line in logical:
        key, _, value = line.partition(":")
        if key.lower() != "dn":
            continue
        if value.startswith(":"):
            return base64.b64decode(value[1:].strip()).decode("utf-8")
        return value.strip()
    return None


def is_schema_file(path: Path) -> bool:
    """True when the first entry of *path* lies under ``cn=schema,cn=config``."""
    dn = first_dn(path)
    return dn is not None and dn.replace(" ", "").lower().endswith("cn=schema,cn=config")


def repository_ldif() -> tuple[list[Path], list[Path]]:
    """The repository's ``ldif/*.ldif`` split into (schema files, data files), by file name."""
    files = sorted(LDIF_DIR.glob("*.ldif"))
    return [f for f in files if is_schema_file(f)], [f for f in files if not is_schema_file(f)]


def _suffix_entry(suffix: str) -> str:
    """LDIF of a bare suffix entry for a ``dc=`` suffix."""
    rdn = suffix.split(",", 1)[0]
    attribute, _, value = rdn.partition("=")
    if attribute.strip().lower() != "dc":
        raise SlapdError(f"{suffix}: only a dc= suffix can be made up without a data file")
    return (
        f"dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
        f"dc: {value.strip()}\no: {value.strip()}\n"
    )


def _repository_slapd(syncprov: bool, tls: bool = False) -> Iterator[Slapd]:
    """Start a slapd from the repository's ldif/ in a short temporary directory; clean up after.

    With *tls* it gets the files of ``make_tls_files`` (``Slapd.tls``) and an ldaps:// port.
    """
    with short_directory("sl") as directory:
        schema_files, data_files = repository_ldif()
        if data_files:
            suffix = first_dn(data_files[0])
            if suffix is None:
                raise SlapdError(f"{data_files[0]}: no entry")
        else:
            suffix = DEFAULT_SUFFIX
            data_files = [directory / "suffix.ldif"]
            data_files[0].write_text(_suffix_entry(suffix), encoding="utf-8")
        tls_files = make_tls_files(directory / "tls") if tls else None
        with start_slapd(
            directory / "s", schema_files, data_files, suffix, syncprov, tls=tls_files
        ) as server:
            yield server


@pytest.fixture
def slapd() -> Iterator[Slapd]:
    """A slapd with the repository's schema and data and the syncprov overlay."""
    yield from _repository_slapd(syncprov=True)


@pytest.fixture
def slapd_no_syncprov() -> Iterator[Slapd]:
    """Like ``slapd`` but without syncprov: no contextCSN, for change detection without it."""
    yield from _repository_slapd(syncprov=False)


@pytest.fixture
def slapd_tls() -> Iterator[Slapd]:
    """Like ``slapd`` with StartTLS and ldaps:// (``ldaps_url``); clients trust ``tls.ca_cert``."""
    yield from _repository_slapd(syncprov=True, tls=True)
