"""What the console tests share: a node with its console, on the embedded directory or slapd.

The fixture ``console_node`` (registered in tests/conftest.py) runs each test on both.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.directories import as_adds
from tests.helpers import BASE, DEVICE, Served, config_dir, start_node, wait_until
from tests.slapd import Slapd

ADMIN_PASSWORD = "admin-password-1"
VIEWER_PASSWORD = "viewer-password-1"
ADMIN_GROUP = f"cn=console-admins,{BASE}"
VIEWER_GROUP = f"cn=console-viewers,{BASE}"


@dataclass
class ConsoleNode:
    """A running node, its console's URL and the names the two roles sign in with."""

    served: Served
    url: str
    admin: str
    viewer: str
    kind: str
    config: Path | None = None  # the LDIF folder (embedded directory)

    def client(self) -> httpx.Client:
        """A client of the console, signed in as nobody."""
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)

    def signed_in(self, admin: bool = True) -> tuple[httpx.Client, str]:
        """A client signed in as the admin (or the viewer) and its CSRF token."""
        client = self.client()
        name, password = (self.admin, ADMIN_PASSWORD) if admin else (self.viewer, VIEWER_PASSWORD)
        answer = client.post("/api/session", json={"name": name, "password": password})
        assert answer.status_code == 200, answer.text
        return client, str(answer.json()["csrf"])


def post_preview(
    client: httpx.Client, csrf: str, content: bytes, params: dict[str, str]
) -> httpx.Response:
    """Upload *content* to the Preview API (``calling``, ``called``, ``dimse``, ``role`` in
    *params*) as a signed-in client with its CSRF token, as the Preview page does."""
    return client.post(
        "/api/preview",
        params=params,
        content=content,
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"},
    )


def passwd(path: Path, name: str, role: str, password: str) -> None:
    """``coercion console passwd PATH NAME --role ROLE`` with *password* on stdin."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coercion",
            "console",
            "passwd",
            str(path),
            name,
            "--role",
            role,
            "--password-stdin",
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def console_url(served: Served) -> str:
    """The console's URL from the node's log (it prints it once it listens)."""

    def found() -> str:
        url = re.search(r"console on (https?://[\d.]+:\d+)/", served.text())
        if url is None and served.process.poll() is not None:
            raise AssertionError(f"the node exited:\n{served.text()}")
        return url[1] if url else ""

    return wait_until(found, "the console to start", 30.0, served.text, 0.05)


def embedded_node(tmp_path: Path, *extra: str, ldif: str = "") -> ConsoleNode:
    """A node on a copy of the default LDIF folder (and *ldif*); accounts in a password file."""
    folder = config_dir(tmp_path, ldif)
    accounts = tmp_path / "console.passwd"
    passwd(accounts, "admin", "admin", ADMIN_PASSWORD)
    passwd(accounts, "viewer", "viewer", VIEWER_PASSWORD)
    served = start_node(
        tmp_path,
        0,
        folder,
        "--http",
        "127.0.0.1:0",
        "--http-password-file",
        str(accounts),
        *extra,
    )
    return ConsoleNode(served, console_url(served), "admin", "viewer", "embedded", folder)


def slapd_node(server: Slapd, tmp_path: Path, *extra: str, ldif: str = "") -> ConsoleNode:
    """A node on a private slapd (*ldif* entries added); people sign in with their DN, roles
    from two groups."""
    admin, viewer = f"cn=alice,{BASE}", f"cn=bob,{BASE}"
    server.ldapmodify(
        f"dn: {admin}\nchangetype: add\nobjectClass: person\ncn: alice\nsn: A\n"
        f"userPassword: {ADMIN_PASSWORD}\n\n"
        f"dn: {viewer}\nchangetype: add\nobjectClass: person\ncn: bob\nsn: B\n"
        f"userPassword: {VIEWER_PASSWORD}\n\n"
        f"dn: {ADMIN_GROUP}\nchangetype: add\nobjectClass: groupOfNames\ncn: console-admins\n"
        f"member: {admin}\n\n"
        f"dn: {VIEWER_GROUP}\nchangetype: add\nobjectClass: groupOfNames\ncn: console-viewers\n"
        f"member: {viewer}\n"
    )
    server.ldapmodify(
        f"dn: {DEVICE}\nchangetype: modify\nadd: coercionStoreURL\n"
        f"coercionStoreURL: sqlite:///{tmp_path / 'store.db'}\n"
    )
    if ldif:
        server.ldapmodify(as_adds(ldif))
    password = tmp_path / "ldap.password"
    password.write_text(server.password, encoding="utf-8")
    served = start_node(
        tmp_path,
        0,
        None,
        "--ldap",
        server.url,
        "--bind-dn",
        server.admin_dn,
        "--password-file",
        str(password),
        "--poll-interval",
        "0.2",
        "--http",
        "127.0.0.1:0",
        "--http-admin-group",
        ADMIN_GROUP,
        "--http-viewer-group",
        VIEWER_GROUP,
        *extra,
    )
    return ConsoleNode(served, console_url(served), admin, viewer, "slapd")


def stop(node: ConsoleNode) -> None:
    """Stop the node (SIGTERM) and wait for it."""
    if node.served.process.poll() is None:
        node.served.process.terminate()
        node.served.process.wait(20)


#: Wait for a condition the console shows (a reload takes a poll interval or two).
wait_for = functools.partial(wait_until, timeout=20.0, interval=0.1)


def running(factory: Callable[[], ConsoleNode]) -> Iterator[ConsoleNode]:
    """Start a node with *factory*; stop it after the test."""
    node = factory()
    try:
        yield node
    finally:
        stop(node)


@pytest.fixture(params=["embedded", "slapd"])
def console_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsoleNode]:
    """A node with its console, on the embedded directory, then on a private slapd."""
    if request.param == "embedded":
        yield from running(lambda: embedded_node(tmp_path))
    else:
        server = request.getfixturevalue("slapd")
        yield from running(lambda: slapd_node(server, tmp_path))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, for the browser fixture's screenshot."""
    outcome: Any = yield
    setattr(item, f"report_{call.when}", outcome.get_result())
