"""The two directory backends the directory tests run on: embedded (LDIF files) and slapd."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from coercion.directory.sources import (
    DirectorySource,
    EmbeddedDirectory,
    LdapDirectory,
    LdapSettings,
)
from coercion.resources import default_ldif_dir
from tests.helpers import DEVICE
from tests.slapd import Slapd


@dataclass
class Directory:
    """One backend under test: how to open it, change an attribute and add entries (LDIF)."""

    kind: str
    open: Callable[[], DirectorySource]
    replace: Callable[[str, str, str], None]  # (dn, attribute, value)
    add: Callable[[str], None]
    slapd: Slapd | None = None


def embedded_directory(tmp_path: Path) -> Directory:
    """The default configuration as LDIF files, its store in *tmp_path*."""
    folder = tmp_path / "ldif"
    shutil.copytree(default_ldif_dir(), folder)
    store_in(folder, tmp_path / "store.db")
    added: list[Path] = []

    def replace(dn: str, attribute: str, value: str) -> None:
        for path in sorted(folder.glob("*.ldif")):
            text = path.read_text(encoding="utf-8")
            if f"dn: {dn}\n" not in text:
                continue
            out, inside = [], False
            for line in text.splitlines():
                if line.startswith("dn: "):
                    inside = line[4:] == dn
                replaced = inside and line.startswith(f"{attribute}: ")
                out.append(f"{attribute}: {value}" if replaced else line)
            path.write_text("\n".join(out) + "\n", encoding="utf-8")

    def add(ldif_text: str) -> None:
        path = folder / f"{20 + len(added)}-added.ldif"
        path.write_text(ldif_text, encoding="utf-8")
        added.append(path)

    return Directory("embedded", lambda: EmbeddedDirectory(folder), replace, add)


def ldap_directory(server: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Directory:
    """The default configuration on a private slapd, its store in *tmp_path*."""
    monkeypatch.setenv("COERCION_LDAP_PASSWORD", server.password)
    server.ldapmodify(
        f"dn: {DEVICE}\nchangetype: modify\nadd: coercionStoreURL\n"
        f"coercionStoreURL: sqlite:///{tmp_path / 'store.db'}\n"
    )

    def replace(dn: str, attribute: str, value: str) -> None:
        server.ldapmodify(
            f"dn: {dn}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n"
        )

    def add(ldif_text: str) -> None:
        server.ldapmodify(as_adds(ldif_text))

    settings = LdapSettings(server.url, server.admin_dn)
    return Directory("slapd", lambda: LdapDirectory(settings), replace, add, server)


def as_adds(ldif_text: str) -> str:
    """Content records as ``changetype: add`` records (after the DN and its folded lines)."""
    out: list[str] = []
    in_dn = False
    for line in ldif_text.splitlines():
        if in_dn and not line.startswith(" "):
            out.append("changetype: add")
            in_dn = False
        out.append(line)
        in_dn = in_dn or line.startswith("dn:")
    if in_dn:
        out.append("changetype: add")
    return "\n".join(out) + "\n"


def store_in(folder: Path, store: Path | str) -> None:
    """Point the node's pseudonym store (counters, fake values) at *store*.

    *store* is a SQLite file or a store URL.
    """
    url = f"sqlite:///{store}" if isinstance(store, Path) else store
    device = folder / "10-default-config.ldif"
    device.write_text(
        device.read_text(encoding="utf-8").replace(
            "coercionPollInterval: 2", f"coercionPollInterval: 2\ncoercionStoreURL: {url}"
        ),
        encoding="utf-8",
    )
